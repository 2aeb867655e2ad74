"""Rule table2: Table 2 (mean Dice/HD95 per organ, mean, std, Wilcoxon p-values of SUITS
against each method, optionally Holm-corrected) as CSV, Markdown and LaTeX (suitsbench.table)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench.evaluate import read_metrics  # noqa: E402
from suitsbench.table import make_table2, write_table2  # noqa: E402

o, p = snakemake.output, snakemake.params  # noqa: F821
table = make_table2(
    read_metrics(snakemake.input),  # noqa: F821
    methods=dict(p.methods),
    organs=list(p.organs),
    reference=p.reference,
    test=p.test,
    std_over=p.std_over,
    correction=p.correction,
)
write_table2(table, o.csv, o.md, o.tex)
print(table.attrs)
