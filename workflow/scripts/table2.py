"""Rule table2: Table 2 (mean Dice/HD95 per organ, mean, std, Wilcoxon p-values of SUITS
against each method, optionally Holm-corrected) as CSV, Markdown and LaTeX (suitsbench.table);
the caption names the test pairs and images the affine QC flags (suitsbench.qctable)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench.qctable import read_qc, table_note  # noqa: E402
from suitsbench.evaluate import read_metrics  # noqa: E402
from suitsbench.table import make_table2, write_table2  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
table = make_table2(
    read_metrics(i.metrics),
    methods=dict(p.methods),
    organs=list(p.organs),
    reference=p.reference,
    test=p.test,
    std_over=p.std_over,
    correction=p.correction,
)
for qc in i.affine_qc:
    note = table_note(read_qc(qc), p.test_pairs, "affine/qc.tsv")
    if note is not None:
        table.attrs["qc"] = note
write_table2(table, o.csv, o.md, o.tex)
print(table.attrs)
