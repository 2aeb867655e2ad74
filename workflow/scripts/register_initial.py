"""Rule register_initial: the identity field (affine alignment only) on the fixed grid."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import numpy as np  # noqa: E402
from suits.io import read_volume, save_field  # noqa: E402

fixed, affine = read_volume(snakemake.input.fixed)  # noqa: F821
save_field(snakemake.output.field, np.zeros((1, 3, *fixed.shape), np.float32), affine)  # noqa: F821
