"""Rule affine_qc: the residual-translation check (suitsbench.affineqc) of every test and
validation pair, a few training pairs per training image and every image in the groupwise
mean space, written to affine/qc.tsv (suitsbench.qctable). A flagged pair or image gets a
warning in the log and on the console (affine.qc.on_failure: warn) or stops the workflow
with one line naming them and the fix (stop)."""
import sys

from suitsbench.job import start

start(snakemake)  # noqa: F821
log, console = sys.stdout, sys.__stderr__

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from suits.io import load_volume  # noqa: E402
from suitsbench import job  # noqa: E402
from suitsbench.affineqc import QCSettings, affine_qc  # noqa: E402
from suitsbench.qctable import failure_message, write_qc  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
job.threads(snakemake, "register")  # noqa: F821
settings = QCSettings(
    min_overlap=p.qc["min_overlap"], max_shift_mm=p.qc["max_shift_mm"], margin=p.qc["margin"]
)
images, affine = {}, None
for image_id, image_path, mask_path in zip(p.ids, i.images, i.masks):
    volume, affine = load_volume(image_path)
    mask = np.asarray(nib.load(mask_path).dataobj)
    images[image_id] = (volume.numpy().reshape(volume.shape[-3:]), mask)
rows = affine_qc(images, np.asarray(affine, float), dict(p.pairs), settings)
for r in rows:
    print(f"{r['kind']} {r['id']} ({r['role']}): {r['verdict']}, {r['reason']}")
stop = p.qc["on_failure"] == "stop"
# stop: the failed job's output is removed, so its log (the rows above) holds the details
where = f"affine QC ({snakemake.log[0] if stop else o[0]})"  # noqa: F821
message = failure_message(rows, where, stop=stop)
if message is None:
    print(f"affine QC: all {len(p.pairs)} pairs and {len(p.ids)} images ok")
elif stop:
    for stream in (log, console):
        print(message, file=stream, flush=True)
    sys.exit(1)
else:
    for stream in (log, console):
        print(f"WARNING: {message}", file=stream, flush=True)
write_qc(o[0], rows)
