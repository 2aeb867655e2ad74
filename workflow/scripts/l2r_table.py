"""Rule l2r_table: the Learn2Reg-style summary (DSC, DSC30, HD95, HD95_30, SDlogJ, folding,
runtime per pair) and the challenge's significance ranking of the methods (suitsbench.l2r)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench.evaluate import read_metrics  # noqa: E402
from suitsbench.l2r import make_l2r_table, pair_runtimes, write_l2r_table  # noqa: E402

o, p = snakemake.output, snakemake.params  # noqa: F821
table = make_l2r_table(
    read_metrics(snakemake.input.metrics),  # noqa: F821
    pair_runtimes(p.runtime_files),
    methods=list(p.methods),
    organs=list(p.organs),
)
write_l2r_table(table, o.csv, o.md)
print(table.to_string())
