"""Pre-training the FeatCNN as a MIND-SSC replicator (paper Sec. 4.2).

Every iteration draws one random image per modality (seeded ``torch.Generator``), passes it
through that modality's stream and takes the L1 distance to the MIND-SSC descriptor of the same
image on the feature grid; the modalities' losses are averaged and one Adam step is taken.
MIND targets are computed once per image and cached. Periodic checkpoints (``suits.checkpoint``)
hold the weights, the Adam state, the sampling generator and the loss history, so a run resumed
from its checkpoint ends with exactly the weights of an uninterrupted run (bitwise on CPU).

Validation (optional, every ``validate_every`` steps, before the first and after the last): the
replication loss on held-out images (:func:`replication_loss`, whole volumes) and a score of
the model such as a :class:`suits.validation.Validator`'s validation Dice; both are kept in
the checkpoint and do not change the training.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from suits import checkpoint as ckpt
from suits.featcnn import FeatCNN
from suits.mind import mind_ssc
from suits.validation import ValidationLog

__all__ = ["pretrain", "mind_target", "load_images", "initial_model", "replication_loss"]

logger = logging.getLogger(__name__)

LogFn = Callable[[int, float], None]
ValidateFn = Callable[[nn.Module], float]


def mind_target(img: torch.Tensor, factor: int, radius: int = 2, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC of ``img`` (computed on the image grid) on a stride-``factor`` feature grid:
    feature voxel ``i`` takes the descriptor at image voxel ``i*factor`` (the FeatCNN grid
    convention; shape ``ceil(n / factor)``)."""
    f = int(factor)
    return mind_ssc(img, radius=radius, dilation=dilation)[..., ::f, ::f, ::f]


def load_images(groups: Sequence[tuple[str, Sequence[str | os.PathLike]]]
                ) -> dict[str, list[torch.Tensor]]:
    """The pre-training images per modality: each ``(modality, paths)`` group read with
    :func:`suits.io.load_volume`; groups of one modality are joined in the order given, the
    modalities keep the order of their first group."""
    from suits.io import load_volume

    images: dict[str, list[torch.Tensor]] = {}
    for mod, paths in groups:
        images.setdefault(mod, []).extend(load_volume(p)[0] for p in paths)
    return images


def initial_model(modalities: Sequence[str], downsample: int, seed: int,
                  device: torch.device | str | None = None) -> FeatCNN:
    """A new FeatCNN with one stream per modality, its weights drawn after
    ``torch.manual_seed(seed)``: the model :func:`pretrain` starts from."""
    torch.manual_seed(seed)
    return FeatCNN(modalities=tuple(modalities), downsample=downsample, device=device)


def _check_images(model: FeatCNN, images: Mapping[str, Sequence[torch.Tensor]],
                  what: str = "images") -> list[str]:
    if not images:
        raise ValueError(f"pretrain: no {what} given")
    known = list(getattr(model, "modalities", images.keys()))
    for mod, vols in images.items():
        if mod not in known:
            raise ValueError(f"pretrain: {what}: modality {mod!r} has no FeatCNN stream "
                             f"(streams: {known})")
        if len(vols) == 0:
            raise ValueError(f"pretrain: no {what} for modality {mod!r}")
        for v in vols:
            if v.dim() != 5 or v.shape[:2] != (1, 1):
                raise ValueError(f"pretrain: {what} must be (1, 1, D, H, W), got "
                                 f"{tuple(v.shape)} for modality {mod!r}")
    return [m for m in known if m in images]  # fixed order: the model's stream order


def replication_loss(model: nn.Module, images: Mapping[str, Sequence[torch.Tensor]],
                     radius: int = 2, dilation: int = 2,
                     targets: dict[tuple[str, int], torch.Tensor] | None = None) -> float:
    """The pre-training loss on whole volumes, without a gradient: per modality the mean over
    its images of the L1 distance between ``model(x, modality)`` and :func:`mind_target`,
    averaged over the modalities. ``targets``: a cache of the MIND targets (filled on first
    use). The images are moved to the model's device; the model's train/eval mode is kept."""
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    order = [m for m in getattr(model, "modalities", images.keys()) if m in images]
    targets = {} if targets is None else targets
    was_training = model.training
    model.eval()
    try:
        per_mod = []
        with torch.no_grad():
            for mod in order:
                vals = []
                for idx, img in enumerate(images[mod]):
                    x = img.to(device=device, dtype=torch.float32)
                    if (mod, idx) not in targets:
                        targets[(mod, idx)] = mind_target(x, int(model.factor), radius, dilation)
                    vals.append(float(F.l1_loss(model(x, mod), targets[(mod, idx)])))
                per_mod.append(sum(vals) / len(vals))
    finally:
        model.train(was_training)
    return sum(per_mod) / len(per_mod)


