"""Rule validate_pretrained: the validation Dice of the pre-trained FeatCNN at every
validation step of its pre-training (the weights pretrain_featcnn.py kept), scored on the
aligned validation pairs with the test-time registration settings (suits.validation); writes
the pre-training's learning curve (losses, replication loss and Dice)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import torch  # noqa: E402
from suits.cli import setup_logging  # noqa: E402
from suits.modelfile import load_model, load_snapshots  # noqa: E402
from suits.pairs import read_pairs  # noqa: E402
from suits.validation import read_curve, validator_for, write_curve  # noqa: E402
from suitsbench import job  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
job.threads(snakemake, "train")  # noqa: F821
setup_logging()
device = torch.device(job.device(p.device))
losses, columns = read_curve(i.losses)
model = load_model(i.model, device=device)
validate = validator_for(
    read_pairs(i.val_pairs, allow_empty=True),
    i.val_pairs,
    p.validation,
    p.fixed_modality,
    p.moving_modality,
    device,
)
dice = []
if validate is not None:
    for step, state in load_snapshots(i.snapshots, device):
        model.load_state_dict(state)
        dice.append((step, float(validate(model))))
        print(f"pre-training step {step}: validation Dice {dice[-1][1]:.4f}", flush=True)
write_curve(
    o.curve,
    losses,
    dice,
    validate.initial() if validate else None,
    columns={k: v for k, v in columns.items() if k == "val_loss"},
)
