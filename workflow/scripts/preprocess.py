"""Rule preprocess: one image (and its labels) to RAS+, the isotropic grid and shape,
z-normalised, labels as organ indices, and its field-of-view mask (1 = scanned, 0 = padding)
(suitsbench.preprocess.preprocess_case)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench.preprocess import preprocess_case  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
preprocess_case(
    i.image,
    getattr(i, "label", None),
    o.image,
    o.label,
    labels_map=p.labels,
    evaluate=p.evaluate,
    spacing=p.spacing,
    shape=tuple(p.shape),
    normalise=p.normalise,
    reference=getattr(i, "reference", None),
    out_fov=o.fov,
    max_label_crop=p.max_label_crop,
)
