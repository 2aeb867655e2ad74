"""Rule train_suits: SUITS training (Algorithm 1) of the pre-trained FeatCNN on the training
pairs, the library calls of `suits train` (suits.cli.cmd_train) in its order, scored on the
validation pairs with the test-time registration settings (suits.validation); writes the model
and its learning curve (step 0: the pre-trained model, scored as validate_pretrained scores
it). Rolling checkpoint as in pretrain_featcnn.py (resumed after a failure)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import torch  # noqa: E402
from suits.cli import setup_logging  # noqa: E402
from suits.modelfile import load_model, save_model  # noqa: E402
from suits.pairs import load_pairs, read_pairs  # noqa: E402
from suits.train import train_suits  # noqa: E402
from suits.validation import validator_for, write_curve  # noqa: E402
from suitsbench import job  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
settings = {k: v for k, v in p.items() if k != "checkpoint_dir"}
ckpt = job.checkpoint_path(
    p.checkpoint_dir,
    "featcnn_suits",
    settings,
    [i.model, i.pairs, *i.images, i.val_pairs, *i.val_images],
)
job.threads(snakemake, "train")  # noqa: F821
print(f"checkpoint: {ckpt} ({'resuming' if ckpt.exists() else 'new'})", flush=True)
setup_logging()
device = torch.device(job.device(p.device))
rows = read_pairs(i.pairs)
model = load_model(i.model, device=device)
pairs = load_pairs(rows, i.pairs)
val_rows = read_pairs(i.val_pairs, allow_empty=True)
validate = validator_for(
    val_rows, i.val_pairs, p.validation, p.fixed_modality, p.moving_modality, device
)
if validate is None and p.select == "best":
    raise SystemExit(
        f"train_suits: suits.select is 'best' but {i.val_pairs} lists no validation "
        "pairs; set split.n_val >= 1 or suits.select: last"
    )
curve = []
_, losses = train_suits(
    model,
    pairs,
    steps=int(p.steps),
    batch=int(p.batch),
    lr=float(p.lr),
    lam=float(p.lam),
    k_max=int(p.k_max),
    k_min=int(p.k_min),
    grad_A=bool(p.grad_A),
    num_classes=int(p.num_classes),
    fixed_modality=str(p.fixed_modality),
    moving_modality=str(p.moving_modality),
    seed=int(p.seed),
    solver=str(p.solver),
    tol=float(p.tol),
    checkpoint=str(ckpt),
    checkpoint_every=int(p.checkpoint_every),
    device=device,
    progress=True,
    warp_space=str(p.warp_space),
    label_warp_space=str(p.label_warp_space),
    validate=validate,
    validate_every=int(p.validate_every),
    select=str(p.select),
    curve=curve,
)
save_model(o.model, model)
write_curve(o.curve, losses, curve, validate.initial() if validate else None)
ckpt.unlink(missing_ok=True)
