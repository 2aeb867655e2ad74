"""Rule pretrain_featcnn: pre-training of the FeatCNN on the training images of both
modalities, the library calls of `suits pretrain` (suits.cli.cmd_pretrain) in its order,
validated on the validation pairs (replication loss on their images, validation Dice with the
test-time registration settings, suits.validation); writes the model and its learning curve.

The rolling checkpoint (models/checkpoints/, not a declared output, so it survives a failed
or killed job) is named by a hash of the settings and the input files' contents: a rerun
with the same inputs resumes from it, a changed one starts afresh. Removed on success."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import torch  # noqa: E402
from suits.cli import setup_logging  # noqa: E402
from suits.modelfile import save_model  # noqa: E402
from suits.pairs import read_pairs  # noqa: E402
from suits.pretrain import initial_model, load_images, pretrain  # noqa: E402
from suits.validation import validator_for, write_curve  # noqa: E402
from suitsbench import job  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
settings = {k: v for k, v in p.items() if k != "checkpoint_dir"}
crop = p.crop if p.crop is None or isinstance(p.crop, list) else [p.crop]
ckpt = job.checkpoint_path(
    p.checkpoint_dir,
    "featcnn_pretrained",
    settings,
    [*i.moving, *i.fixed, i.val_pairs, *i.val_images],
)
job.threads(snakemake, "train")  # noqa: F821
print(f"checkpoint: {ckpt} ({'resuming' if ckpt.exists() else 'new'})", flush=True)
setup_logging()
device = torch.device(job.device(p.device))
images = load_images([(p.moving_modality, list(i.moving)), (p.fixed_modality, list(i.fixed))])
model = initial_model((p.moving_modality, p.fixed_modality), int(p.downsample), int(p.seed), device)
val_rows = read_pairs(i.val_pairs, allow_empty=True)
val_images, validate = None, None
if val_rows:
    # every validation subject once: the moving images of the moving modality, the fixed ones
    val_images = load_images(
        [
            (p.moving_modality, list(dict.fromkeys(r["moving_image"] for r in val_rows))),
            (p.fixed_modality, list(dict.fromkeys(r["fixed_image"] for r in val_rows))),
        ]
    )
    validate = validator_for(
        val_rows, i.val_pairs, p.validation, p.fixed_modality, p.moving_modality, device
    )
curve = {}
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
    validate=validate,
    validate_every=int(p.validate_every),
    curve=curve,
)
save_model(o.model, model)
write_curve(
    o.curve,
    losses,
    curve.get("val_dice", []),
    validate.initial() if validate else None,
    columns={"val_loss": curve.get("val_loss", [])},
)
ckpt.unlink(missing_ok=True)
