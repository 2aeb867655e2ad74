"""Rule register_initial: the identity field (affine alignment only) on the fixed grid."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import torch  # noqa: E402
from suits.io import load_volume, save_field  # noqa: E402

fixed, affine = load_volume(snakemake.input.fixed)  # noqa: F821
save_field(snakemake.output.field, torch.zeros((1, 3, *fixed.shape[-3:])), affine)  # noqa: F821
