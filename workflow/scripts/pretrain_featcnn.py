"""Rule pretrain_featcnn: `suits pretrain` on the training images of both modalities.

The rolling checkpoint (models/checkpoints/, not a declared output, so it survives a failed
or killed job) is named by a hash of the settings and the input files' contents: a rerun
with the same inputs resumes from it, a changed one starts afresh. Removed on success."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import sys  # noqa: E402
from suits.cli import main  # noqa: E402
from suitsbench.job import checkpoint_path, threads  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
settings = {k: v for k, v in p.items() if k != "checkpoint_dir"}
crop = p.crop if p.crop is None or isinstance(p.crop, list) else [p.crop]
ckpt = checkpoint_path(p.checkpoint_dir, "featcnn_pretrained", settings, [*i.moving, *i.fixed])
n_threads = threads(snakemake, "train")  # noqa: F821
argv = [
    "pretrain",
    "--images", p.moving_modality, *i.moving,
    "--images", p.fixed_modality, *i.fixed,
    "--modalities", p.moving_modality, p.fixed_modality,
    "--out", o.model,
    "--downsample", p.downsample,
    "--iterations", p.iterations,
    "--lr", p.lr,
    "--radius", p.radius,
    "--dilation", p.dilation,
    "--seed", p.seed,
    "--checkpoint", ckpt,
    "--checkpoint-every", p.checkpoint_every,
    "--device", p.device,
    "--threads", n_threads,
    *(["--crop", *crop] if crop else []),
]  # fmt: skip
print(f"checkpoint: {ckpt} ({'resuming' if ckpt.exists() else 'new'})", flush=True)
status = main([str(a) for a in argv])
if status:
    sys.exit(status)
ckpt.unlink(missing_ok=True)
