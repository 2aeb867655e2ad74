"""Rule train_voxelmorph: VoxelMorph-MIND on the training pairs (baselines.voxelmorph_mind),
validated on the validation pairs (its loss, and the Dice of the labels warped by its field);
writes the model and its learning curve. Rolling checkpoint as in pretrain_featcnn.py
(resumed after a failure)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import logging  # noqa: E402

# library messages (e.g. "resuming VoxelMorph-MIND from step N") go to the log, as with `suits`
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

from baselines import voxelmorph_mind as vxm  # noqa: E402
from suits.io import load_volume  # noqa: E402
from suits.pairs import load_pairs, read_pairs  # noqa: E402
from suits.validation import Validator, write_curve  # noqa: E402
from suitsbench import job  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
job.threads(snakemake, "train")  # noqa: F821
device = job.device(p.device)


settings = {k: v for k, v in p.items() if k != "checkpoint_dir"}
ckpt = job.checkpoint_path(
    p.checkpoint_dir,
    "voxelmorph",
    settings,
    [i.pairs, *i.images, i.val_pairs, *i.val_images],
)
print(f"checkpoint: {ckpt} ({'resuming' if ckpt.exists() else 'new'})", flush=True)
rows = read_pairs(i.pairs)
pairs = [(load_volume(r["fixed_image"])[0], load_volume(r["moving_image"])[0]) for r in rows]
# field-of-view masks, when the pairs file has them, weight the MIND term
masks = [
    tuple(load_volume(r[c])[0] if c in r else None for c in ("fixed_fov", "moving_fov"))
    for r in rows
]
val_rows = read_pairs(i.val_pairs, allow_empty=True)
val_pairs = load_pairs(val_rows, i.val_pairs) if val_rows else None
curve = {}
model = vxm.train(
    pairs,
    p.iterations,
    lr=p.lr,
    reg_weight=p.reg_weight,
    mind_radius=p.mind_radius,
    mind_dilation=p.mind_dilation,
    seed=p.seed,
    checkpoint=ckpt,
    checkpoint_every=p.checkpoint_every,
    device=device,
    val_pairs=val_pairs,
    validate_every=p.validate_every,
    curve=curve,
    masks=masks,
)
vxm.save_model(o.model, model, iterations=p.iterations, seed=p.seed, losses=model.losses)
write_curve(
    o.curve,
    model.losses,
    curve.get("val_dice", []),
    Validator(val_pairs).initial() if val_pairs else None,
    columns={"val_loss": curve.get("val_loss", [])},
)
ckpt.unlink(missing_ok=True)
