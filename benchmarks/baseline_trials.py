"""Repeat the baseline and ``warp_space`` trials of ``docs/method-choices.md`` on a finished
run (``results/<dataset>/``: ``split.json``, ``aligned/`` or ``prep/``, ``models/``), scored like
``sweep_settings.py`` (mean organ Dice over pairs, moving labels warped by each field).

Sub-commands (``--pairs n`` scores ``n`` evenly spaced pairs; ``--test`` also scores the test
pairs where a model is trained)::

    # SimpleElastix-MI parameter-map overrides, one JSON object per candidate
    .venv/bin/python benchmarks/baseline_trials.py elastix results/phantom --pairs 6 \\
        '{"Metric1Weight": 3000, "NumberOfHistogramBins": 64}' '{"MaximumStepLength": 0.5}'
    # a module method (ConvexAdam, ANTs SyN, or yours) with candidate settings
    .venv/bin/python benchmarks/baseline_trials.py module results/phantom convexadam --threads 1 \\
        '{}' '{"grid_sp": 4, "disp_hw": 6}'
    # VoxelMorph-MIND trained on all training pairs (``--val``: also scored on the validation
    # pairs, ``--which val_pairs`` for the other sub-commands)
    .venv/bin/python benchmarks/baseline_trials.py voxelmorph results/phantom --iterations 300 \\
        --lr 1e-3 --reg-weight 1 --val
    # the VoxelMorph-MIND loss minimised directly over a free field per pair (what the
    # objective can reach without a network)
    .venv/bin/python benchmarks/baseline_trials.py objective results/phantom --pairs 3 \\
        --reg-weight 0.1 1 10
    # warp_space image vs features with MIND-SSC and the run's FeatCNNs, for one or more
    # test-time lambdas (``--which test_pairs`` scores the test pairs instead, as elastix does:
    # for reporting after a choice; ``--modalities mr us`` for other FeatCNN streams)
    .venv/bin/python benchmarks/baseline_trials.py warp-space results/phantom --lam 2
    # why SimpleElastix-MI cannot gain on the phantom: a patient's CT registered to its own MR
    # (ideal field zero): drift, Dice, full-image Mattes MI at the truth vs at elastix's result,
    # and where the CT organs fall in a 32-bin histogram (no finished run needed)
    .venv/bin/python benchmarks/baseline_trials.py drift '{"Metric1Weight": 1}' \
        '{"Metric1Weight": 3000}' --seeds 0 6
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from suits.tuning import tune_process

tune_process()  # an entry point: tune this process before torch loads

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_settings import load_pairs, mean_dice, mean_pair_dice, pair_dice  # noqa: E402


def zero(f, m, fa):
    return torch.zeros(1, 3, *f.shape[-3:])


def cmd_elastix(args, pairs) -> None:
    import numpy as np

    from baselines.elastix_mi import register as elastix
    from baselines.elastix_params import parameter_map

    initial = np.array(pair_dice(pairs, zero))
    print(f"  initial  {initial.mean():.4f}", flush=True)
    for text in args.overrides:
        pm = parameter_map(json.loads(text))
        t0 = time.perf_counter()
        d = np.array(pair_dice(pairs, lambda f, m, fa: elastix(f[0, 0].numpy(), m[0, 0].numpy(),
                                                                fa, fa, pm, threads=args.threads)))
        gain = d - initial
        print(f"  elastix {text}  {d.mean():.4f}  (gain {gain.mean():+.4f}, worst pair "
              f"{gain.min():+.3f}; {(time.perf_counter() - t0) / len(pairs):.1f} s/pair)",
              flush=True)


def cmd_module(args, pairs) -> None:
    import numpy as np

    from suitsbench.methods import BUILTIN, load_register

    import resource

    register = load_register(BUILTIN[args.method][0] if args.method in BUILTIN else args.method)
    initial = np.array(pair_dice(pairs, zero))
    for text in args.settings:
        settings = json.loads(text)
        t0, c0 = time.perf_counter(), time.process_time()
        d = np.array(pair_dice(pairs, lambda f, m, fa: register(
            f, m, fa, fa, threads=args.threads, device="cpu", **settings)))
        gain = d - initial
        wall, cpu = ((time.perf_counter() - t0) / len(pairs), (time.process_time() - c0) / len(pairs))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"  {args.method} {text}  {d.mean():.4f}  (gain {gain.mean():+.4f}, worst pair "
              f"{gain.min():+.3f}; {wall:.1f} s/pair, CPU {cpu:.1f} s/pair, process peak "
              f"{peak:.0f} MB)", flush=True)


def cmd_voxelmorph(args, pairs) -> None:
    from baselines import voxelmorph_mind as vm

    t0 = time.perf_counter()
    model = vm.train([(f, m) for f, m, *_ in pairs], args.iterations, lr=args.lr,
                     reg_weight=args.reg_weight, progress=False, seed=args.seed)
    seconds = (time.perf_counter() - t0) / args.iterations
    field = lambda f, m, fa: vm.register(model, f, m)  # noqa: E731
    print(f"  voxelmorph {args.iterations} it lr {args.lr:g} reg {args.reg_weight:g}: train "
          f"{mean_pair_dice(pairs, field):.4f} ({seconds:.2f} s/it, loss "
          f"{sum(model.losses[:10]) / 10:.5f} -> {sum(model.losses[-10:]) / 10:.5f})", flush=True)
    if args.val:
        val = load_pairs(args.results, "val_pairs")
        print(f"  validation pairs: initial {mean_pair_dice(val, zero):.4f}, voxelmorph "
              f"{mean_pair_dice(val, field):.4f}", flush=True)
    if args.test:
        test = load_pairs(args.results, "test_pairs")
        print(f"  test pairs: initial {mean_pair_dice(test, zero):.4f}, voxelmorph "
              f"{mean_pair_dice(test, field):.4f}", flush=True)


def cmd_objective(args, pairs) -> None:
    from baselines.voxelmorph_mind import diffusion_loss, mind_loss
    from suits.mind import mind_ssc
    from suits.warp import warp

    def optimise(reg):
        def field(f, m, fa):
            target = mind_ssc(f)
            u = torch.zeros(1, 3, *f.shape[-3:], requires_grad=True)
            opt = torch.optim.Adam([u], lr=args.lr)
            for _ in range(args.iterations):
                loss = mind_loss(warp(m, u), target) + reg * diffusion_loss(u)
                opt.zero_grad()
                loss.backward()
                opt.step()
            return u.detach()
        return field

    for reg in args.reg_weight:
        print(f"  objective reg {reg:g} (Adam lr {args.lr:g}, {args.iterations} steps): "
              f"{mean_pair_dice(pairs, optimise(reg)):.4f}", flush=True)


def cmd_warp_space(args, pairs) -> None:
    from suits.modelfile import load_model
    from suits.register import MindRepresentation, register

    models = {"mind_ssc": MindRepresentation(factor=args.factor)}
    for name in ("featcnn_pretrained", "featcnn_suits"):
        path = args.results / "models" / f"{name}.pt"
        if path.exists():
            models[name] = load_model(path)
    moving, fixed = args.modalities
    for name, rep in models.items():
        for space in args.spaces:
            for lam in args.lam:
                t0 = time.perf_counter()
                with torch.no_grad():
                    d = mean_pair_dice(pairs, lambda f, m, fa: register(
                        f, m, rep, iterations=15, lam=lam, warp_space=space,
                        moving_modality=moving, fixed_modality=fixed))
                print(f"  {name} {space} lam {lam:g}: {d:.4f}   "
                      f"({(time.perf_counter() - t0) / len(pairs):.1f} s/pair)", flush=True)


def mattes_mi(fixed, moving, affine, bins: int = 32) -> float:
    """Full-image Mattes mutual information (SimpleITK, every voxel, higher = more similar)."""
    import SimpleITK as sitk

    from baselines.elastix_mi import to_sitk

    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(bins)
    r.SetMetricSamplingStrategy(r.NONE)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetInitialTransform(sitk.Transform(3, sitk.sitkIdentity))
    return -r.MetricEvaluate(to_sitk(fixed, affine), to_sitk(moving, affine))


def cmd_drift(args) -> None:
    import numpy as np

    from baselines.elastix_mi import register as elastix
    from baselines.elastix_params import parameter_map
    from suits.warp import warp, warp_labels
    from suitsbench import phantom
    from suitsbench.preprocess import normalise_image

    organs = sorted(phantom.LABELS)
    patients = []
    for seed in args.seeds:
        geom = phantom.make_geometry(seed, args.shape, args.spacing)
        ct, lab, aff = phantom.render(geom, "ct")
        f, m = normalise_image(phantom.render(geom, "mr")[0]), normalise_image(ct)
        lo, width = float(m.min()), float(m.max() - m.min()) / (32 - 4)   # elastix's bins
        where = {phantom.LABELS[k]: round(float(np.median((m[lab == k] - lo) / width)), 1)
                 for k in organs}
        where["fat"] = round(float((np.median(m[(ct > -300) & (ct < -50)]) - lo) / width), 1)
        print(f"  seed {seed}: CT organs at 32-bin histogram index {where}", flush=True)
        patients.append((f, m, lab, aff, ct > -500, mattes_mi(f, m, aff)))
    for text in args.overrides:
        pm = parameter_map(json.loads(text))
        rows = []
        for f, m, lab, aff, body, mi_truth in patients:
            u = elastix(f, m, aff, aff, pm, threads=args.threads)
            mag = torch.linalg.vector_norm(u[0], dim=0).numpy()
            warped = warp_labels(torch.from_numpy(lab.astype(np.int64))[None, None], u,
                                 len(organs) + 1).argmax(1)[0].numpy()
            mw = warp(torch.from_numpy(m)[None, None], u)[0, 0].numpy()
            rows.append((float(mag[body].mean()), mean_dice(lab, warped, organs), mi_truth,
                         mattes_mi(f, mw, aff)))
        r = np.array(rows)
        print(f"  elastix {text}: mean |u| in the body {r[:, 0].mean():.2f} voxels, Dice to the truth "
              f"{r[:, 1].mean():.3f}, full-image MI at the truth {r[:, 2].mean():.4f} -> at the "
              f"result {r[:, 3].mean():.4f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("results", type=Path, help="results/<dataset> of a finished run")
    common.add_argument("--pairs", type=int, default=None, help="training pairs scored (default all)")
    common.add_argument("--threads", type=int, default=2)
    # the scoring-only trials may score the test pairs (after a choice, never to make one)
    which = argparse.ArgumentParser(add_help=False)
    which.add_argument("--which", choices=("train_pairs", "val_pairs", "test_pairs"),
                       default="train_pairs",
                       help="pairs of split.json scored (default: the training pairs)")
    e = sub.add_parser("elastix", parents=[common, which])
    e.add_argument("overrides", nargs="+", help="JSON parameter-map overrides, one per candidate")
    mm = sub.add_parser("module", parents=[common, which],
                        help="a module method (suitsbench.methods) with candidate settings")
    mm.add_argument("method", help="convexadam, ants, or a module (dotted name or .py file)")
    mm.add_argument("settings", nargs="+", help="JSON settings, one object per candidate")
    v = sub.add_parser("voxelmorph", parents=[common])
    v.add_argument("--iterations", type=int, default=300)
    v.add_argument("--lr", type=float, default=1e-3)
    v.add_argument("--reg-weight", type=float, default=1.0)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--val", action="store_true", help="also score the validation pairs")
    v.add_argument("--test", action="store_true", help="also score the test pairs")
    o = sub.add_parser("objective", parents=[common])
    o.add_argument("--reg-weight", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    o.add_argument("--lr", type=float, default=0.05)
    o.add_argument("--iterations", type=int, default=200)
    w = sub.add_parser("warp-space", parents=[common, which])
    w.add_argument("--lam", type=float, nargs="+", default=[2.0])
    w.add_argument("--spaces", nargs="+", choices=("image", "features"), default=["image", "features"])
    w.add_argument("--modalities", nargs=2, default=("ct", "mr"), metavar=("MOVING", "FIXED"),
                   help="FeatCNN streams (data.moving_modality, data.fixed_modality)")
    w.add_argument("--factor", type=int, default=2, help="MIND-SSC feature grid factor")
    d = sub.add_parser("drift", help="same-patient CT -> MR phantom registrations")
    d.add_argument("overrides", nargs="+", help="JSON parameter-map overrides, one per candidate")
    d.add_argument("--seeds", type=int, nargs="+", default=[0, 6], help="phantom patients")
    d.add_argument("--shape", type=int, nargs=3, default=[80, 64, 64])
    d.add_argument("--spacing", type=float, default=2.0)
    d.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "drift":
        return cmd_drift(args)
    which = getattr(args, "which", "train_pairs")
    pairs = load_pairs(args.results, which, args.pairs)
    print(f"{len(pairs)} {which.replace('_', ' ')} of {args.results}; mean organ Dice; "
          f"initial {mean_pair_dice(pairs, zero):.4f}", flush=True)
    {"elastix": cmd_elastix, "module": cmd_module, "voxelmorph": cmd_voxelmorph, "objective": cmd_objective,
     "warp-space": cmd_warp_space}[args.command](args, pairs)


if __name__ == "__main__":
    main()
