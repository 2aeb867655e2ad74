"""Rule example_figure: Fig. 2, one test pair before and after registration with organ
contours (suitsbench.plots.example_figure)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import torch  # noqa: E402
from suits.io import load_field, load_labels, load_volume  # noqa: E402
from suits.warp import warp, warp_labels  # noqa: E402
from suitsbench.evaluate import spacing_from_affine  # noqa: E402
from suitsbench.plots import example_figure  # noqa: E402

i, p = snakemake.input, snakemake.params  # noqa: F821
organs = {int(k): v for k, v in p.organs.items()}
fixed, affine = load_volume(i.fixed)
moving, _ = load_volume(i.moving)
fixed_labels, _ = load_labels(i.fixed_label)
moving_labels, _ = load_labels(i.moving_label)
u, _ = load_field(i.field)
with torch.no_grad():
    warped = warp(moving, u)
    warped_labels = warp_labels(moving_labels, u, max(organs) + 1).argmax(1)
example_figure(
    fixed,
    moving,
    warped,
    fixed_labels,
    moving_labels,
    warped_labels,
    out_png=snakemake.output[0],  # noqa: F821
    organs=organs,
    spacing=spacing_from_affine(affine),
)
print(f"Fig. 2: {p.pair} with {p.method}")
