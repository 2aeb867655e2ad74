"""Rule evaluate: Dice, HD95 and Jacobian statistics of one method on every test pair of a
fold (suitsbench.evaluate: one evaluator for all methods), with the fraction of each fixed
structure that the moving scan's field of view does not cover."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench.evaluate import evaluate_method, write_metrics  # noqa: E402
from suitsbench.pairid import split_pair_id  # noqa: E402

w, p = snakemake.wildcards, snakemake.params  # noqa: F821
rows = evaluate_method(
    w.method,
    p.pairs,
    field_path_for=lambda pair: f"{w.fdir}/fields/{w.method}/{pair}.nii.gz",
    fixed_label_path=lambda pair: p.labels[split_pair_id(pair)[1]],
    moving_label_path=lambda pair: p.labels[split_pair_id(pair)[0]],
    organs={int(k): v for k, v in p.organs.items()},
    hd95_empty=p.hd95_empty,
    hd95_reduction=p.hd95_reduction,
    moving_fov_path=lambda pair: p.fovs[split_pair_id(pair)[0]],
)
write_metrics([{**r, "fold": p.fold} for r in rows], snakemake.output[0])  # noqa: F821