def pretrain(model: FeatCNN, images: Mapping[str, Sequence[torch.Tensor]], iterations: int,
             lr: float = 1e-3, radius: int = 2, dilation: int = 2, seed: int = 0,
             checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 100,
             log: LogFn | None = None, device: torch.device | str | None = None,
             progress: bool = True, crop: int | Sequence[int] | None = None,
             val_images: Mapping[str, Sequence[torch.Tensor]] | None = None,
             validate: ValidateFn | None = None, validate_every: int = 0,
             curve: dict[str, list[tuple[int, float]]] | None = None,
             snapshots: list[tuple[int, dict]] | None = None
             ) -> tuple[FeatCNN, list[float]]:
    """Train ``model`` to replicate MIND-SSC.

    Args:
        model: a :class:`suits.featcnn.FeatCNN` (anything with ``factor``, ``modalities`` and
            ``model(x, modality)``).
        images: modality name -> list of ``(1, 1, D, H, W)`` volumes (sizes may differ).
        iterations: total number of Adam steps (a resumed run counts the steps already done).
        lr: Adam learning rate (paper: 1e-3).
        radius, dilation: MIND-SSC parameters of the target.
        seed: seed of the generator drawing the images.
        checkpoint: path of a rolling checkpoint file; if it exists the run resumes from it.
        checkpoint_every: write the checkpoint every this many steps (and at the end).
        log: optional callback ``log(step, loss)`` after every step (``step`` counts from 1).
        device: where to train; default the model's device. Images are moved there.
        progress: show a tqdm progress bar.
        crop: train on a random crop of this size (voxels, one int or one per axis, rounded
            down to a multiple of the model's factor) of the drawn image instead of the whole
            volume; the target is the same crop of the whole image's MIND-SSC on the feature
            grid. ``None`` (default, the paper): whole volumes. Axes shorter than the crop are
            taken whole.
        val_images: held-out images per modality (like ``images``): their
            :func:`replication_loss` (whole volumes) is the validation loss ``val_loss``.
        validate: ``validate(model) -> score`` (e.g. a :class:`suits.validation.Validator`'s
            mean validation Dice), recorded as ``val_dice``.
        validate_every: steps between validations, which also run before the first step and
            after the last (0: only those two).
        curve: if given, filled with ``{"val_loss": [(step, value), ...], "val_dice": [...]}``
            (the measures given; also the validations before a resume, kept in the checkpoint).
        snapshots: if given, filled with ``(step, state_dict)`` of every step a validation is
            due at (before the first, every ``validate_every``, after the last; also those
            before a resume, kept in the checkpoint), so that another process can score them
            (e.g. the validation Dice on pairs that are not ready yet when training starts).

    Returns:
        ``(model, losses)``: the trained model (in place) and the loss of every step so far
        (including the steps before a resume).
    """
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device).train()
    order = _check_images(model, images)
    factor = int(model.factor)
    measures: dict[str, ValidateFn] = {}
    if val_images is not None:
        _check_images(model, val_images, "validation images")
        val_targets: dict[tuple[str, int], torch.Tensor] = {}
        measures["val_loss"] = lambda m: replication_loss(m, val_images, radius, dilation,
                                                          val_targets)
    if validate is not None:
        measures["val_dice"] = validate
    validation = ValidationLog(measures, validate_every, iterations, "pretrain",
                               keep_weights=snapshots is not None)

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    rolling = ckpt.RollingCheckpoint(
        checkpoint, model, opt, gen, iterations, checkpoint_every,
        {"losses": (losses, float), **validation.history()},
        dict(seed=seed, iterations=iterations, lr=lr, radius=radius, dilation=dilation), logger)
    start, _ = rolling.resume(device)
    validation.resumed(model, start)

    cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def sample(mod: str, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (mod, idx)
        if key not in cache:
            x = images[mod][idx].to(device=device, dtype=torch.float32)
            with torch.no_grad():
                cache[key] = (x, mind_target(x, factor, radius, dilation))
        return cache[key]

    crop_size = None
    if crop is not None:
        c = (int(crop),) if isinstance(crop, int) else tuple(int(v) for v in crop)
        c = c * 3 if len(c) == 1 else c
        if len(c) != 3 or min(c) < factor:
            raise ValueError(f"crop must be one size or three sizes >= the factor {factor}, got {crop}")
        crop_size = tuple(v // factor * factor for v in c)

    def window(x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if crop_size is None:
            return x, target
        xs, ts = [slice(None)] * 2, [slice(None)] * 2
        for n, nt, c in zip(x.shape[2:], target.shape[2:], crop_size):
            if c >= n:
                xs.append(slice(None))
                ts.append(slice(None))
                continue
            o = int(torch.randint((n - c) // factor + 1, (1,), generator=gen)) * factor
            xs.append(slice(o, o + c))
            ts.append(slice(o // factor, o // factor + c // factor))
        return x[tuple(xs)], target[tuple(ts)]

    bar = tqdm(range(start, int(iterations)), initial=start, total=int(iterations),
               desc="pretrain (MIND)", disable=not progress)
    for step in bar:
        total = torch.zeros((), device=device)
        for mod in order:
            idx = int(torch.randint(len(images[mod]), (1,), generator=gen))
            x, target = window(*sample(mod, idx))
            total = total + F.l1_loss(model(x, mod), target)
        loss = total / len(order)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = float(loss.detach())
        losses.append(value)
        done = step + 1
        logger.debug("pretrain step %d loss %.6f", done, value)
        if log is not None:
            log(done, value)
        bar.set_postfix(loss=f"{value:.4f}")
        validation(model, done)
        rolling.after_step(done)
    bar.close()
    if start < iterations:
        rolling.save(int(iterations))
        logger.info("pretrain finished: %d steps, last loss %.6f", iterations, losses[-1])
    if curve is not None:
        curve.clear()
        curve.update(validation.columns())
    if snapshots is not None:
        snapshots[:] = validation.snapshots()
    return model, losses
