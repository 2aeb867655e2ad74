"""The ``suits`` command line: ``suits pretrain | train | register``.

::

    suits pretrain --images ct a.nii.gz b.nii.gz --images mr c.nii.gz --out pretrained.pt
    suits train --pairs pairs.tsv --model pretrained.pt --out suits.pt
    suits register --fixed f.nii.gz --moving m.nii.gz --model suits.pt|mind --out field.nii.gz \\
        [--warped w.nii.gz] [--warp-labels ml.nii.gz --warped-labels wl.nii.gz]

Arguments may also be read from a file with ``@args.txt`` (one argument per line).

Model files are those of :mod:`suits.modelfile`; the pairs TSV of ``train`` is described in
:mod:`suits.pairs`.
Fields are written in the contract layout (``suits.io.save_field``) with the fixed image's affine.
Errors about the inputs are reported as one line on stderr (exit status 2).

The program is ``suits`` (or ``python -m suits``, :mod:`suits.__main__`), which tunes its process
first; :func:`main` is the library entry and leaves the calling process as it is.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from suits.modelfile import ModelFileError, load_model, load_representation, save_model
from suits.pairs import MASK_COLUMNS, PAIR_COLUMNS, PairsError, load_pairs, read_pairs
from suits.register import WARP_SPACES

__all__ = ["main", "build_parser", "CLIError", "setup_logging"]


class CLIError(Exception):
    """An input problem reported as a one-line error message."""


# --------------------------------------------------------------------------- helpers

def _existing(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{what}: file not found: {p}")
    return p


def _device(name: str | None) -> torch.device:
    """``None`` or ``"auto"``: CUDA if available, else the CPU; otherwise ``torch.device(name)``."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup_logging(quiet: bool = False) -> None:
    """Library messages to stderr: warnings only with ``quiet``, else from INFO on."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- subcommands

def cmd_pretrain(args: argparse.Namespace) -> int:
    from suits.pretrain import initial_model, load_images, pretrain

    device = _device(args.device)
    groups = []
    for group in args.images:
        if len(group) < 2:
            raise CLIError("--images needs a modality name followed by at least one image path")
        mod, paths = group[0], group[1:]
        groups.append((mod, [_existing(p, f"--images {mod}") for p in paths]))
    images = load_images(groups)
    modalities = tuple(args.modalities) if args.modalities else tuple(images)
    unknown = [m for m in images if m not in modalities]
    if unknown:
        raise CLIError(f"--images modality {unknown[0]!r} is not in --modalities {list(modalities)}")
    model = initial_model(modalities, args.downsample, args.seed, device)
    pretrain(model, images, args.iterations, lr=args.lr, radius=args.radius, dilation=args.dilation,
             seed=args.seed, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
             device=device, progress=not args.quiet, crop=args.crop)
    save_model(args.out, model)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from suits.train import train_suits

    device = _device(args.device)
    rows = read_pairs(_existing(args.pairs, "--pairs"))
    model = load_model(args.model, device=device)
    pairs = load_pairs(rows, args.pairs)
    train_suits(model, pairs, steps=args.steps, batch=args.batch, lr=args.lr, lam=args.lam,
                k_max=args.k_max, k_min=args.k_min, gamma=args.gamma, num_classes=args.num_classes,
                fixed_modality=args.fixed_modality, moving_modality=args.moving_modality,
                seed=args.seed, solver=args.solver, tol=args.tol, checkpoint=args.checkpoint,
                checkpoint_every=args.checkpoint_every, device=device, progress=not args.quiet,
                warp_space=args.warp_space, label_warp_space=args.label_warp_space)
    save_model(args.out, model)
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from suits.io import load_labels, load_volume, save_field, save_labels, save_volume
    from suits.register import register
    from suits.warp import warp, warp_labels

    device = _device(args.device)
    if (args.warp_labels is None) != (args.warped_labels is None):
        raise CLIError("--warp-labels (moving label map) and --warped-labels (output) go together")
    fixed, affine = load_volume(_existing(args.fixed, "--fixed"), device=device)
    moving, _ = load_volume(_existing(args.moving, "--moving"), device=device)
    labels = load_labels(_existing(args.warp_labels, "--warp-labels"), device=device)[0] \
        if args.warp_labels else None
    if fixed.shape != moving.shape:
        raise CLIError(f"moving image grid {tuple(moving.shape[-3:])} != fixed grid "
                       f"{tuple(fixed.shape[-3:])}; resample the moving image onto the fixed grid first")
    if labels is not None and labels.shape[-3:] != moving.shape[-3:]:
        raise CLIError(f"--warp-labels grid {tuple(labels.shape[-3:])} != moving grid {tuple(moving.shape[-3:])}")
    masks = {}
    for flag, key in (("--fixed-mask", "fixed_mask"), ("--moving-mask", "moving_mask")):
        path = getattr(args, key)
        if path is None:
            continue
        masks[key] = load_volume(_existing(path, flag), device=device)[0]
        if masks[key].shape[-3:] != fixed.shape[-3:]:
            raise CLIError(f"{flag} {path}: grid {tuple(masks[key].shape[-3:])} != image grid "
                           f"{tuple(fixed.shape[-3:])}; give the image's field-of-view mask")
    model = load_representation(args.model, (args.fixed_modality, args.moving_modality), device,
                                args.mind_factor, args.mind_radius, args.mind_dilation)
    u = register(fixed, moving, model, iterations=args.iterations, lam=args.lam, gamma=args.gamma,
                 fixed_modality=args.fixed_modality, moving_modality=args.moving_modality,
                 solver=args.solver, tol=args.tol, smooth=args.smooth, warp_space=args.warp_space,
                 **masks)
    save_field(args.out, u, affine)
    with torch.no_grad():
        if args.warped:
            save_volume(args.warped, warp(moving, u), affine)
        if labels is not None:
            K = args.num_classes or int(labels.max()) + 1
            save_labels(args.warped_labels, warp_labels(labels, u, K).argmax(1), affine)
    return 0


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    """The ``suits`` argument parser."""
    from suits import __version__

    p = argparse.ArgumentParser(prog="suits", fromfile_prefix_chars="@",
                                description="SUITS multi-modal 3D registration (Blendowski et al., MedIA 2020)")
    p.add_argument("--version", action="version", version=f"suits {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default: cpu)")
    common.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    common.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    sub = p.add_subparsers(dest="command", required=True, metavar="{pretrain,train,register}")

    a = sub.add_parser("pretrain", parents=[common], help="train a FeatCNN to replicate MIND-SSC")
    a.add_argument("--images", nargs="+", action="append", required=True, metavar="MOD PATH",
                   help="a modality name then its images; repeat per modality")
    a.add_argument("--out", required=True, help="model file to write")
    a.add_argument("--modalities", nargs="+", default=None,
                   help="FeatCNN streams (default: the --images modalities in order)")
    a.add_argument("--downsample", type=int, default=4, choices=(2, 4))
    a.add_argument("--iterations", type=int, default=5000)
    a.add_argument("--lr", type=float, default=1e-3)
    a.add_argument("--radius", type=int, default=2, help="MIND-SSC patch radius")
    a.add_argument("--dilation", type=int, default=2, help="MIND-SSC neighbour distance")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--checkpoint", default=None, help="rolling checkpoint (resumed if present)")
    a.add_argument("--checkpoint-every", type=int, default=100)
    a.add_argument("--crop", type=int, nargs="+", default=None, metavar="N",
                   help="train on random crops of this size (1 or 3 sizes, voxels); "
                        "default whole volumes (paper)")
    a.set_defaults(func=cmd_pretrain)

    t = sub.add_parser("train", parents=[common], help="SUITS end-to-end training (Algorithm 1)")
    t.add_argument("--pairs", required=True, help="TSV: " + ", ".join(PAIR_COLUMNS)
                   + " (optional: " + ", ".join(MASK_COLUMNS) + ")")
    t.add_argument("--model", required=True, help="pretrained model file")
    t.add_argument("--out", required=True, help="trained model file to write")
    t.add_argument("--steps", type=int, default=250)
    t.add_argument("--batch", type=int, default=3)
    t.add_argument("--lr", type=float, default=1e-5)
    t.add_argument("--lam", type=float, default=5.0)
    t.add_argument("--k-max", type=int, default=15)
    t.add_argument("--k-min", type=int, default=1, help="k_back is drawn from [k-min, k-max]")
    t.add_argument("--gamma", type=float, default=1.0)
    t.add_argument("--num-classes", type=int, default=None, help="including background")
    t.add_argument("--fixed-modality", default="mr")
    t.add_argument("--moving-modality", default="ct")
    t.add_argument("--solver", default=None, help="passed to suits.diffusion (e.g. torch, pyamg)")
    t.add_argument("--tol", type=float, default=1e-6)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint", default=None, help="rolling checkpoint (resumed if present)")
    t.add_argument("--checkpoint-every", type=int, default=25)
    t.add_argument("--warp-space", default="image", choices=WARP_SPACES,
                   help="tracked iteration: warp the moving grey-value image (Algorithm 1) or "
                        "its FeatCNN representation on the feature grid")
    t.add_argument("--label-warp-space", default="features", choices=WARP_SPACES,
                   help="label iterations: warp the moving label representation on the feature "
                        "grid (default) or the one-hot map on the image grid before pooling")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("register", parents=[common], help="register a moving image to a fixed image")
    r.add_argument("--fixed", required=True)
    r.add_argument("--moving", required=True, help="on the fixed grid (after affine alignment)")
    r.add_argument("--model", required=True, help="model file, or 'mind' for hand-crafted MIND-SSC")
    r.add_argument("--out", required=True, help="displacement field NIfTI (voxels, ijk)")
    r.add_argument("--warped", default=None, help="write the warped moving image here")
    r.add_argument("--warp-labels", default=None, help="moving label map to warp")
    r.add_argument("--warped-labels", default=None, help="write the warped label map here")
    r.add_argument("--num-classes", type=int, default=None, help="labels incl. background (default max+1)")
    r.add_argument("--iterations", type=int, default=15)
    r.add_argument("--lam", type=float, default=10.0)
    r.add_argument("--gamma", type=float, default=1.0)
    r.add_argument("--smooth", type=int, default=5, help="box filter size after upsampling")
    r.add_argument("--solver", default=None, help="passed to suits.diffusion (e.g. torch, pyamg)")
    r.add_argument("--tol", type=float, default=1e-6)
    r.add_argument("--fixed-modality", default="mr")
    r.add_argument("--moving-modality", default="ct")
    r.add_argument("--mind-factor", type=int, default=4, help="feature grid factor for --model mind")
    r.add_argument("--mind-radius", type=int, default=2)
    r.add_argument("--mind-dilation", type=int, default=2)
    r.add_argument("--warp-space", default="features", choices=WARP_SPACES,
                   help="warp the moving image's representation on the feature grid (features, "
                        "Sec. 3.2) or warp the image and represent it every iteration (image, "
                        "Fig. 1)")
    r.add_argument("--fixed-mask", default=None,
                   help="fixed field-of-view mask (1 = scan, 0 = padding): padding gets no weight")
    r.add_argument("--moving-mask", default=None,
                   help="moving field-of-view mask (1 = scan, 0 = padding): padding gets no weight")
    r.set_defaults(func=cmd_register)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``suits`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.quiet)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ModelFileError, PairsError) as e:
        print(f"suits {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"suits {args.command}: error: {e}", file=sys.stderr)
        return 1

