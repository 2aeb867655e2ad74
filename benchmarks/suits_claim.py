"""Does SUITS training beat its MIND pre-training? Measurements on a finished workflow run.

Reads ``results/<dataset>/`` of a run (``split.json``, ``aligned/`` or, without the affine
stage, ``prep/``, the pre-trained FeatCNN in
``models/``) and scores representations in the same iterative diffusion scheme by the mean
organ Dice of each pair (the evaluator's Dice). Pairs are the run's training pairs, or a
validation subset of them (``--val-subjects N``: the last N training subjects of each modality
form the validation pairs; the rest, the training pairs; a run with ``split.n_val`` has its
own validation pairs, used when ``--val-subjects`` is not given). Test pairs are never used unless
asked for with ``--pairs test`` (for a final report, never for a choice).

Sub-commands::

    # the scheme's ceiling: perfect features (one-hot labels as representations) beside
    # initial, MIND-SSC and the pre-trained FeatCNN
    .venv/bin/python benchmarks/suits_claim.py results/phantom ceiling [--pairs train]

    # SUITS training from the pre-trained FeatCNN, scored every --every steps on --pairs (of
    # another run with --score-on: e.g. all pairs of an independent phantom population)
    .venv/bin/python benchmarks/suits_claim.py results/phantom train --steps 60 --every 10 \
        --lr 1e-4 [--grad-A] [--k-min 0] [--lam 0.25] [--batch 3] [--pairs train|val|all] \
        [--score-on results/other] [--save folder]

    # model files (the first is the reference) on the pairs, with signed-rank tests
    .venv/bin/python benchmarks/suits_claim.py results/other --pairs all score \
        results/phantom/models/featcnn_pretrained.pt results/phantom/models/featcnn_suits.pt --mind

Field-of-view masks (``aligned/{id}_fov.nii.gz``) weight the data term in training and
registration, as in the workflow.

Every line printed is ``<what> <mean Dice> (<std over pairs>) [per-pair values]``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from suits.tuning import tune_process

tune_process()  # an entry point: tune this process before torch loads

import torch  # noqa: E402

from suits.io import load_labels, load_volume  # noqa: E402
from suits.register import MindRepresentation, register  # noqa: E402
from suits.train import label_iterations, train_suits  # noqa: E402
from suits.warp import one_hot, warp_labels  # noqa: E402
from suitsbench.metrics import dice  # noqa: E402
from suitsbench.pairid import pair_id, split_pair_id  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_settings import input_dir  # noqa: E402


def sides(pairs: list[str]) -> tuple[list[str], list[str]]:
    """The sorted moving ids and fixed ids of the pair names ``pairs``."""
    ids = [split_pair_id(p) for p in pairs]
    return sorted({m for m, _ in ids}), sorted({f for _, f in ids})


def split_pairs(results: Path, which: str, val_subjects: int) -> list[str]:
    """Pair names of ``which`` (train | val | test) from ``split.json``: the run's own
    validation pairs when it has them (``split.n_val``) and ``val_subjects`` is 0; otherwise
    train and val come from the run's training pairs (the last ``val_subjects`` subjects of each modality are
    validation, pairs between two validation subjects are validation pairs, pairs between two
    remaining training subjects are training pairs; mixed pairs are left out)."""
    split = json.loads((results / "split.json").read_text())
    split = next(iter(split.values())) if "train_pairs" not in split else split
    if which == "test":
        return list(split["test_pairs"])
    if which == "all":  # every moving x fixed pair of the run's subjects (an independent set)
        moving, fixed = sides([*split["train_pairs"], *split.get("val_pairs", []),
                               *split["test_pairs"]])
        return [pair_id(m, f) for m in moving for f in fixed]
    pairs = list(split["train_pairs"])
    if split.get("val_pairs") and val_subjects <= 0:
        # the run's own validation split (split.n_val)
        return list(split["val_pairs"]) if which == "val" else pairs
    if val_subjects <= 0:
        if which == "val":
            raise SystemExit("--pairs val needs a run with split.n_val >= 1 or --val-subjects N >= 1")
        return pairs
    moving, fixed = sides(pairs)
    val = set(moving[-val_subjects:]) | set(fixed[-val_subjects:])
    if which == "val":
        return [p for p in pairs if set(split_pair_id(p)) <= val]
    return [p for p in pairs if not set(split_pair_id(p)) & val]


def load_pairs(results: Path, names: list[str]) -> list[dict[str, torch.Tensor]]:
    aligned = input_dir(results)
    pairs = []
    for name in names:
        moving, fixed = split_pair_id(name)
        f, _ = load_volume(aligned / f"{fixed}_image.nii.gz")
        m, _ = load_volume(aligned / f"{moving}_image.nii.gz")
        fl, _ = load_labels(aligned / f"{fixed}_label.nii.gz")
        ml, _ = load_labels(aligned / f"{moving}_label.nii.gz")
        pair = {"name": name, "fixed": f, "moving": m, "fixed_labels": fl.long(),
                "moving_labels": ml.long()}
        fov = {k: aligned / f"{i}_fov.nii.gz" for k, i in (("fixed_fov", fixed), ("moving_fov", moving))}
        if all(path.is_file() for path in fov.values()):  # as the workflow: masks weight the data term
            pair.update({k: load_labels(path)[0].float() for k, path in fov.items()})
        pairs.append(pair)
    return pairs


def pair_dice(pairs, field_of) -> list[float]:
    """Per pair, the mean organ Dice (organs present in either map) after warping the moving
    labels by ``field_of(pair)``."""
    out = []
    for p in pairs:
        fl = p["fixed_labels"][0, 0].numpy()
        labels = sorted(int(v) for v in np.union1d(np.unique(fl), np.unique(p["moving_labels"])) if v > 0)
        w = warp_labels(p["moving_labels"], field_of(p), max(labels) + 1).argmax(1)[0].numpy()
        out.append(float(np.nanmean(list(dice(fl, w, labels).values()))))
    return out


def report(what: str, values: list[float], seconds: float | None = None) -> None:
    v = np.asarray(values)
    extra = f"  {seconds:.1f} s" if seconds is not None else ""
    print(f"{what:<44} {v.mean():.4f} ({v.std(ddof=1) if len(v) > 1 else 0:.4f})  "
          f"[{' '.join(f'{x:.3f}' for x in v)}]{extra}", flush=True)


def load_pretrained(results: Path):
    from suits.modelfile import load_model

    return load_model(results / "models" / "featcnn_pretrained.pt")


def featcnn_field(model, args):
    def field(p):
        with torch.no_grad():
            return register(p["fixed"], p["moving"], model, iterations=args.iterations, lam=args.lam,
                            moving_modality=args.modalities[0], fixed_modality=args.modalities[1],
                            warp_space=args.warp_space, fixed_mask=p.get("fixed_fov"),
                            moving_mask=p.get("moving_fov"))
    return field


def cmd_ceiling(pairs, results: Path, args) -> None:
    model = load_pretrained(results).eval()
    f = int(model.factor)
    K = 1 + max(int(p[k].max()) for p in pairs for k in ("fixed_labels", "moving_labels"))
    rows = [
        ("initial", lambda p: torch.zeros(1, 3, *p["fixed"].shape[-3:])),
        (f"MIND-SSC (factor {f})", featcnn_field(MindRepresentation(f), args)),
        ("pre-trained FeatCNN", featcnn_field(model, args)),
        ("one-hot labels (perfect features)",
         lambda p: label_iterations(one_hot(p["fixed_labels"], K), one_hot(p["moving_labels"], K),
                                    args.iterations, args.lam, f, warp_space="features")),
    ]
    for what, field in rows:
        t0 = time.perf_counter()
        report(what, pair_dice(pairs, field), time.perf_counter() - t0)


def cmd_train(pairs, results: Path, args) -> None:
    train_names = split_pairs(results, "train", args.val_subjects)
    train = load_pairs(results, train_names)
    model = load_pretrained(results)
    print(f"# SUITS training on {len(train)} pairs, scored on {len(pairs)} {args.pairs} pairs; "
          f"lr {args.lr:g} batch {args.batch} lam {args.train_lam:g} k_back in [{args.k_min}, "
          f"{args.k_max}] grad_A {args.grad_A} warp_space {args.train_warp_space} untracked "
          f"{args.untracked} seed {args.seed}",
          flush=True)
    from suits.modelfile import save_model

    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        save_model(args.save / "step0.pt", model)
    model.eval()
    if not args.no_score:
        report("step 0", pair_dice(pairs, featcnn_field(model, args)))
    losses: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "suits.pt"
        for steps in range(args.every, args.steps + 1, args.every):
            t0 = time.perf_counter()
            model, losses = train_suits(model, train, steps=steps, batch=args.batch, lr=args.lr,
                                        lam=args.train_lam, k_max=args.k_max, k_min=args.k_min,
                                        seed=args.seed, checkpoint=ckpt, checkpoint_every=0,
                                        progress=False, grad_A=args.grad_A,
                                        warp_space=args.train_warp_space,
                                        untracked=args.untracked,
                                        moving_modality=args.modalities[0],
                                        fixed_modality=args.modalities[1])
            dt = time.perf_counter() - t0
            if args.save:
                save_model(args.save / f"step{steps}.pt", model)
            model.eval()
            recent = float(np.mean(losses[-args.every:]))
            what = f"step {steps} (loss {recent:.4f}, {dt / args.every:.1f} s/step)"
            if args.no_score:
                print(what, flush=True)
            else:
                report(what, pair_dice(pairs, featcnn_field(model, args)))


def cmd_score(pairs, results: Path, args) -> None:
    """Each model file (and MIND-SSC with ``--mind``) on the pairs; the signed-rank test of
    every row against the first model."""
    from scipy.stats import wilcoxon
    from suits.modelfile import load_model

    models = [load_model(m).eval() for m in args.model]
    rows = [(str(m), featcnn_field(net, args)) for m, net in zip(args.model, models)]
    if args.mind:
        f = int(models[0].factor)
        rows.append((f"MIND-SSC (factor {f})", featcnn_field(MindRepresentation(f), args)))
    rows.insert(0, ("initial", lambda p: torch.zeros(1, 3, *p["fixed"].shape[-3:])))
    scores = {}
    for what, field in rows:
        t0 = time.perf_counter()
        scores[what] = np.asarray(pair_dice(pairs, field))
        report(what, scores[what], time.perf_counter() - t0)
    ref = str(args.model[0])
    for what, v in scores.items():
        if what != ref:
            d = v - scores[ref]
            print(f"{what} - {ref}: mean {d.mean():+.4f} (sd {d.std(ddof=1):.4f}), "
                  f"better on {int((d > 0).sum())} of {len(d)} pairs, signed-rank p = "
                  f"{wilcoxon(v, scores[ref]).pvalue:.2g}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--pairs", choices=("train", "val", "test", "all"), default="train",
                    help="all: every moving x fixed pair of the run's subjects (for a run whose "
                    "subjects are independent of the models scored)")
    ap.add_argument("--val-subjects", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--lam", type=float, default=0.5, help="test-time lambda")
    ap.add_argument("--warp-space", choices=("features", "image"), default="image",
                    help="test-time warp space")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modalities", nargs=2, default=("ct", "mr"), metavar=("MOVING", "FIXED"),
                    help="FeatCNN streams (data.moving_modality, data.fixed_modality)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ceiling")
    t = sub.add_parser("train")
    t.add_argument("--steps", type=int, default=60)
    t.add_argument("--every", type=int, default=10)
    t.add_argument("--lr", type=float, default=1e-5)
    t.add_argument("--batch", type=int, default=3)
    t.add_argument("--train-lam", type=float, default=0.25)
    t.add_argument("--k-min", type=int, default=1)
    t.add_argument("--k-max", type=int, default=15)
    t.add_argument("--grad-A", action="store_true")
    t.add_argument("--train-warp-space", choices=("features", "image"), default="image")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--untracked", choices=("labels", "features"), default="labels",
                   help="representations of the k_back - 1 iterations without gradients")
    t.add_argument("--score-on", type=Path, default=None,
                   help="score every --every steps on the --pairs of this run instead (e.g. "
                   "an independent phantom run with --pairs all)")
    t.add_argument("--save", type=Path, default=None,
                   help="folder for the model file of every scored step (step<N>.pt)")
    t.add_argument("--no-score", action="store_true",
                   help="only train and save (score the saved models with `score` later)")
    sc = sub.add_parser("score")
    sc.add_argument("model", type=Path, nargs="+", help="model files; the first is the reference")
    sc.add_argument("--mind", action="store_true", help="also MIND-SSC on the first model's grid")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    scored = getattr(args, "score_on", None) or args.results
    names = split_pairs(scored, args.pairs, args.val_subjects)
    pairs = load_pairs(scored, names)
    print(f"# {args.cmd} on {len(pairs)} {args.pairs} pairs of {scored}; test-time "
          f"{args.iterations} iterations, lam {args.lam:g}, warp_space {args.warp_space}", flush=True)
    {"ceiling": cmd_ceiling, "train": cmd_train, "score": cmd_score}[args.cmd](pairs, args.results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
