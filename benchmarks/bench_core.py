"""Core SUITS timings at the paper's size: one registration and one training step.

Every measurement runs in a fresh subprocess (so peak memory, ``resource.getrusage(...).
ru_maxrss``, is that measurement's alone) on synthetic data of the paper's grid
(138 x 187 x 192 voxels, 2 mm), with a default (untrained) FeatCNN (``downsample=4``):

* ``solver``: ``bench_solver.py`` on this size's feature grid (``ceil(n / 4)``: 35 x 47 x 48
  at the paper's size): one Gauss-Newton solve by the fast backend and by pyamg, set-up + solve
  to the same residual, and the speed-up (its table printed as is);
* ``register``: :func:`suits.register.register`, 15 iterations, λ = 10, plus a breakdown of the
  time into FeatCNN forward passes, the Gauss-Newton solve, warping and update upsampling;
* ``train``: :func:`suits.train.train_suits`, batch 1, ``--train-steps`` steps (default 3) with
  ``k_back`` drawn as in training (seeded, uniform in [1, 15]); time per step = total / steps;
* ``train-worst``: the same step with ``k_back = 15`` (14 label iterations + the tracked one);
* ``train-k1``: the step with ``k_back = 1`` (the tracked iteration only).
* ``guidance``: forward + backward of the guidance loss (Eq. 3) at the image grid, through
  ``suits.train.guidance_loss`` (the target channel only) and through the ``K``-channel
  ``warp_labels`` formulation it replaces (3 repeats each, best printed).

With both ``train-k1`` and ``train-worst`` the mean step time over ``k_back`` uniform in
``[1, 15]`` (the training default) is printed as well: the step is linear in ``k_back``
(``k_back - 1`` identical label iterations), so it is ``t1 + 7 (t15 - t1) / 14``.

``train-worst`` and ``train-k1`` run the step ``--warmup`` times (default 2) untimed and then
time it once, in one process: the steady step that a training run repeats hundreds of times.
The first steps map the process's memory, whose page faults can cost seconds of system time per
step on a virtual machine (``docs/benchmarks.md``); their times are printed too. ``--warmup 0``
times the first step of a fresh process alone.

Each measured process tunes itself as the CLI and the workflow's jobs do
(:func:`suits.tuning.tune_process`); ``SUITS_RETAIN_FREED_MEMORY=0`` in the environment measures
without kept memory.

Usage::

    .venv/bin/python benchmarks/bench_core.py [--size 138 187 192] [--threads 2] [--only register]
        [--omp-wait-policy passive|active]
        [--warp-space default|image|features] [--label-warp-space features|image] [--warmup N]

Peak memory (ru_maxrss) includes the Python interpreter and torch (~0.3-0.4 GB). Wall time
depends on the load of the machine (printed); "CPU" is the process CPU time (user + system,
all threads), a figure that depends less on other jobs but includes OpenMP spin-waiting.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict

PAPER_SIZE = (138, 187, 192)
MEASUREMENTS = ("solver", "register", "train", "train-worst", "train-k1", "guidance")


def synthetic_pair(shape, num_classes: int = 7, seed: int = 0):
    """An MR-like fixed and CT-like moving image with ``num_classes - 1`` ellipsoid organs each,
    the moving organs displaced by a few voxels (smooth, different intensity mappings)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    D, H, W = shape
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij"))

    def labels(jitter: float):
        lab = torch.zeros(shape, dtype=torch.long)
        gg = torch.Generator().manual_seed(seed + 1)
        for k in range(1, num_classes):
            c = (torch.rand(3, generator=gg) - 0.5) * 1.0 + jitter * (torch.rand(3, generator=g) - 0.5)
            r = 0.12 + 0.2 * torch.rand(3, generator=gg)
            inside = (((grid - c.view(3, 1, 1, 1)) / r.view(3, 1, 1, 1)) ** 2).sum(0) < 1
            lab[inside] = k
        return lab

    def image(lab, lut):
        x = lut[lab] + 0.05 * torch.randn(lab.shape, generator=g)
        return F.avg_pool3d(x[None, None], 3, stride=1, padding=1)

    fl, ml = labels(0.0), labels(0.08)
    fixed = image(fl, torch.rand(num_classes, generator=g))
    moving = image(ml, torch.rand(num_classes, generator=g))
    return {"fixed": fixed, "moving": moving, "fixed_labels": fl[None, None], "moving_labels": ml[None, None]}


