"""Time per pairwise affine registration (:func:`suitsbench.affine.register_affine`).

For each size, a phantom patient (``suitsbench.phantom``) is rendered as CT (fixed) and, moved
by a known affine (10 degrees about a random axis, scale within 10 %, translation within 10 mm),
as MR (moving); the registration runs once to warm up and then ``--repeats`` times. Printed per
size: median / min wall time per pair and the mean organ error of the recovered transform (mm,
a sanity check that the timed work is a successful registration).

Sizes: the default benchmark grid (80 x 64 x 64 at 2 mm) and the paper's grid
(138 x 187 x 192 at 2 mm). At the paper's size the phantom is rendered at 4 mm and upsampled
trilinearly (labels nearest) to keep the set-up short; the registration's cost depends on the
grid, not on the content.

Usage::

    .venv/bin/python benchmarks/bench_affine.py [--threads 2] [--repeats 3] [--only default]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from suits.tuning import tune_process

tune_process()  # an entry point: tune this process before torch loads

import torch  # noqa: E402
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from suitsbench import phantom as P
from suitsbench.affine import register_affine

SIZES = {"default": (80, 64, 64), "paper": (138, 187, 192)}
SPACING = 2.0


def known_affine(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    Y = np.eye(4)
    Y[:3, :3] = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(10)).as_matrix() \
        @ np.diag(rng.uniform(0.9, 1.1, 3))
    Y[:3, 3] = rng.uniform(-10, 10, 3)
    return Y


def make_pair(shape: tuple[int, int, int], seed: int = 0):
    """``(ct, mr, label, affine, T_true)`` on a grid of ``shape`` at 2 mm (both images share the
    grid; the MR shows the patient moved by ``T_true``, fixed world -> moving world)."""
    render_factor = 1 if np.prod(shape) <= 1_000_000 else 2
    coarse = tuple(int(np.ceil(s / render_factor)) for s in shape)
    geom = P.make_geometry(seed, shape, SPACING)
    A_c = P.grid_affine(coarse, SPACING * render_factor)
    Y = known_affine(seed)
    ct, lab, _ = P.render(geom, "ct", coarse, A_c)
    mr, _, _ = P.render(geom, "mr", coarse, np.linalg.inv(Y) @ A_c)
    if render_factor > 1:
        def up(x, mode):
            t = torch.from_numpy(np.asarray(x, np.float32))[None, None]
            kw = {"align_corners": True} if mode == "trilinear" else {}
            return F.interpolate(t, size=shape, mode=mode, **kw)[0, 0].numpy()
        ct, mr = up(ct, "trilinear"), up(mr, "trilinear")
        lab = up(lab, "nearest").astype(np.uint8)
    A = P.grid_affine(shape, SPACING)
    return ct, mr, lab, A, Y


def organ_error(T: np.ndarray, Y: np.ndarray, lab: np.ndarray, A: np.ndarray) -> float:
    idx = np.argwhere(lab > 0)[::7].astype(float)
    p = A @ np.c_[idx, np.ones(len(idx))].T
    return float(np.linalg.norm(((T - Y) @ p)[:3], axis=0).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=sorted(SIZES), default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    for name, shape in SIZES.items():
        if args.only and name != args.only:
            continue
        t0 = time.perf_counter()
        ct, mr, lab, A, Y = make_pair(shape)
        setup = time.perf_counter() - t0
        T = register_affine(ct, mr, A, A, device=args.device)          # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            T = register_affine(ct, mr, A, A, device=args.device)
            times.append(time.perf_counter() - t0)
        init = organ_error(np.eye(4), Y, lab, A)
        err = organ_error(T, Y, lab, A)
        print(f"{name:8s} {'x'.join(map(str, shape)):>12s}: median {statistics.median(times):.2f} s"
              f"  min {min(times):.2f} s per pair ({args.repeats} runs; set-up {setup:.1f} s);"
              f" organ error {init:.1f} mm -> {err:.2f} mm", flush=True)


if __name__ == "__main__":
    main()
