"""Rule learning_curves: one panel per trainer's curve TSV (pre-training, SUITS, VoxelMorph)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench.curves import learning_curves_figure  # noqa: E402

o = snakemake.output  # noqa: F821
learning_curves_figure(
    {k: v for k, v in snakemake.input.items()},  # noqa: F821
    out_png=o.png,
    out_pdf=o.pdf,
    title=snakemake.wildcards.fdir,  # noqa: F821
)