class _Timers:
    """Accumulates wall time of wrapped callables by name."""

    def __init__(self):
        self.t = defaultdict(float)
        self.n = defaultdict(int)

    def wrap(self, name, fn):
        def wrapped(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            self.t[name] += time.perf_counter() - t0
            self.n[name] += 1
            return out
        return wrapped


def _instrument(timers: _Timers) -> None:
    """Time the parts of an iteration (module attributes looked up at call time)."""
    import suits.diffusion
    import suits.register as reg

    suits.diffusion.gauss_newton_step = timers.wrap("gauss_newton_step", suits.diffusion.gauss_newton_step)
    reg.warp = timers.wrap("warp", reg.warp)
    reg.to_image_grid = timers.wrap("upsample + box filter", reg.to_image_grid)
    reg.to_feature_grid = timers.wrap("field to feature grid", reg.to_feature_grid)
    reg.upsample_field_strided = timers.wrap("update on the feature grid", reg.upsample_field_strided)


def child(which: str, shape, iterations: int, solver, seed: int, train_steps: int = 3,
          warp_space: str = "default", label_warp_space: str = "features", warmup: int = 2) -> dict:
    """Run one measurement in this process and return its numbers."""
    import torch

    from suits.featcnn import FeatCNN

    torch.manual_seed(0)
    data = synthetic_pair(shape, seed=seed)
    model = FeatCNN()
    timers = _Timers()
    _instrument(timers)
    forward = model.forward
    model.forward = timers.wrap("FeatCNN forward", forward)
    # "default": each function's own default (register: features, train: image)
    space = {} if warp_space == "default" else {"warp_space": warp_space}
    result = {"measurement": which, "shape": list(shape), "threads": torch.get_num_threads(),
              "warp_space": warp_space, "label_warp_space": label_warp_space}
    if which == "guidance":
        import torch.nn.functional as F

        from suits.train import guidance_loss
        from suits.warp import warp_labels

        def k_channels(ml, fl, u, K):
            return F.nll_loss(torch.log(warp_labels(ml, u, K) + 1e-8), fl[:, 0])

        gen = torch.Generator().manual_seed(seed)
        t0, c0 = time.perf_counter(), time.process_time()
        for name, fn in (("guidance_loss (target channel)", guidance_loss),
                         ("warp_labels (7 channels)", k_channels)):
            best = float("inf")
            for _ in range(3):
                u = (0.5 * torch.randn(1, 3, *shape, generator=gen)).requires_grad_(True)
                t = time.perf_counter()
                fn(data["moving_labels"], data["fixed_labels"], u, 7).backward()
                best = min(best, time.perf_counter() - t)
            timers.t[name], timers.n[name] = best, 1
        result["seconds"] = time.perf_counter() - t0
        result["cpu_seconds"] = time.process_time() - c0
    elif which == "register":
        from suits.register import register

        t0, c0 = time.perf_counter(), time.process_time()
        u = register(data["fixed"], data["moving"], model, iterations=iterations, lam=10.0, solver=solver,
                     **space)
        result["seconds"] = time.perf_counter() - t0
        result["cpu_seconds"] = time.process_time() - c0
        result["field_abs_max"] = float(u.abs().max())
    else:
        from suits.train import train_suits

        k_backs = []

        class Grab(logging.Handler):
            def emit(self, record):
                if "k_back" in record.getMessage():
                    k_backs.append(int(record.getMessage().split("k_back")[1].split()[0]))

        logging.getLogger("suits.train").addHandler(Grab())
        logging.getLogger("suits.train").setLevel(logging.INFO)
        k_min = iterations if which == "train-worst" else 1
        k_max = 1 if which == "train-k1" else iterations
        single = which in ("train-worst", "train-k1")
        steps = 1 if single else int(train_steps)

        def run():
            return train_suits(model, [data], steps=steps, batch=1, lr=1e-5, lam=5.0, k_max=k_max,
                               k_min=k_min, num_classes=7, seed=seed, solver=solver, progress=False,
                               label_warp_space=label_warp_space, **space)[1]

        if single and warmup > 0:
            # the first steps of a process map its memory (page faults, costly on some VMs); a
            # training run repeats the steady step hundreds of times
            result["warmup_seconds"] = []
            for _ in range(warmup):
                t0 = time.perf_counter()
                run()
                result["warmup_seconds"].append(round(time.perf_counter() - t0, 2))
            timers.t.clear()
            timers.n.clear()
            k_backs.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        losses = run()
        result["seconds"] = (time.perf_counter() - t0) / steps
        result["cpu_seconds"] = (time.process_time() - c0) / steps
        result["steps"] = steps
        result["k_back"] = k_backs
        result["loss"] = losses[-1]
    result["breakdown_seconds"] = {k: round(v, 3) for k, v in sorted(timers.t.items(), key=lambda kv: -kv[1])}
    result["breakdown_calls"] = dict(timers.n)
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
    return result


def _load() -> str:
    """1/5/15-minute load averages (the machine may be shared)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, nargs=3, default=PAPER_SIZE, metavar=("D", "H", "W"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iterations", type=int, default=15, help="registration iterations = k_max")
    p.add_argument("--solver", default=None, help="passed to suits.diffusion.gauss_newton_step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-steps", type=int, default=3, help="steps of the 'train' measurement")
    p.add_argument("--only", choices=MEASUREMENTS, nargs="+", default=list(MEASUREMENTS))
    p.add_argument("--omp-wait-policy", choices=("passive", "active"), default="passive",
                   help="OMP_WAIT_POLICY of the measured processes (passive: what "
                        "suits.tuning.tune_process sets; active: OpenMP's spinning default)")
    p.add_argument("--warp-space", choices=("default", "image", "features"), default="default",
                   help="warp_space of suits.register and of suits.train's tracked iteration: "
                        "default: each function's own (register: features, train: image); image: "
                        "warp the moving image on the image grid (one FeatCNN pass each); "
                        "features: its features on the feature grid")
    p.add_argument("--label-warp-space", choices=("features", "image"), default="features",
                   help="suits.train label_warp_space: warp the pooled label maps on the feature "
                        "grid (default) or the one-hot maps on the image grid")
    p.add_argument("--warmup", type=int, default=2, metavar="N",
                   help="train-k1 / train-worst: run the step N times untimed, then time it once "
                        "(the steady step of a training run; the untimed steps' times are printed "
                        "too); 0 times the first step of a fresh process")
    p.add_argument("--json", action="store_true", help="print the raw JSON records too")
    p.add_argument("--child", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        from suits.tuning import tune_process

        tune_process()
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(child(args.child, tuple(args.size), args.iterations, args.solver, args.seed,
                               args.train_steps, args.warp_space, args.label_warp_space,
                               args.warmup)))
        return 0

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               OMP_WAIT_POLICY=args.omp_wait_policy.upper())
    print(f"# bench_core: size {tuple(args.size)}, threads {args.threads}, iterations {args.iterations}, "
          f"solver {args.solver or 'default'}, warp_space {args.warp_space}, "
          f"label_warp_space {args.label_warp_space}, "
          f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']}, "
          f"SUITS_RETAIN_FREED_MEMORY={env.get('SUITS_RETAIN_FREED_MEMORY', '1')}; "
          f"one fresh process per measurement; load {_load()}")
    records = []
    for which in args.only:
        if which == "solver":
            grid = [str(-(-n // 4)) for n in args.size]
            r = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "bench_solver.py"),
                                "--size", *grid, "--threads", str(args.threads)],
                               capture_output=True, text=True, env=env)
            if r.returncode != 0:
                print(f"solver: FAILED (exit {r.returncode})\n{r.stderr[-3000:]}", file=sys.stderr)
                return 1
            print("solver (bench_solver.py --size " + " ".join(grid) + ")")
            print("\n".join("    " + line for line in r.stdout.rstrip().splitlines()))
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--child", which, "--size", *map(str, args.size),
               "--threads", str(args.threads), "--iterations", str(args.iterations), "--seed", str(args.seed),
               "--train-steps", str(args.train_steps), "--warp-space", args.warp_space,
               "--label-warp-space", args.label_warp_space, "--warmup", str(args.warmup)]
        if args.solver:
            cmd += ["--solver", args.solver]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            print(f"{which}: FAILED (exit {r.returncode})\n{r.stderr[-3000:]}", file=sys.stderr)
            return 1
        rec = json.loads(r.stdout.strip().splitlines()[-1])
        records.append(rec)
        extra = (f" per step ({rec['steps']} steps, k_back {rec['k_back']}, last loss {rec['loss']:.4f})"
                 if "k_back" in rec else "")
        print(f"{which:12s} wall {rec['seconds']:7.2f} s   CPU {rec['cpu_seconds']:7.2f} s   "
              f"peak RSS {rec['peak_rss_gb']:5.2f} GB{extra}   (load {_load()})")
        if "warmup_seconds" in rec:
            print(f"    (after {len(rec['warmup_seconds'])} untimed steps of wall "
                  f"{', '.join(f'{t:.2f}' for t in rec['warmup_seconds'])} s; peak RSS covers them)")
        for name, sec in rec["breakdown_seconds"].items():  # totals over the whole measurement
            print(f"    {name:24s} {sec:7.2f} s total ({rec['breakdown_calls'][name]} calls)")
    by = {r["measurement"]: r for r in records}
    if "train-k1" in by and "train-worst" in by:
        t1, tk = by["train-k1"]["seconds"], by["train-worst"]["seconds"]
        c1, ck = by["train-k1"]["cpu_seconds"], by["train-worst"]["cpu_seconds"]
        k = args.iterations
        mean_k = (1 + k) / 2
        frac = (mean_k - 1) / max(k - 1, 1)
        print(f"train mean   wall {t1 + frac * (tk - t1):7.2f} s   CPU {c1 + frac * (ck - c1):7.2f} s   "
              f"per step for k_back uniform in [1, {k}] (linear in k_back: t1 + {frac:.2f} (t{k} - t1))")
    if args.json:
        print(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
