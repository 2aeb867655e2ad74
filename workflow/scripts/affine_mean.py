"""Rule affine_mean: every image's transform into the unbiased groupwise mean space
(log-Euclidean mean of the symmetrised pairwise transforms to the images whose field of
view covers at least affine.template_fov of the largest, suitsbench.groupwise) and the
reference grid of that space (the preprocessed grid, centred on the group's anatomy). The
field-of-view masks are preprocessing's prep/{id}_fov.nii.gz."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from suits.io import save_labels  # noqa: E402
from suitsbench.groupwise import (  # noqa: E402
    groupwise_mean,
    load_fov_masks,
    load_row,
    mean_space_grid,
    rows_to_pairs,
    save_transform,
)

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
rows = {}
for f in i.rows:
    rows.update(load_row(f))
masks = load_fov_masks(dict(zip(p.ids, i.masks)))
M = groupwise_mean(
    rows_to_pairs(rows), p.ids, masks=masks, template_fov=float(p.template_fov)
)
for image_id, out in zip(p.ids, o.transforms):
    save_transform(out, M[image_id], comment=f"{image_id} -> groupwise mean space")
headers = [nib.load(f) for f in i.images]
ref_affine, ref_shape = mean_space_grid(
    [h.affine for h in headers], [h.shape for h in headers], [M[k] for k in p.ids]
)
save_labels(o.reference, np.zeros(ref_shape, np.uint8), ref_affine)
