"""Rule phantom: write the synthetic CT/MR data set and its manifest (suitsbench.phantom)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from pathlib import Path  # noqa: E402
from suitsbench.phantom import generate  # noqa: E402

p = snakemake.params  # noqa: F821
generate(
    Path(snakemake.output.manifest).parent,  # noqa: F821
    n_per_modality=p.n_per_modality,
    shape=tuple(p.shape),
    spacing=p.spacing,
    seed=p.seed,
    modalities=tuple(p.modalities),
    deform_scale=p.deform_scale,
    fat_planes=p.fat_planes,
    mr_bias=p.mr_bias,
)
