"""Rule register_voxelmorph: one forward pass of VoxelMorph-MIND for one test pair."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from baselines.voxelmorph_mind import register_files  # noqa: E402
from suitsbench import job  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
job.threads(snakemake, "register")  # noqa: F821
device = job.device(p.device)
register_files(i.model, i.fixed, i.moving, o.field, device=device)
