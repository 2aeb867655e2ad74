"""Rule register_voxelmorph: one forward pass of VoxelMorph-MIND for one test pair."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import torch  # noqa: E402
from baselines.voxelmorph_mind import register_files  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
# torch/elastix threads from the config (resources.register.threads) or more: snakemake lowers
# a job's threads to --cores, and the numbers depend on the thread count
threads = max(snakemake.threads, snakemake.config["resources"]["register"]["threads"])  # noqa: F821
torch.set_num_threads(threads)
device = p.device
if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"
register_files(i.model, i.fixed, i.moving, o.field, device=device)
