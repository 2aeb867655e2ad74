"""Rule validate: check the manifest, every image and label, the config and the split
(suitsbench.validate) before anything expensive; write the split of every fold and the
training-pair lists. On bad input: one line naming the file or key and the fix, exit 1."""
import csv
import io
import json
import os
import sys

from suitsbench.job import start  # noqa: E402

start(snakemake)  # noqa: F821
log, console = sys.stdout, sys.__stderr__

from suits.atomic import write_text  # noqa: E402
from suitsbench.errors import InputError  # noqa: E402
from suitsbench.pairid import split_pair_id  # noqa: E402
from suitsbench.validate import validate_config  # noqa: E402


def fail(message):
    # one line per problem (suitsbench.errors.InputErrors lists every bad file of a run)
    for stream in (log, console):
        for line in str(message).splitlines():
            print(f"validate: {line}", file=stream, flush=True)
    sys.exit(1)


p = snakemake.params  # noqa: F821
splits = {}
try:
    for fold, fdir in enumerate(p.fold_dirs):
        # read every file once (first fold); the other folds only re-split
        _, split = validate_config(
            p.config, manifest=snakemake.input.manifest, fold=fold, read_files=fold == 0  # noqa: F821
        )
        splits[fdir] = vars(split)
except InputError as e:
    fail(str(e))
for fdir, split in splits.items():
    if split != p.expected[fdir]:
        fail(
            f"{snakemake.input.manifest}: the split derived from the files differs from the "  # noqa: F821
            f"one the workflow was planned with ({fdir}); run snakemake again"
        )


def write_pairs(out, pairs):
    """The pairs file read by the training jobs (suits.pairs): aligned images, labels and
    field-of-view masks, paths relative to it."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(
        ["fixed_image", "moving_image", "fixed_labels", "moving_labels"]
        + ["fixed_fov", "moving_fov"]
    )
    for pair in pairs:
        moving_id, fixed_id = split_pair_id(pair)
        row = [
            p.aligned[fixed_id]["image"],
            p.aligned[moving_id]["image"],
            p.aligned[fixed_id]["label"],
            p.aligned[moving_id]["label"],
            p.aligned[fixed_id]["fov"],
            p.aligned[moving_id]["fov"],
        ]
        w.writerow([os.path.relpath(f, os.path.dirname(out)) for f in row])
    write_text(out, buf.getvalue())


for fdir, train_out, val_out in zip(
    p.fold_dirs, snakemake.output.train_pairs, snakemake.output.val_pairs  # noqa: F821
):
    write_pairs(train_out, splits[fdir]["train_pairs"])
    write_pairs(val_out, splits[fdir]["val_pairs"])
write_text(
    snakemake.output.split, json.dumps(splits, indent=2, sort_keys=True) + "\n"  # noqa: F821
)
print(f"validated {snakemake.input.manifest}: {json.dumps(splits)}")  # noqa: F821
