"""Rule affine_resample: an image (trilinear), its label map and its field-of-view mask
(nearest; 0 outside the source grid) in the groupwise mean space, on its reference grid
(suitsbench.groupwise.resample_to_space: numpy and scipy, no torch)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import nibabel as nib  # noqa: E402
from suits.io import read_labels, read_volume, save_labels, save_volume  # noqa: E402
from suitsbench.groupwise import load_transform, resample_to_space  # noqa: E402

i, o = snakemake.input, snakemake.output  # noqa: F821
T = load_transform(i.transform)
ref = nib.load(i.reference)
image, affine = read_volume(i.image)
labels, label_affine = read_labels(i.label)
fov, fov_affine = read_labels(i.fov)
save_volume(o.image, resample_to_space(image, affine, T, ref.affine, ref.shape, order=1), ref.affine)
save_labels(
    o.label, resample_to_space(labels, label_affine, T, ref.affine, ref.shape, order=0), ref.affine
)
save_labels(
    o.fov, resample_to_space(fov, fov_affine, T, ref.affine, ref.shape, order=0, cval=0), ref.affine
)
