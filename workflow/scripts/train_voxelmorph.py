"""Rule train_voxelmorph: VoxelMorph-MIND on the training pairs (baselines.voxelmorph_mind).
Rolling checkpoint as in pretrain_featcnn.py (resumed after a failure)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

# library messages (e.g. "resuming VoxelMorph-MIND from step N") go to the log, as with `suits`
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

import torch  # noqa: E402
from baselines import voxelmorph_mind as vxm  # noqa: E402
from suits.pairs import read_pairs  # noqa: E402
from suits.io import load_volume  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
# torch/elastix threads from the config (resources.train.threads) or more: snakemake lowers
# a job's threads to --cores, and the numbers depend on the thread count
threads = max(snakemake.threads, snakemake.config["resources"]["train"]["threads"])  # noqa: F821
torch.set_num_threads(threads)
device = p.device
if device == "auto":
    device = "cuda" if torch.cuda.is_available() else "cpu"


def checkpoint_path(name, settings, files):
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for f in files:
        h.update(Path(f).read_bytes())
    folder = Path(p.checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{h.hexdigest()[:16]}.pt"


settings = {k: v for k, v in p.items() if k != "checkpoint_dir"}
ckpt = checkpoint_path("voxelmorph", settings, [i.pairs, *i.images])
print(f"checkpoint: {ckpt} ({'resuming' if ckpt.exists() else 'new'})", flush=True)
pairs = [
    (load_volume(row["fixed_image"])[0], load_volume(row["moving_image"])[0])
    for row in read_pairs(i.pairs)
]
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
)
vxm.save_model(o.model, model, iterations=p.iterations, seed=p.seed, losses=model.losses)
ckpt.unlink(missing_ok=True)
