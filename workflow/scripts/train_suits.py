"""Rule train_suits: `suits train` (Algorithm 1) from the pre-trained FeatCNN on the
training pairs. Rolling checkpoint as in pretrain_featcnn.py (resumed after a failure)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import sys  # noqa: E402
from suits.cli import main  # noqa: E402
from suitsbench.job import checkpoint_path, threads  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
settings = {k: v for k, v in p.items() if k != "checkpoint_dir"}
ckpt = checkpoint_path(p.checkpoint_dir, "featcnn_suits", settings, [i.model, i.pairs, *i.images])
n_threads = threads(snakemake, "train")  # noqa: F821
argv = [
    "train",
    "--pairs", i.pairs,
    "--model", i.model,
    "--out", o.model,
    "--steps", p.steps,
    "--batch", p.batch,
    "--lr", p.lr,
    "--lam", p.lam,
    "--k-max", p.k_max,
    "--num-classes", p.num_classes,
    "--fixed-modality", p.fixed_modality,
    "--moving-modality", p.moving_modality,
    "--solver", p.solver,
    "--tol", p.tol,
    "--seed", p.seed,
    "--checkpoint", ckpt,
    "--checkpoint-every", p.checkpoint_every,
    "--warp-space", p.warp_space,
    "--label-warp-space", p.label_warp_space,
    "--device", p.device,
    "--threads", n_threads,
]  # fmt: skip
print(f"checkpoint: {ckpt} ({'resuming' if ckpt.exists() else 'new'})", flush=True)
status = main([str(a) for a in argv])
if status:
    sys.exit(status)
ckpt.unlink(missing_ok=True)
