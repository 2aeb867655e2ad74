"""Rule pretrain_featcnn: pre-training of the FeatCNN on the training images of both
modalities, the library calls of `suits pretrain` (suits.cli.cmd_pretrain) in its order, with
the replication loss on the validation subjects' images; writes the model, its losses and the
weights of every validation step (scored by validate_pretrained.py).

The rolling checkpoint (models/checkpoints/, not a declared output, so it survives a failed
or killed job) is named by a hash of the settings and the input files' contents: a rerun
with the same inputs resumes from it, a changed one starts afresh. Removed on success."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import torch  # noqa: E402
from suits.cli import setup_logging  # noqa: E402
from suits.modelfile import save_model, save_snapshots  # noqa: E402
from suits.pretrain import initial_model, load_images, pretrain  # noqa: E402
from suits.validation import write_curve  # noqa: E402
from suitsbench import job  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
settings = {k: v for k, v in p.items() if k != "checkpoint_dir"}
crop = p.crop if p.crop is None or isinstance(p.crop, list) else [p.crop]
ckpt = job.checkpoint_path(
    p.checkpoint_dir,
    "featcnn_pretrained",
    settings,
    [*i.moving, *i.fixed, *i.val_moving, *i.val_fixed],
)
job.threads(snakemake, "train")  # noqa: F821
print(f"checkpoint: {ckpt} ({'resuming' if ckpt.exists() else 'new'})", flush=True)
setup_logging()
device = torch.device(job.device(p.device))
images = load_images([(p.moving_modality, list(i.moving)), (p.fixed_modality, list(i.fixed))])
model = initial_model((p.moving_modality, p.fixed_modality), int(p.downsample), int(p.seed), device)
val_images = None
if i.val_moving and i.val_fixed:
    val_images = load_images(
        [(p.moving_modality, list(i.val_moving)), (p.fixed_modality, list(i.val_fixed))]
    )
curve, snapshots = {}, []
_, losses = pretrain(
    model,
    images,
    int(p.iterations),
    lr=float(p.lr),
    radius=int(p.radius),
    dilation=int(p.dilation),
    seed=int(p.seed),
    checkpoint=str(ckpt),
    checkpoint_every=int(p.checkpoint_every),
    device=device,
    progress=True,
    crop=[int(c) for c in crop] if crop else None,
    val_images=val_images,
    validate_every=int(p.validate_every),
    curve=curve,
    snapshots=snapshots,
)
save_model(o.model, model)
write_curve(o.losses, losses, [], None, columns={"val_loss": curve.get("val_loss", [])})
save_snapshots(o.snapshots, snapshots)
ckpt.unlink(missing_ok=True)
