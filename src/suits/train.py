"""End-to-end SUITS training of the FeatCNN (Algorithm 1 of the paper).

Per step:

1. a seeded draw (``torch.Generator``, state kept in the checkpoint) of a batch of pairs and of
   ``k_back`` uniformly in ``[k_min, k_max]``;
2. ``k_back - 1`` iterations of Eq. (2) **without gradients** on the label maps: one-hot
   labels (background included) are the representations, brought to the feature grid by a
   centred box filter of size ``label_smooth`` followed by sampling every ``f``-th voxel (feature
   voxel ``i`` = image voxel ``i*f``, the FeatCNN convention); ``label_warp_space="features"``
   (default) warps that moving representation on the feature grid by ``u^{k-1}`` ("warping the
   moving image R_mov with u^{k-1}", R_mov being the label representation), ``"image"`` warps
   the one-hot map on the image grid before pooling it (as the grey-value image is warped
   before the FeatCNN; 3-4 s more per mean step at the paper's size);
3. one tracked iteration: ``R_fix = FeatCNN(fixed)``, ``R_mov = FeatCNN(warp(moving,
   u^{k_back-1}))``, ``Δu`` by the differentiable Gauss-Newton step, ``u^{k_back}``;
4. the moving one-hot labels warped by ``u^{k_back}`` (trilinear per channel, probabilities),
   loss = cross-entropy against ``argmax S_fix`` (NLL of ``log(p + eps)``); Adam.

``k_back = 0`` (the paper's "k_back in [0, 15]") is treated like ``k_back = 1``: no label
iterations, the tracked iteration starts from ``u^0 = 0``. The default draws from
``[1, k_max]``; ``k_min=0`` reproduces the paper's range literally (then 1 is twice as likely).

The pairs of a batch are processed one after the other with gradient accumulation (loss
averaged over the batch): identical to a batched loss (instance norm is per sample) but needs
the memory of one pair and allows pairs of different sizes.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from suits import checkpoint as ckpt
from suits.register import check_warp_space, feature_grid_iterations, iterate, padding_masks
from suits.warp import box_filter, box_filter_strided, one_hot, warped_label_probability

__all__ = ["train_suits", "draw_step", "label_representation", "label_iterations",
           "feature_iterations", "tracked_iteration", "guidance_loss", "infer_num_classes"]

logger = logging.getLogger(__name__)

LogFn = Callable[[int, float], None]
ValidateFn = Callable[[nn.Module], float]
SELECT = ("last", "best")
UNTRACKED = ("labels", "features")
EPS = 1e-8


def draw_step(gen: torch.Generator, n_pairs: int, batch: int, k_min: int, k_max: int) -> tuple[list[int], int]:
    """Pair indices of one batch (without replacement when ``batch <= n_pairs``, else with
    replacement) and ``k_back`` uniform in ``[k_min, k_max]``, both from ``gen``."""
    if n_pairs < 1:
        raise ValueError("no training pairs")
    if not 0 <= k_min <= k_max:
        raise ValueError(f"need 0 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    if batch <= n_pairs:
        idx = torch.randperm(n_pairs, generator=gen)[:batch].tolist()
    else:
        idx = torch.randint(n_pairs, (batch,), generator=gen).tolist()
    k_back = int(torch.randint(k_min, k_max + 1, (1,), generator=gen))
    return idx, k_back


def label_representation(onehot: torch.Tensor, factor: int, label_smooth: int | None = None) -> torch.Tensor:
    """One-hot labels ``(B, K, D, H, W)`` on the feature grid: centred box filter of size
    ``label_smooth`` (default ``f+1`` for even ``f``, ``f`` for odd; 1 = none), then every
    ``f``-th voxel (``ceil(n/f)`` voxels, feature voxel ``i`` = image voxel ``i*f``)."""
    f = int(factor)
    if label_smooth is None:
        label_smooth = f + 1 if f % 2 == 0 else f
    size = int(label_smooth)
    if f == 1:
        return box_filter(onehot, size)
    if size > 1 and size % 2 == 0:
        raise ValueError(f"label_smooth must be odd (centred), got {size}")
    # == box_filter(onehot, size)[..., ::f, ::f, ::f] (replicate padding), evaluated only at
    # the strided voxels, as one averaging matrix per axis
    return box_filter_strided(onehot, size, f)


def _zero_field(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """The zero displacement ``(B, 3, D, H, W)`` on the fixed grid, ``B`` the larger batch."""
    B = max(fixed.shape[0], moving.shape[0])
    return torch.zeros((B, 3, *fixed.shape[-3:]), device=fixed.device, dtype=fixed.dtype)


def label_iterations(fixed_onehot: torch.Tensor, moving_onehot: torch.Tensor, n: int, lam: float,
                     factor: int, gamma: float = 1.0, smooth: int = 5, solver: object | None = None,
                     tol: float = 1e-6, label_smooth: int | None = None,
                     warp_space: str = "image",
                     masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``n`` iterations of Eq. (2) with the label maps as representations, without gradients;
    returns ``u^n`` on the image grid (zeros for ``n <= 0``). ``warp_space="image"`` warps the
    moving one-hot map on the image grid before pooling it to the feature grid;
    ``"features"`` pools it once and warps the pooled map on the feature grid, keeping the field
    there between iterations (:func:`suits.register.feature_grid_iterations`). ``masks``: the
    pooled field-of-view masks weighting the data term (:func:`suits.register.padding_masks`)."""
    u = _zero_field(fixed_onehot, moving_onehot)
    if n <= 0:
        return u
    with torch.no_grad():
        represent = lambda x: label_representation(x, factor, label_smooth)  # noqa: E731
        r_fix = represent(fixed_onehot)
        if check_warp_space(warp_space) == "features":
            return feature_grid_iterations(r_fix, represent(moving_onehot), u.shape[-3:], int(n),
                                           lam, gamma=gamma, factor=factor, smooth=smooth,
                                           solver=solver, tol=tol, masks=masks)
        for _ in range(int(n)):
            u, _ = iterate(r_fix, represent, moving_onehot, u, lam, gamma=gamma, factor=factor,
                           smooth=smooth, solver=solver, tol=tol, warp_space=warp_space,
                           masks=masks)
    return u


