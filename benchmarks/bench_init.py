"""Global initialisation of the affine stage (:mod:`suitsbench.globalinit`) on the phantom.

Two checks, no block matching (only the starts are compared):

- ``default``: every ordered pair of the embedded default's 10 images (seed 0, deformation
  x 3, fat planes): how many pairs the search moves away from the centre-of-mass start
  (0 keeps the default's affine results), and the smallest cost ratio winner / start.
- ``slab``: ``--n`` pairs of a full-field-of-view phantom CT (moving) and another patient's
  MR as an axial slab (fixed) of 15-30 slices of 2 mm at a random height, its header
  60-100 mm off, padded to 64 slices with its minimum (as preprocessing pads), with its
  field-of-view mask. Printed per pair: the height error (mm) of the slab's centre under the
  centre-of-mass start and under the search's winner (margin 0, so every winner is shown)
  and the cost ratio; the mean absolute errors at the end.

Usage::

    .venv/bin/python benchmarks/bench_init.py [--only default|slab] [--n 12]
"""
from __future__ import annotations

import argparse

import numpy as np
from suits.tuning import tune_process

tune_process()  # an entry point: tune this process before torch loads

from suitsbench import phantom as P  # noqa: E402
from suitsbench.affine import initial_transform  # noqa: E402
from suitsbench.globalinit import search_initial  # noqa: E402
from suitsbench.preprocess import crop_or_pad  # noqa: E402


def default_pairs() -> None:
    imgs = []
    for n, mod in enumerate(["ct"] * 5 + ["mr"] * 5):
        im, _, A = P.render(P.make_geometry(n, (80, 64, 64), 2.0, 3.0, True), mod)
        imgs.append((im, A))
    moved, ratios = 0, []
    for i, (f, fa) in enumerate(imgs):
        for j, (m, ma) in enumerate(imgs):
            if i != j:
                T0 = initial_transform(f, m, fa, ma, "com")
                T, res = search_initial(f, m, fa, ma, T0)
                moved += not np.array_equal(T, T0)
                ratios.append(res.cost / res.start_cost)
    print(f"default: {len(ratios)} pairs, {moved} moved from the centre-of-mass start; cost "
          f"ratio winner/start min {min(ratios):.3f}, median {np.median(ratios):.3f}")


def slab_pairs(n: int) -> None:
    rng = np.random.default_rng(0)
    err0, err1 = [], []
    for k in range(n):
        ct, _, A = P.render(P.make_geometry(100 + k, (80, 64, 64), 2.0, 3.0, True), "ct")
        g_mr = P.make_geometry(200 + k, (80, 64, 64), 2.0, 3.0, True)
        slices, z = int(rng.integers(15, 31)), rng.uniform(-10, 40)
        A_s = P.grid_affine((80, 64, slices), 2.0)
        A_s[2, 3] += z
        mr, _, _ = P.render(g_mr, "mr", (80, 64, slices), A_s)
        H = np.eye(4)
        H[2, 3] = rng.uniform(60, 100) * rng.choice([-1, 1])
        mr_p, A_p = crop_or_pad(mr, H @ A_s, (80, 64, 64), float(mr.min()))
        mask, _ = crop_or_pad(np.ones(mr.shape, np.uint8), H @ A_s, (80, 64, 64), 0)
        T0 = initial_transform(mr_p, ct, A_p, A, "com", fixed_mask=mask)
        _, res = search_initial(mr_p, ct, A_p, A, T0, margin=0.0, fixed_mask=mask)
        c = np.array([0.0, 0.0, z + H[2, 3], 1.0])
        e0, e1 = (T0 @ c)[2] - z, (res.T @ c)[2] - z
        err0.append(abs(e0))
        err1.append(abs(e1))
        print(f"slab {k:2d}: {slices} slices, height {z:5.1f} mm; error com {e0:6.1f} mm, "
              f"search {e1:6.1f} mm; cost ratio {res.cost / res.start_cost:.3f}", flush=True)
    print(f"slab: mean |height error| com {np.mean(err0):.1f} mm, search {np.mean(err1):.1f} mm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["default", "slab"], default=None)
    ap.add_argument("--n", type=int, default=12)
    args = ap.parse_args()
    if args.only in (None, "default"):
        default_pairs()
    if args.only in (None, "slab"):
        slab_pairs(args.n)


if __name__ == "__main__":
    main()
