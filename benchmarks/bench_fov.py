"""The affine stage on phantom scans as real ones come: partial fields of view, other voxel
orders and spacings, CT padding (``suitsbench.phantom.generate``'s variants).

For each variant the phantom is generated (the embedded default's anatomy: seed 0,
deformation x 3, fat planes, MR bias 0.25; ``--n`` patients per modality), preprocessed
(``suitsbench.preprocess.preprocess_arrays``, the default's 2 mm grid of 80 x 64 x 64 with
field-of-view masks), registered pairwise in both directions
(``suitsbench.groupwise.pairwise_row``, ``affine.levels`` [4, 2], ``affine.init`` search,
``affine.init_starts`` 3 unless ``--starts``),
put into the groupwise mean space (``groupwise_mean`` with the config's defaults) and
resampled (``--directions one``: from the transforms of the pairs ``affine.directions: one``
registers, taken from the same registrations): the library calls of the workflow's
``preprocess``, ``affine_pairwise``,
``affine_mean`` and ``affine_resample`` rules, without the other jobs of a workflow run.

Printed: the initial (affine-only) mean organ Dice per variant over all CT (moving) x MR
(fixed) pairs, counted where both scans have data (both aligned field-of-view masks; organs
absent from both are left out), its standard deviation over the pairs and the time. With
both ``full`` and ``slab`` asked for, a row ``full, slab region`` scores the full-field-of-view
alignment only where the slab variant's MR scans have data (the same patients and the same
slab heights): the Dice a perfect slab alignment would reach, since a slab shows only a
part of each organ and that part is harder to overlap than a whole organ.

Variants: ``full`` (the default's scans), ``slab`` (every MR an axial slab of 15-30 slices,
the header 60-100 mm off), ``lps`` / ``las`` (the MR stored in that voxel order),
``aniso`` (the MR stored at 0.8 x 0.8 x 5 mm), ``pad1024`` / ``pad3024`` (the CT padded
with -1024 / -3024 outside a cylindrical scan field of view).

Usage::

    nice -n 19 .venv/bin/python benchmarks/bench_fov.py [--n 4] [--variants slab full ...]
        [--margin 0.1] [--starts 3] [--template-fov 0 0.75] [--directions both one] [--seed 0]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from suits.tuning import tune_process

tune_process()  # an entry point: tune this process before torch loads

from suitsbench import phantom  # noqa: E402
from suitsbench.affine import AffineSettings  # noqa: E402
from suitsbench.groupwise import (groupwise_mean, mean_space_grid, pairwise_row,  # noqa: E402
                                  resample_to_space, rows_to_pairs)
from suitsbench.manifest import read_manifest  # noqa: E402
from suitsbench.metrics import dice  # noqa: E402
from suitsbench.pairwise_plan import DIRECTIONS, partners  # noqa: E402
from suitsbench.preprocess import preprocess_arrays  # noqa: E402
from suitsbench.validate import read_nifti  # noqa: E402

VARIANTS = {
    "full": {},
    "slab": {"mr_slab": 10 ** 6},
    "lps": {"orientation": "LPS", "grid_modalities": ("mr",)},
    "las": {"orientation": "LAS", "grid_modalities": ("mr",)},
    "aniso": {"write_spacing": (0.8, 0.8, 5.0), "grid_modalities": ("mr",)},
    "pad1024": {"ct_padding": -1024.0},
    "pad3024": {"ct_padding": -3024.0},
}
DEFAULT = dict(shape=(80, 64, 64), spacing=2.0, seed=0, deform_scale=3.0, fat_planes=True,
               mr_bias=0.25)
LABELS = dict(phantom.LABELS)


def slab_regions(cases: dict, n: int, seed: int = DEFAULT["seed"]) -> dict[str, np.ndarray]:
    """Per MR case of the ``full`` variant, the voxels of its preprocessed grid that the
    ``slab`` variant's scan of the same patient shows (world heights of the slab drawn by
    ``phantom.generate``, the same random draws)."""
    spacing = float(DEFAULT["spacing"])
    half_height = 0.5 * DEFAULT["shape"][2] * spacing
    out = {}
    for k in range(n):
        subject = n + k                                  # the MR patients follow the CT ones
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), subject, 0x51AB]))
        slices, height, _ = phantom.draw_slab(rng, half_height)
        key = f"p{subject:03d}_mr"
        image, affine = cases[key][0], cases[key][1]
        idx = np.indices(image.shape, dtype=float).reshape(3, -1)
        z = (affine[2, :3] @ idx + affine[2, 3]).reshape(image.shape)
        out[key] = np.abs(z - height) <= 0.5 * slices * spacing
    return out


def prepare(out: Path, n: int, variant: dict) -> dict[str, tuple]:
    """Generate and preprocess one variant: ``{id: (image, affine, label, fov)}``."""
    manifest = phantom.generate(out, n_per_modality=n, **DEFAULT, **variant)
    cases = {}
    for rec in read_manifest(manifest):
        img, aff = read_nifti(rec.image)
        lab, _ = read_nifti(rec.label)
        p = preprocess_arrays(img, aff, np.asarray(lab), labels_map=LABELS,
                              spacing=2.0, shape=DEFAULT["shape"], where=str(rec.image))
        cases[f"{rec.subject}_{rec.modality}"] = (p.image, p.affine, p.label, p.fov)
    return cases


def pairwise_rows(cases: dict, settings: AffineSettings) -> dict:
    """Every image against every other one: ``{i: {j: T_ij}}`` (rule ``affine_pairwise``)."""
    images = {k: (c[0], c[1]) for k, c in cases.items()}
    return {i: pairwise_row(i, images, fov_masks(cases), settings=settings, init="search")
            for i in cases}


def rows_for(rows: dict, directions: str) -> dict:
    """The part of ``rows`` (both directions) that ``affine.directions`` registers."""
    ids = list(rows)
    return {i: {j: rows[i][j] for j in partners(ids, i, directions)} for i in ids}


def fov_masks(cases: dict) -> dict[str, np.ndarray]:
    """The field-of-view masks that mark padding (``load_fov_masks``)."""
    return {k: c[3] > 0 for k, c in cases.items() if not (c[3] > 0).all()}


def aligned(cases: dict, rows: dict, template_fov: float,
            regions: dict[str, np.ndarray] | None = None) -> dict[str, tuple]:
    """The groupwise mean and the resampled labels and field-of-view masks (rules
    ``affine_mean``, ``affine_resample``): ``{id: (label, fov)}`` on the reference grid;
    ``regions``: per case, a mask on its grid that the field-of-view mask is cut to after
    the groupwise mean (the voxels that count)."""
    ids = list(cases)
    regions = regions or {}
    M = groupwise_mean(rows_to_pairs(rows), ids, masks=fov_masks(cases),
                       template_fov=template_fov)
    ref, shape = mean_space_grid([cases[k][1] for k in ids], [cases[k][0].shape for k in ids],
                                 [M[k] for k in ids])
    return {k: (resample_to_space(cases[k][2], cases[k][1], M[k], ref, shape, order=0),
                resample_to_space(((cases[k][3] > 0) & regions.get(k, True)).astype(np.uint8),
                                  cases[k][1], M[k],
                                  ref, shape, order=0))
            for k in ids}


def ct_mr_dice(labels: dict) -> np.ndarray:
    """Mean organ Dice of every CT (moving) x MR (fixed) pair."""
    cts = [k for k in labels if k.endswith("_ct")]
    mrs = [k for k in labels if k.endswith("_mr")]
    return np.array([pair_dice(labels[c], labels[m]) for c in cts for m in mrs])


def pair_dice(moving: tuple, fixed: tuple) -> float:
    """Mean organ Dice where both scans have data (organs absent from both left out)."""
    both = (moving[1] > 0) & (fixed[1] > 0)
    d = dice(np.where(both, moving[0], 0), np.where(both, fixed[0], 0), range(1, 7))
    return float(np.nanmean(list(d.values())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=4, help="patients per modality")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--margin", type=float, default=None, help="AffineSettings.init_margin")
    ap.add_argument("--starts", type=int, default=3,
                    help="AffineSettings.init_starts (default: the config's affine.init_starts)")
    ap.add_argument("--template-fov", type=float, nargs="+", default=[0.0, 0.75],
                    help="groupwise_mean template_fov values to compare (0: every image)")
    ap.add_argument("--directions", nargs="+", choices=DIRECTIONS, default=["both"],
                    help="affine.directions to compare (one: the mean from the transforms of "
                    "the pairs that it registers, out of the same registrations)")
    ap.add_argument("--seed", type=int, default=DEFAULT["seed"],
                    help="phantom seed (0: the embedded default's patients)")
    args = ap.parse_args()
    DEFAULT["seed"] = args.seed
    columns = [(d, t) for d in args.directions for t in args.template_fov]
    st = {k: v for k, v in (("init_margin", args.margin), ("init_starts", args.starts))
          if v is not None}
    settings = AffineSettings(levels=(4, 2), **st)
    print(f"pairwise: {st or 'defaults'}; initial Dice, mean +- sd over {args.n} x {args.n} "
          "CT-MR pairs, per groupwise_mean template_fov")
    print("| variant | " + " | ".join(f"template_fov {t:g}" + (f", {d}" if len(args.directions) > 1
                                                                   else "")
                                     for d, t in columns)
          + " | time (s) |\n|---|" + "---|" * (len(columns) + 1), flush=True)
    for name in args.variants:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            cases = prepare(Path(tmp), args.n, VARIANTS[name])
        rows = pairwise_rows(cases, settings)
        cells = []
        for di, t in columns:
            d = ct_mr_dice(aligned(cases, rows_for(rows, di), t))
            cells.append(f"{d.mean():.3f} +- {d.std():.3f}")
        print(f"| {name} | " + " | ".join(cells) + f" | {time.perf_counter() - t0:.0f} |",
              flush=True)
        if name == "full" and "slab" in args.variants:
            regions = slab_regions(cases, args.n, args.seed)
            cells = []
            for di, t in columns:
                d = ct_mr_dice(aligned(cases, rows_for(rows, di), t, regions))
                cells.append(f"{d.mean():.3f} +- {d.std():.3f}")
            print("| full, slab region | " + " | ".join(cells) + " | |", flush=True)


if __name__ == "__main__":
    main()
