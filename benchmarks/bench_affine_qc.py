"""The affine quality check (:mod:`suitsbench.affineqc`) on a finished run's aligned images.

Two checks on ``results/<dataset>/`` (after ``snakemake --until affine_resample``):

- ``run``: the QC of the pairs the ``affine_qc`` rule checks (every test and validation pair
  of every fold, about three training pairs per training image) and of every image; printed: the verdicts and, per kind, the largest and
  the median ``gain`` (how much better the best translation beyond ``--max-shift`` mm scores
  than none; a pair is flagged above ``--margin``).
- ``slab``: failures injected into every test pair: the moving image's content moved by
  ``--shift`` mm along each axis in turn (uncovered voxels become padding) and its field of
  view cut to a 60 mm slab along k around the grid centre, as a partial scan left away from
  its anatomy; printed: how many of them are flagged (per axis) and their gains.

A run whose ``aligned/`` has no ``*_fov.nii.gz`` (made before ``affine_resample`` wrote them)
gets them here from ``prep/`` through ``affine/mean/`` as the rule computes them (the whole
preprocessed grid when ``prep/`` has no masks either).

Usage::

    .venv/bin/python benchmarks/bench_affine_qc.py results/phantom [--only run|slab]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from suits.tuning import tune_process

tune_process()  # an entry point: tune this process before torch loads

import nibabel as nib  # noqa: E402
from suits.io import load_volume  # noqa: E402
from suitsbench.affineqc import QCSettings, affine_qc  # noqa: E402
from suitsbench.groupwise import load_transform, resample_to_space  # noqa: E402
from suitsbench.qctable import select_pairs  # noqa: E402


def aligned_fov(res: Path, image_id: str) -> np.ndarray:
    path = res / "aligned" / f"{image_id}_fov.nii.gz"
    if path.exists():
        return np.asarray(nib.load(str(path)).dataobj) > 0
    prep_path = res / "prep" / f"{image_id}_fov.nii.gz"
    if not prep_path.exists():      # preprocessing before fov masks: the whole prep grid
        prep_path = res / "prep" / f"{image_id}_image.nii.gz"
    prep = nib.load(str(prep_path))
    if "image" in prep_path.name:
        prep = nib.Nifti1Image(np.ones(prep.shape, np.uint8), prep.affine)
    ref = nib.load(str(res / "affine" / "mean" / "reference_grid.nii.gz"))
    T = load_transform(res / "affine" / "mean" / f"{image_id}.txt")
    return resample_to_space(np.asarray(prep.dataobj), prep.affine, T, ref.affine, ref.shape,
                             order=0) > 0


def load(res: Path) -> tuple[dict, np.ndarray, dict]:
    split = json.loads((res / "split.json").read_text())
    pairs = select_pairs(*([p for fold in split.values() for p in fold.get(f"{role}_pairs", [])]
                           for role in ("test", "val", "train")))
    ids = sorted({i for p in pairs for i in p.split("__to__")})
    images, affine = {}, None
    for i in ids:
        vol, affine = load_volume(res / "aligned" / f"{i}_image.nii.gz")
        images[i] = (vol.numpy().reshape(vol.shape[-3:]), aligned_fov(res, i))
    return images, np.asarray(affine, float), pairs


def summary(rows: list[dict], kind: str) -> str:
    sel = [r for r in rows if r["kind"] == kind]
    gains = np.array([r["gain"] for r in sel], float)
    verdicts = {v: sum(r["verdict"] == v for r in sel) for v in ("ok", "misaligned", "low_overlap")}
    return (f"{kind}: {len(sel)} {verdicts}; gain max {np.nanmax(gains):+.3f}, median "
            f"{np.nanmedian(gains):+.3f}; overlap min {min(r['overlap'] for r in sel):.3f}; "
            f"nmi median {np.nanmedian([r['nmi'] for r in sel]):.3f}")


def run(images, affine, pairs, settings) -> None:
    t = time.perf_counter()
    rows = affine_qc(images, affine, pairs, settings)
    print(f"run: {len(pairs)} pairs, {len(images)} images in {time.perf_counter() - t:.1f} s")
    print(summary(rows, "pair"))
    print(summary(rows, "image"))
    for r in rows:
        if r["verdict"] != "ok":
            print(f"  flagged: {r['kind']} {r['id']}: {r['reason']}")


def shifted(img: np.ndarray, mask: np.ndarray, step: int, axis: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Content moved by ``step`` voxels along ``axis``; uncovered voxels get the minimum and
    leave the mask."""
    out = np.full_like(img, img.min())
    keep = np.zeros_like(mask)
    src = [slice(None)] * 3
    dst = [slice(None)] * 3
    src[axis] = slice(0, img.shape[axis] - step) if step >= 0 else slice(-step, None)
    dst[axis] = slice(step, None) if step >= 0 else slice(0, img.shape[axis] + step)
    out[tuple(dst)] = img[tuple(src)]
    keep[tuple(dst)] = mask[tuple(src)]
    return out, keep


def slab(images, affine, pairs, settings, shift_mm: float) -> None:
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    test = [p for p, role in pairs.items() if role == "test"]
    gains = {axis: [] for axis in range(3)}
    for p in test:
        moving_id, fixed_id = p.split("__to__")
        img, mask = images[moving_id]
        c, half = img.shape[2] // 2, int(round(30.0 / sizes[2]))
        for axis in range(3):
            moved, keep = shifted(img, mask, int(round(shift_mm / sizes[axis])), axis)
            cut = np.zeros_like(keep)
            cut[:, :, c - half:c + half] = keep[:, :, c - half:c + half]
            row = affine_qc({fixed_id: images[fixed_id], moving_id: (moved, cut)}, affine,
                            {p: "test"}, settings)[-1]
            gains[axis].append(row["gain"])
    every = np.concatenate([np.asarray(g, float) for g in gains.values()])
    print(f"slab: {int(np.sum(every > settings.margin))} of {every.size} injected failures "
          f"({shift_mm:g} mm, 60 mm slab) flagged; gain min {np.nanmin(every):+.3f}, median "
          f"{np.nanmedian(every):+.3f}; flagged per axis (i, j, k): "
          + ", ".join(str(int(np.sum(np.asarray(g) > settings.margin))) for g in gains.values()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="results/<dataset> of a run past affine_resample")
    ap.add_argument("--only", choices=["run", "slab"])
    ap.add_argument("--min-overlap", type=float, default=QCSettings.min_overlap)
    ap.add_argument("--max-shift", type=float, default=QCSettings.max_shift_mm)
    ap.add_argument("--margin", type=float, default=QCSettings.margin)
    ap.add_argument("--shift", type=float, default=40.0, help="injected shift (mm)")
    args = ap.parse_args()
    settings = QCSettings(args.min_overlap, args.max_shift, args.margin)
    images, affine, pairs = load(args.results)
    if args.only in (None, "run"):
        run(images, affine, pairs, settings)
    if args.only in (None, "slab"):
        slab(images, affine, pairs, settings, args.shift)


if __name__ == "__main__":
    main()
