"""Generate a phantom variant and a config that runs the workflow on it (the phantom-difficulty probes
in ``docs/method-choices.md``). The variant's images are another data set (a manifest):
nothing in the embedded default changes. Unset options take the copied config's
``data.phantom`` values (the embedded default: ``deform_scale`` 3, fat planes, ``mr_bias``
0.25); ``--deform-scale 1 --no-fat-planes`` is the milder phantom of the first releases. (A
run of the workflow itself can set the same keys under ``data.phantom``.)

Scans as real ones come (``suitsbench.phantom.generate``; ``benchmarks/bench_fov.py`` runs
them all): ``--mr-slab N`` writes the first N MR scans as axial slabs (15-30 slices at a
random height, the header 60-100 mm off the CT's centre; seeded), ``--orientation LPS``
and ``--spacing 0.8 0.8 5`` change the stored voxel order and spacing (the same anatomy,
resampled content) of the ``--grid-modality`` scans, ``--ct-padding -1024`` fills the CT
outside a cylindrical scan field of view with that value.

    .venv/bin/python benchmarks/phantom_variant.py /tmp/hard --deform-scale 3 --fat-planes \\
        --mr-bias 0 --dataset hard_fat_nobias
    .venv/bin/snakemake --cores 2 --configfile /tmp/hard/config.yaml --until affine_resample
    .venv/bin/python benchmarks/baseline_trials.py elastix results/hard_fat_nobias \\
        '{"Metric1Weight": 3000}' '{"Metric1Weight": 300}' '{"Metric1Weight": 30}'
    .venv/bin/python benchmarks/baseline_trials.py warp-space results/hard_fat_nobias --lam 2
"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from suits.atomic import write_text
from suitsbench import phantom

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="directory for the images, manifest.tsv and config.yaml")
    ap.add_argument("--dataset", required=True, help="results/<dataset>/ of the workflow run")
    ap.add_argument("--deform-scale", type=float, default=None, help="non-rigid deformation x this")
    ap.add_argument("--fat-planes", action=argparse.BooleanOptionalAction, default=None,
                    help="fat around psoas, liver, spleen")
    ap.add_argument("--mr-bias", type=float, default=None, help="MR bias-field amplitude (0: none)")
    ap.add_argument("--n-per-modality", type=int, default=None,
                    help="patients per modality (default: the config's)")
    ap.add_argument("--mr-slab", type=int, default=0, metavar="N",
                    help="the first N MR scans become axial slabs of 15-30 slices")
    ap.add_argument("--orientation", default="RAS",
                    help="stored voxel order of the --grid-modality scans, e.g. LPS, LAS")
    ap.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                    help="stored spacing (mm, RAS axes) of the --grid-modality scans")
    ap.add_argument("--grid-modality", choices=["mr", "ct", "all"], default="mr",
                    help="which scans --orientation and --spacing apply to")
    ap.add_argument("--ct-padding", type=float, default=None,
                    help="CT value outside a cylindrical scan field of view (-1024, -3024)")
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml",
                    help="config to copy (default: the embedded default's)")
    args = ap.parse_args()

    cfg = yaml.safe_load(args.config.read_text())
    ph = cfg["data"]["phantom"]
    # the config's value, overridden by the option; neither: generate()'s default (= the schema's)
    variant = {}
    for key in ("deform_scale", "fat_planes", "mr_bias"):
        value = getattr(args, key) if getattr(args, key) is not None else ph.get(key)
        if value is not None:
            variant[key] = value
    n = ph["n_per_modality"] if args.n_per_modality is None else args.n_per_modality
    manifest = phantom.generate(
        args.out, n_per_modality=n, shape=ph["shape"], spacing=ph["spacing"], seed=cfg["seed"],
        orientation=args.orientation, write_spacing=args.spacing,
        grid_modalities=None if args.grid_modality == "all" else (args.grid_modality,),
        mr_slab=args.mr_slab, ct_padding=args.ct_padding, **variant)
    cfg["dataset"] = args.dataset
    cfg["data"].update(source="manifest", manifest=str(manifest.resolve()))
    write_text(args.out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    print(f"{manifest}\n{args.out / 'config.yaml'}")


if __name__ == "__main__":
    main()
