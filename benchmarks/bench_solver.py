"""Solver benchmark for one Gauss-Newton step of the Brox system (Eq. 6) at the paper's size.

Builds the system on the feature grid (images 138x187x192 at 2 mm, feature grid /4 →
35x47x48, 3 unknowns per voxel) from MIND-SSC features of a random smooth volume and of the
same volume under a smooth random deformation (``--features mind``, default) or from smooth
random 12-channel representations (``--features random``), with a smooth random previous field
``u^{k-1}`` and λ = 10, then times

- the fast torch backend (multigrid-preconditioned CG; set-up + solve) in float32 and float64,
- pyamg (smoothed aggregation by default, CG-accelerated; set-up + solve, float64 on the host),

all to the same relative residual (default 1e-6), and prints one table: set-up, solve and total
times (median of ``--repeats``), iterations, the final true relative residual (recomputed in
float64 against the float64 operator) and the speed-up over pyamg.

    .venv/bin/python benchmarks/bench_solver.py                  # paper size
    .venv/bin/python benchmarks/bench_solver.py --size 18 24 24  # feature grid of a smaller run
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from suits.tuning import tune_process

tune_process()  # an entry point: tune this process before torch loads

import torch  # noqa: E402
import torch.nn.functional as F

from suits.solver import BroxOperator, PyAMG, TorchMultigrid
from suits.diffusion import brox_system
from suits.mind import mind_ssc
from suits.warp import warp

PAPER_IMAGE = (138, 187, 192)
PAPER_FEATURE_GRID = tuple((n + 3) // 4 for n in PAPER_IMAGE)   # (35, 47, 48)


def smooth_noise(shape, channels, sigma_vox, generator, dtype=torch.float64):
    """Gaussian-smoothed white noise ``(1, channels, *shape)`` with unit standard deviation."""
    x = torch.randn(1, channels, *shape, generator=generator, dtype=dtype)
    radius = max(1, int(round(2 * sigma_vox)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=dtype) / sigma_vox) ** 2)
    k = k / k.sum()
    for a in range(3):
        view = [1, 1, 1]
        view[a] = -1
        w = k.view(1, 1, *view).repeat(channels, 1, 1, 1, 1)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - a)] = pad[2 * (2 - a) + 1] = radius
        x = F.conv3d(F.pad(x, pad, mode="replicate"), w, groups=channels)
    return x / x.std()


def build_system(grid, features, lam, seed):
    """``(M, b)`` float64 on the feature grid ``grid``."""
    gen = torch.Generator().manual_seed(seed)
    if features == "mind":
        image = tuple(4 * n - 2 for n in grid)                          # ceil(image/4) = grid
        vol = smooth_noise(image, 1, 3.0, gen).float()
        field = 2.0 * smooth_noise(image, 3, 12.0, gen).float()         # ~2 voxel deformation
        r_fix = mind_ssc(vol)[..., ::4, ::4, ::4].double()
        r_mov = mind_ssc(warp(vol, field))[..., ::4, ::4, ::4].double()
    elif features == "random":
        r_fix = smooth_noise(grid, 12, 1.5, gen)
        r_mov = r_fix + 0.3 * smooth_noise(grid, 12, 1.5, gen)
    else:
        raise ValueError(features)
    u = 0.5 * smooth_noise(grid, 3, 4.0, gen)                            # previous field, voxels
    return brox_system(r_fix, r_mov, u, lam)


def timed(fn, repeats):
    """Run ``fn`` ``repeats`` times; return (median seconds, last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def true_residual(op64: BroxOperator, z: torch.Tensor, b64: torch.Tensor) -> float:
    z = z.to(torch.float64)
    return float((b64 - op64.matvec(z)).norm() / b64.norm())


def run_backend(name, backend, M64, b64, lam, shift, dtype, tol, repeats):
    op64 = BroxOperator(M64, lam, shift)
    op = BroxOperator(M64.to(dtype), lam, shift)
    b = b64.to(dtype)
    with torch.no_grad():
        backend.solve(backend.setup(op), b, tol=tol)                       # warm-up
        t_setup, state = timed(lambda: backend.setup(op), repeats)
        t_solve, (z, info) = timed(lambda: backend.solve(state, b, tol=tol), repeats)
    return {"backend": name, "dtype": str(dtype).replace("torch.", ""), "setup": t_setup,
            "solve": t_solve, "total": t_setup + t_solve, "iterations": int(info.iterations.max()),
            "residual": true_residual(op64, z, b64), "z": z.to(torch.float64)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, nargs=3, default=list(PAPER_FEATURE_GRID),
                   metavar=("D", "H", "W"), help="feature grid (default: the paper's 35 47 48)")
    p.add_argument("--features", choices=("mind", "random"), default="mind")
    p.add_argument("--lam", type=float, default=10.0)
    p.add_argument("--eps", type=float, default=1e-6, help="diagonal shift eps*lam (gauss_newton_step default)")
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pyamg-method", choices=("sa", "rs"), default="sa")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solver-threads", type=int, default=None, metavar="N",
                   help="TorchMultigrid(cpu_threads=N): default its own choice (one thread for "
                        "grids up to 2^19 voxels); 0 keeps --threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    grid = tuple(args.size)
    M64, b64 = build_system(grid, args.features, args.lam, args.seed)
    shift = args.eps * args.lam
    n = 3 * grid[0] * grid[1] * grid[2]
    print(f"Brox system: feature grid {grid}, {n} unknowns, {args.features} features, lam={args.lam:g}, "
          f"shift={shift:g}, tol={args.tol:g}, torch threads={torch.get_num_threads()}, "
          f"solver cpu_threads={args.solver_threads}, repeats={args.repeats}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    fast = TorchMultigrid(cpu_threads=args.solver_threads)
    rows = [
        run_backend("torch-mg", fast, M64, b64, args.lam, shift, torch.float32, args.tol, args.repeats),
        run_backend("torch-mg", fast, M64, b64, args.lam, shift, torch.float64, args.tol, args.repeats),
        run_backend(f"pyamg-{args.pyamg_method}", PyAMG(method=args.pyamg_method), M64, b64, args.lam, shift,
                    torch.float64, args.tol, args.repeats),
    ]
    ref = rows[-1]
    print(f"{'backend':<10} {'dtype':<8} {'setup s':>8} {'solve s':>8} {'total s':>8} {'iters':>6} "
          f"{'rel.res':>9} {'vs pyamg':>9} {'|z-z_pyamg|/|z_pyamg|':>22}")
    for r in rows:
        diff = float((r["z"] - ref["z"]).norm() / ref["z"].norm())
        print(f"{r['backend']:<10} {r['dtype']:<8} {r['setup']:8.3f} {r['solve']:8.3f} {r['total']:8.3f} "
              f"{r['iterations']:6d} {r['residual']:9.2e} {ref['total'] / r['total']:8.1f}x {diff:22.2e}")

    # effect of the diagonal shift on the solution (float64, tight tolerance)
    mg = TorchMultigrid()
    with torch.no_grad():
        z0, _ = mg.solve(mg.setup(BroxOperator(M64, args.lam, 0.0)), b64, tol=1e-10)
        z1, _ = mg.solve(mg.setup(BroxOperator(M64, args.lam, shift)), b64, tol=1e-10)
    print(f"shift {shift:g} vs none: |dz|/|z| = {float((z1 - z0).norm() / z0.norm()):.2e}")


if __name__ == "__main__":
    main()
