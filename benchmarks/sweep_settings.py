"""Choose data-set-dependent settings on the TRAINING pairs of a finished (or affinely aligned)
workflow run, never on the test pairs.

The paper gives one setting per method for 2 mm VISCERAL scans. On another data set (the
embedded phantom, whose anatomy spans about half as many voxels as a real abdomen; or your own
scans) some of them are scale-dependent and should be re-chosen: the test-time λ of the
iterative diffusion registration and the SimpleElastix-MI regularisation (final B-spline grid
spacing, weight of the bending-energy penalty). This script scores a grid of candidates by the
mean organ Dice over the training pairs of ``results/<dataset>/`` (``split.json``,
``aligned/``) and prints one line per candidate, best last. Copy the winners into your config.

Usage::

    .venv/bin/python benchmarks/sweep_settings.py results/phantom [--pairs 8] \
        [--lam 1 2 3 5 10] [--factor 2] [--elastix-grid 4 8 16] [--elastix-weight 1 100 1000 3000]

MIND-SSC (``suits.register.MindRepresentation``, the ``mind_ssc`` row) stands in for the
trainable features when choosing λ (the pre-trained FeatCNN replicates it).
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from suits.tuning import tune_process

tune_process()  # an entry point: tune this process before torch loads

import torch  # noqa: E402

from suits.io import load_labels, load_volume
from suits.register import MindRepresentation, register
from suits.warp import warp_labels
from suitsbench.metrics import dice
from suitsbench.pairid import split_pair_id


def mean_dice(fixed: np.ndarray, warped: np.ndarray, labels: list[int]) -> float:
    """Mean over the organs present in either map (the evaluator's Dice)."""
    return float(np.nanmean(list(dice(fixed, warped, labels).values())))


def input_dir(results: Path) -> Path:
    """Where a run's methods read their inputs: ``aligned/`` (the groupwise affine stage), or
    ``prep/`` for a run without it (``affine.enabled: false``)."""
    aligned = results / "aligned"
    return aligned if aligned.is_dir() else results / "prep"


def load_pairs(results: Path, which: str = "train_pairs", n: int | None = None) -> list[tuple]:
    """``(fixed, moving, fixed_labels, moving_labels, fixed_affine)`` of the ``which`` pairs
    (``"train_pairs"``, ``"val_pairs"`` or ``"test_pairs"`` of ``split.json``; the first fold
    of a k-fold run) of a finished run, read from :func:`input_dir`; ``n``: that many, evenly
    spaced."""
    split = json.loads((results / "split.json").read_text())
    split = next(iter(split.values())) if "train_pairs" not in split else split
    names = split.get(which) or []
    if not names:
        raise SystemExit(f"{results / 'split.json'}: no {which}; for val_pairs set split.n_val "
                         "or mark subjects 'val' in the manifest")
    if n is not None:
        names = names[:: max(1, len(names) // max(1, n))][:n]
    aligned = input_dir(results)
    pairs = []
    for name in names:
        moving, fixed = split_pair_id(name)
        f, fa = load_volume(aligned / f"{fixed}_image.nii.gz")
        m, _ = load_volume(aligned / f"{moving}_image.nii.gz")
        fl, _ = load_labels(aligned / f"{fixed}_label.nii.gz")
        ml, _ = load_labels(aligned / f"{moving}_label.nii.gz")
        pairs.append((f, m, fl, ml, np.asarray(fa)))
    return pairs


def pair_dice(pairs: list[tuple], field_of) -> list[float]:
    """Per pair, the mean organ Dice after warping the moving labels by
    ``field_of(fixed, moving, fixed_affine)`` (labels: those of the first fixed map)."""
    labels = sorted(int(v) for v in np.unique(pairs[0][2]) if v > 0)
    out = []
    for f, m, fl, ml, fa in pairs:
        w = warp_labels(ml.long(), field_of(f, m, fa), max(labels) + 1).argmax(1)[0].numpy()
        out.append(mean_dice(fl[0, 0].numpy(), w, labels))
    return out


def mean_pair_dice(pairs: list[tuple], field_of) -> float:
    """Mean over ``pairs`` of :func:`pair_dice`."""
    return float(np.mean(pair_dice(pairs, field_of)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="results/<dataset> of a run (split.json, aligned/)")
    ap.add_argument("--pairs", type=int, default=8, help="training pairs scored (evenly spaced)")
    ap.add_argument("--lam", type=float, nargs="*", default=[1, 2, 3, 5, 10])
    ap.add_argument("--factor", type=int, default=2, help="feature grid factor (featcnn.downsample)")
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--elastix-grid", type=int, nargs="*", default=[4, 8, 16])
    ap.add_argument("--elastix-weight", type=float, nargs="*", default=[1, 100, 1000, 3000])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    pairs = load_pairs(args.results, "train_pairs", args.pairs)

    def score(field_of) -> tuple[float, float]:
        t0 = time.perf_counter()
        return mean_pair_dice(pairs, field_of), (time.perf_counter() - t0) / len(pairs)

    rows = [("initial", score(lambda f, m, fa: torch.zeros(1, 3, *f.shape[-3:])))]
    print(f"{len(pairs)} training pairs of {args.results}; mean organ Dice", flush=True)
    print(f"  initial                                   {rows[0][1][0]:.3f}", flush=True)
    rep = MindRepresentation(factor=args.factor)
    for lam in args.lam:
        s = score(lambda f, m, fa: register(f, m, rep, iterations=args.iterations, lam=lam))
        rows.append((f"mind_ssc  factor {args.factor} lam {lam:g}", s))
        print(f"  {rows[-1][0]:<40}  {s[0]:.3f}   ({s[1]:.1f} s/pair)", flush=True)
    if args.elastix_grid and args.elastix_weight:
        from baselines.elastix_mi import register as elastix
        from baselines.elastix_params import parameter_map

        for grid, weight in itertools.product(args.elastix_grid, args.elastix_weight):
            pm = parameter_map({"FinalGridSpacingInVoxels": grid, "Metric1Weight": weight})
            s = score(lambda f, m, fa: elastix(f[0, 0].numpy(), m[0, 0].numpy(), fa, fa, pm,
                                               threads=args.threads))
            rows.append((f"elastix   grid {grid} weight {weight:g}", s))
            print(f"  {rows[-1][0]:<40}  {s[0]:.3f}   ({s[1]:.1f} s/pair)", flush=True)
    for prefix in ("mind_ssc", "elastix"):
        group = [r for r in rows if r[0].startswith(prefix)]
        if group:
            best = max(group, key=lambda r: r[1][0])
            print(f"best {prefix}: {best[0]} ({best[1][0]:.3f})")


if __name__ == "__main__":
    main()
