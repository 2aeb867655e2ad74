"""Rule boxplot: Fig. 3 (Dice) / Fig. 4 (HD95) box plots per organ and for the mean."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench.evaluate import read_metrics  # noqa: E402
from suitsbench.plots import boxplot  # noqa: E402

o, p = snakemake.output, snakemake.params  # noqa: F821
boxplot(
    read_metrics(snakemake.input),  # noqa: F821
    metric=snakemake.wildcards.metric,  # noqa: F821
    methods=dict(p.methods),
    organs=list(p.organs),
    out_png=o.png,
    out_pdf=o.pdf,
)
