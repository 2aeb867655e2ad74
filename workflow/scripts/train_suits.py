"""Rule train_suits: SUITS training (Algorithm 1) of the pre-trained FeatCNN on the training
pairs, the library calls of `suits train` (suits.cli.cmd_train) in its order. Rolling
checkpoint as in pretrain_featcnn.py (resumed after a failure)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import torch  # noqa: E402
from suits.cli import setup_logging  # noqa: E402
from suits.modelfile import load_model, save_model  # noqa: E402
from suits.pairs import load_pairs, read_pairs  # noqa: E402
from suits.train import train_suits  # noqa: E402
from suitsbench import job  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
settings = {k: v for k, v in p.items() if k != "checkpoint_dir"}
ckpt = job.checkpoint_path(p.checkpoint_dir, "featcnn_suits", settings, [i.model, i.pairs, *i.images])
job.threads(snakemake, "train")  # noqa: F821
print(f"checkpoint: {ckpt} ({'resuming' if ckpt.exists() else 'new'})", flush=True)
setup_logging()
device = torch.device(job.device(p.device))
rows = read_pairs(i.pairs)
model = load_model(i.model, device=device)
pairs = load_pairs(rows, i.pairs)
train_suits(
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
)
save_model(o.model, model)
ckpt.unlink(missing_ok=True)