def feature_iterations(model: Callable[[torch.Tensor, str], torch.Tensor], fixed: torch.Tensor,
                       moving: torch.Tensor, n: int, lam: float, fixed_modality: str = "mr",
                       moving_modality: str = "ct", gamma: float = 1.0, smooth: int = 5,
                       solver: object | None = None, tol: float = 1e-6,
                       masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``n`` iterations of Eq. (2) with the model's own features, without gradients: the
    features of the fixed and moving images, the moving ones warped on the feature grid
    (:func:`suits.register.feature_grid_iterations`); returns ``u^n`` on the image grid (zeros
    for ``n <= 0``)."""
    if n <= 0:
        return _zero_field(fixed, moving)
    with torch.no_grad():
        return feature_grid_iterations(model(fixed, fixed_modality), model(moving, moving_modality),
                                       fixed.shape[-3:], int(n), lam, gamma=gamma,
                                       factor=int(getattr(model, "factor", 1)), smooth=smooth,
                                       solver=solver, tol=tol, masks=masks)


def tracked_iteration(model: Callable[[torch.Tensor, str], torch.Tensor], fixed: torch.Tensor,
                      moving: torch.Tensor, u: torch.Tensor, lam: float,
                      fixed_modality: str = "mr", moving_modality: str = "ct", gamma: float = 1.0,
                      smooth: int = 5, solver: object | None = None, tol: float = 1e-6,
                      grad_A: bool = False, warp_space: str = "image",
                      masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The iteration at ``k_back`` with autograd: FeatCNN features of the fixed image and of
    the moving grey-value image warped by ``u`` (``u^{k_back-1}``, treated as a constant;
    ``warp_space="features"``: the features of the moving image, warped on the feature grid);
    returns ``u^{k_back}`` (differentiable w.r.t. the model weights). ``masks``: pooled
    field-of-view masks weighting the data term (:func:`suits.register.padding_masks`)."""
    u = u.detach()
    r_fix = model(fixed, fixed_modality)
    source = model(moving, moving_modality) if check_warp_space(warp_space) == "features" else moving
    u_new, _ = iterate(r_fix, lambda x: model(x, moving_modality), source, u, lam, gamma=gamma,
                       factor=int(getattr(model, "factor", 1)), smooth=smooth, solver=solver,
                       tol=tol, grad_A=grad_A, warp_space=warp_space, masks=masks)
    return u_new


def guidance_loss(moving_labels: torch.Tensor, fixed_labels: torch.Tensor, u: torch.Tensor,
                  num_classes: int, eps: float = EPS) -> torch.Tensor:
    """Eq. (3): cross-entropy of the warped (trilinear, non one-hot) moving label probabilities
    against the fixed index map: ``nll(log(p + eps), argmax S_fix)``, mean over voxels.

    Equals ``F.nll_loss(torch.log(warp_labels(moving_labels, u, num_classes) + eps), target)``
    but only the target class's channel of the warped one-hot map is formed
    (:func:`suits.warp.warped_label_probability`), so ``num_classes`` does not enter the
    computation (kept for the signature); labels are range-checked where the one-hot maps are
    built (:func:`train_suits`)."""
    return -torch.log(warped_label_probability(moving_labels, u, fixed_labels) + eps).mean()


def infer_num_classes(pairs: Sequence[Mapping[str, torch.Tensor]]) -> int:
    """``1 + `` the largest label value over all fixed and moving label maps."""
    return 1 + max(int(p[key].max()) for p in pairs for key in ("fixed_labels", "moving_labels"))


def _check_pairs(pairs: Sequence[Mapping[str, torch.Tensor]]) -> None:
    if len(pairs) == 0:
        raise ValueError("train_suits: no training pairs")
    for i, p in enumerate(pairs):
        missing = {"fixed", "moving", "fixed_labels", "moving_labels"} - set(p)
        if missing:
            raise ValueError(f"train_suits: pair {i} lacks {sorted(missing)}")
        shapes = {k: tuple(p[k].shape) for k in ("fixed", "moving", "fixed_labels", "moving_labels")}
        if len({s[-3:] for s in shapes.values()}) != 1 or any(len(s) != 5 or s[:2] != (1, 1) for s in shapes.values()):
            raise ValueError(f"train_suits: pair {i} must hold (1, 1, D, H, W) tensors on one grid, got {shapes}")


def train_suits(model: nn.Module, pairs: Sequence[Mapping[str, torch.Tensor]], steps: int = 250,
                batch: int = 3, lr: float = 1e-5, lam: float = 5.0, k_max: int = 15,
                gamma: float = 1.0, num_classes: int | None = None, fixed_modality: str = "mr",
                moving_modality: str = "ct", seed: int = 0, solver: object | None = None,
                checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 25,
                device: torch.device | str | None = None, log: LogFn | None = None,
                progress: bool = True, k_min: int = 1, smooth: int = 5, tol: float = 1e-6,
                grad_A: bool = False, label_smooth: int | None = None,
                eps: float = EPS, warp_space: str = "image",
                label_warp_space: str = "features", validate: ValidateFn | None = None,
                validate_every: int = 0, select: str = "last",
                curve: list[tuple[int, float]] | None = None,
                initial_score: float | None = None,
                untracked: str = "labels") -> tuple[nn.Module, list[float]]:
    """Algorithm 1: adapt a (MIND-pretrained) FeatCNN end to end through the registration.

    Args:
        model: a :class:`suits.featcnn.FeatCNN` (anything with ``factor`` and
            ``model(x, modality)``); trained in place.
        pairs: dicts with ``fixed``, ``moving`` ``(1, 1, D, H, W)`` float images and
            ``fixed_labels``, ``moving_labels`` ``(1, 1, D, H, W)`` integer index maps on the
            same grid; optionally ``fixed_fov``, ``moving_fov`` field-of-view masks (1 = scan,
            0 = padding) that weight the data term of every iteration, as at test time
            (:func:`suits.register.register`).
        steps: total number of Adam steps (paper: 250; a resumed run counts those done).
        batch: pairs per step (paper: 3), accumulated one pair at a time.
        lr: Adam learning rate (paper: 1e-5).
        lam: λ during training (paper: 5).
        k_max, k_min: ``k_back`` is drawn uniformly from ``[k_min, k_max]`` (paper: 15; see the
            module docstring for ``k_back = 0``).
        gamma: step size γ.
        num_classes: ``K`` including background; default from the labels.
        fixed_modality, moving_modality: FeatCNN stream names.
        seed: seed of the generator drawing pairs and ``k_back``.
        solver, tol, grad_A: passed to :func:`suits.diffusion.gauss_newton_step`.
        checkpoint: rolling checkpoint file; if it exists the run resumes from it.
        checkpoint_every: write it every this many steps (and at the end).
        device: where to train (default: the model's device); pairs are moved there per step.
        log: ``log(step, loss)`` after every step (``step`` from 1).
        progress: tqdm progress bar.
        smooth: box filter size of the update upsampling (paper: 5).
        label_smooth: box size for the label representations (see :func:`label_representation`).
        eps: inside ``log(p + eps)``.
        warp_space: where the tracked iteration warps the moving side (``"image"``: the grey
            value image, then FeatCNN, Algorithm 1 literally; ``"features"``: the FeatCNN
            features of the moving image on the feature grid, see :func:`suits.register.register`).
        label_warp_space: where the label iterations warp the moving label representation
            (``"features"``: the pooled one-hot map on the feature grid; ``"image"``: the
            one-hot map on the image grid, then pooled; see :func:`label_iterations`).
        validate: ``validate(model) -> score`` (higher is better, e.g. a
            :class:`suits.validation.Validator`'s mean validation Dice), called before the first
            step, every ``validate_every`` steps and after the last; ``None``: no validation.
        validate_every: steps between validations (0: only before the first and after the last).
        select: ``"last"``: the model after the last step; ``"best"``: the weights of the best
            validation score (ties: the earliest; needs ``validate``).
        curve: if given, filled with ``(step, score)`` of every validation (also those before
            a resume, kept in the checkpoint).
        initial_score: the validation score of ``model`` as passed in, when it is known (the
            last validation of its pre-training with the same ``validate``): recorded for step
            0 instead of validating again.
        untracked: the representations of the ``k_back - 1`` iterations without gradients:
            ``"labels"`` (Algorithm 1: the one-hot label maps, :func:`label_iterations`) or
            ``"features"`` (the current FeatCNN's features of the fixed and moving images, warped
            on the feature grid, :func:`feature_iterations`), so that the tracked iteration
            starts from a field as the test-time iterations reach it.

    Returns:
        ``(model, losses)``, the losses of every step so far (including before a resume).
    """
    from tqdm.auto import tqdm

    _check_pairs(pairs)
    check_warp_space(warp_space)
    check_warp_space(label_warp_space)
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device).train()
    factor = int(getattr(model, "factor", 1))
    K = int(num_classes) if num_classes is not None else infer_num_classes(pairs)
    if k_min > k_max or k_min < 0:
        raise ValueError(f"need 0 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}, got {select!r}")
    if untracked not in UNTRACKED:
        raise ValueError(f"untracked must be one of {UNTRACKED}, got {untracked!r}")
    if select == "best" and validate is None:
        raise ValueError("select='best' needs a validate function (validation pairs)")

    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses: list[float] = []
    k_backs: list[int] = []
    val_steps: list[int] = []
    val_scores: list[float] = []
    best: list[dict] = []  # at most one entry: the best validation's step, score and weights
    rolling = ckpt.RollingCheckpoint(
        checkpoint, model, opt, gen, steps, checkpoint_every,
        {"losses": (losses, float), "k_backs": (k_backs, int),
         "val_steps": (val_steps, int, False), "val_scores": (val_scores, float, False),
         "best": (best, dict, False)},
        dict(seed=seed, steps=steps, batch=batch, lr=lr, lam=lam, k_min=k_min, k_max=k_max,
             gamma=gamma, num_classes=K, warp_space=warp_space, label_warp_space=label_warp_space,
             untracked=untracked),
        logger)

    def check_spaces(extra: dict) -> None:
        # a checkpoint without label_warp_space used warp_space for both
        recorded = {"warp_space": extra.get("warp_space", "image")}
        recorded["label_warp_space"] = extra.get("label_warp_space", recorded["warp_space"])
        recorded["untracked"] = extra.get("untracked", "labels")
        for key, asked in (("warp_space", warp_space), ("label_warp_space", label_warp_space),
                           ("untracked", untracked)):
            if recorded[key] != asked:
                raise ValueError(f"{rolling.path}: checkpoint was trained with {key}={recorded[key]!r}, "
                                 f"this run asks for {asked!r}; use the same {key} or another "
                                 "checkpoint path")

    start, _ = rolling.resume(device, check=check_spaces)

    def run_validation(done: int, known: float | None = None) -> None:
        if validate is None or (val_steps and val_steps[-1] == done):
            return
        score = float(validate(model)) if known is None else float(known)
        val_steps.append(done)
        val_scores.append(score)
        logger.info("SUITS step %d validation score %.4f", done, score)
        if select == "best" and (not best or score > best[0]["score"]):
            best[:] = [{"step": done, "score": score,
                        "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}]

    if start == 0:
        run_validation(0, initial_score)

    pooled_masks: dict[int, tuple[torch.Tensor, torch.Tensor] | None] = {}

    def prepare(i: int) -> dict[str, torch.Tensor]:
        p = pairs[i]
        out = {k: p[k].to(device=device, dtype=torch.float32) for k in ("fixed", "moving")}
        out.update({k: p[k].to(device=device).long() for k in ("fixed_labels", "moving_labels")})
        if i not in pooled_masks:
            pooled_masks[i] = padding_masks(p.get("fixed_fov"), p.get("moving_fov"),
                                            out["fixed"].shape[-3:], factor, device)
        out["masks"] = pooled_masks[i]
        return out

    bar = tqdm(range(start, int(steps)), initial=start, total=int(steps), desc="SUITS training",
               disable=not progress)
    for step in bar:
        idx, k_back = draw_step(gen, len(pairs), int(batch), int(k_min), int(k_max))
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for i in idx:
            p = prepare(i)
            if untracked == "features":
                u = feature_iterations(model, p["fixed"], p["moving"], k_back - 1, lam,
                                       fixed_modality=fixed_modality,
                                       moving_modality=moving_modality, gamma=gamma,
                                       smooth=smooth, solver=solver, tol=tol, masks=p["masks"])
            else:
                u = label_iterations(one_hot(p["fixed_labels"], K), one_hot(p["moving_labels"], K),
                                     k_back - 1, lam, factor, gamma=gamma, smooth=smooth,
                                     solver=solver, tol=tol, label_smooth=label_smooth,
                                     warp_space=label_warp_space, masks=p["masks"])
            u = tracked_iteration(model, p["fixed"], p["moving"], u, lam,
                                  fixed_modality=fixed_modality, moving_modality=moving_modality,
                                  gamma=gamma, smooth=smooth, solver=solver, tol=tol, grad_A=grad_A,
                                  warp_space=warp_space, masks=p["masks"])
            loss = guidance_loss(p["moving_labels"], p["fixed_labels"], u, K, eps=eps) / len(idx)
            loss.backward()
            total += float(loss.detach())
        opt.step()
        losses.append(total)
        k_backs.append(k_back)
        done = step + 1
        logger.info("SUITS step %d k_back %d loss %.6f", done, k_back, total)
        if log is not None:
            log(done, total)
        bar.set_postfix(loss=f"{total:.4f}", k_back=k_back)
        if validate_every > 0 and done % validate_every == 0:
            run_validation(done)
        rolling.after_step(done)
    bar.close()
    if start < steps:
        run_validation(int(steps))
        rolling.save(int(steps))
        logger.info("SUITS training finished: %d steps, last loss %.6f", steps, losses[-1])
    if select == "best" and best:
        model.load_state_dict(best[0]["state"])
        logger.info("SUITS: keeping the weights of step %d (validation score %.4f)",
                    best[0]["step"], best[0]["score"])
    if curve is not None:
        curve[:] = list(zip(val_steps, val_scores))
    return model, losses
