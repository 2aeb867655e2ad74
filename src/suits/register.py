"""Iterative diffusion-regularised registration on learned or hand-crafted representations.

Eq. (2) of the paper: ``u^k = u^{k-1} + gamma * Δu^{k-1}``, ``u^0 = 0``. With
``warp_space="image"`` (Fig. 1 of the paper) every iteration

1. warps the moving grey-value image by ``u^{k-1}`` on the image grid,
2. computes its representation ``R_mov^{k-1}`` (FeatCNN, MIND-SSC, ...) on the feature grid,
3. brings ``u^{k-1}`` to the feature grid (``suits.warp.downsample_field``: feature voxel ``i``
   sits at image voxel ``i*f``, the FeatCNN convention),
4. solves the Brox/Gauss-Newton system for ``Δu`` on the feature grid
   (``suits.diffusion.gauss_newton_step``),
5. upsamples ``Δu`` to the image grid (``suits.warp.upsample_field``: trilinear + box filter of
   size ``smooth``; the paper's quadratic B-spline model) and adds ``gamma * Δu``.

``R_fix`` is computed once. :func:`iterate` is the single iteration used both here (under
``torch.no_grad``) and, differentiably, by :mod:`suits.train`.

With ``warp_space="features"`` (the default of :func:`register`; Sec. 3.1: "we compute the
warped representation of the moving image", Sec. 3.2: "warp the moving representation") steps
1-2 become: the moving image is represented once, and its representation is warped on the
feature grid by ``u^{k-1}`` brought there (step 3): two model passes per registration instead
of one per iteration, same Dice within .004 on the phantom's training pairs
(``docs/method-choices.md``). Nothing then needs the image-grid field between iterations:
:func:`feature_grid_iterations` keeps ``u^k`` on the feature grid (steps 3 and 5 composed into
one feature-grid map, :func:`suits.warp.upsample_field_strided`) and upsamples the sum of the
updates once at the end, which equals the sum of the upsampled updates because step 5 is
linear.

Field-of-view masks. With ``fixed_mask``/``moving_mask`` (1 = voxel from the scan, 0 =
padding; :func:`register`) that have padding, every Gauss-Newton step weights its data term
per feature voxel (:func:`suits.diffusion.brox_system`) by the fixed mask times the moving mask
warped by the current displacement, both pooled to the feature grid
(:func:`pool_mask`; the moving one warped there like the representation), so padding that
the representation could take for anatomy pulls nothing; the diffusion term carries the field
across it. Masks of all ones are dropped: the result is then exactly the unmasked one.

A representation is anything ``rep(x, modality) -> (B, C, ceil(D/f), ceil(H/f), ceil(W/f))``
with an integer attribute ``factor`` (default 1): a :class:`suits.featcnn.FeatCNN`, the string
``"mind"`` (:class:`MindRepresentation`, MIND-SSC on the image sampled at every ``f``-th voxel,
the pre-training target convention) or any callable.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from suits.featcnn import feature_shape
from suits.fov import binary_fov
from suits.warp import box_filter, downsample_field, upsample_field, upsample_field_strided, warp

__all__ = [
    "register",
    "iterate",
    "feature_grid_iterations",
    "displacement_update",
    "to_feature_grid",
    "to_image_grid",
    "resolve_representation",
    "MindRepresentation",
    "representation_ssd",
    "WARP_SPACES",
    "check_warp_space",
    "pool_mask",
    "padding_masks",
    "mask_weight",
]

#: where the moving image is warped in every iteration (see :func:`register`)
WARP_SPACES = ("image", "features")

Representation = Callable[[torch.Tensor, str], torch.Tensor]
Callback = Callable[[int, torch.Tensor, float], None]


class MindRepresentation:
    """Hand-crafted MIND-SSC as a representation: ``mind_ssc(x)[..., ::f, ::f, ::f]``.

    The descriptor is computed on the full-resolution image and sampled at the feature voxels
    (feature voxel ``i`` = image voxel ``i*f``), exactly the target the FeatCNN is pre-trained
    to replicate (:func:`suits.pretrain.mind_target`), so the same iterative scheme and the
    same ``lam`` apply. ``modality`` is ignored.
    """

    def __init__(self, factor: int = 4, radius: int = 2, dilation: int = 2) -> None:
        self.factor = int(factor)
        self.radius = int(radius)
        self.dilation = int(dilation)

    def __call__(self, x: torch.Tensor, modality: str | None = None) -> torch.Tensor:
        from suits.mind import mind_ssc

        f = self.factor
        return mind_ssc(x, radius=self.radius, dilation=self.dilation)[..., ::f, ::f, ::f]

    def __repr__(self) -> str:
        return f"MindRepresentation(factor={self.factor}, radius={self.radius}, dilation={self.dilation})"


def check_warp_space(name: str) -> str:
    """``name`` if it is one of :data:`WARP_SPACES`, else a ``ValueError``."""
    if name not in WARP_SPACES:
        raise ValueError(f"warp_space must be one of {WARP_SPACES}, got {name!r}")
    return name


def resolve_representation(model: Representation | str, factor: int = 4) -> Representation:
    """``"mind"`` -> :class:`MindRepresentation` (feature grid ``factor``); callables unchanged."""
    if isinstance(model, str):
        if model.lower() == "mind":
            return MindRepresentation(factor=factor)
        raise ValueError(f"unknown representation {model!r}; use a FeatCNN, a callable or 'mind'")
    if not callable(model):
        raise TypeError(f"model must be callable f(x, modality) or 'mind', got {type(model).__name__}")
    return model


def _factor(rep: object) -> int:
    f = int(getattr(rep, "factor", 1))
    if f < 1:
        raise ValueError(f"representation factor must be >= 1, got {f}")
    return f


def pool_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """An image-grid mask ``(B, 1, D, H, W)`` on the feature grid ``(B, 1, ceil(D/f), ...)``:
    the mean over the ``(2⌊f/2⌋+1)^3`` image voxels centred on feature voxel ``i`` (image voxel
    ``i*f``), the image's border excluded; ``factor`` 1 returns the mask as float."""
    f = int(factor)
    mask = mask.float() if not mask.is_floating_point() else mask
    if f == 1:
        return mask
    r = f // 2
    total = F.avg_pool3d(F.pad(mask, [r] * 6), 2 * r + 1, stride=f)
    inside = F.avg_pool3d(F.pad(torch.ones_like(mask[:1]), [r] * 6), 2 * r + 1, stride=f)
    return total / inside


def padding_masks(fixed_mask: torch.Tensor | None, moving_mask: torch.Tensor | None,
                  shape: Sequence[int], factor: int, device: torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The fixed and moving field-of-view masks pooled to the feature grid (:func:`pool_mask`),
    or ``None`` when neither has padding (both ``None`` or all ones), so the registration runs
    unweighted. A missing mask counts as all ones. ``ValueError`` for a mask off the image grid
    ``shape`` or one without any voxel inside."""
    shape = tuple(int(n) for n in shape)
    masks = []
    for what, m in (("fixed", fixed_mask), ("moving", moving_mask)):
        if m is None:
            masks.append(None)
            continue
        if m.dim() != 5 or m.shape[1] != 1 or tuple(m.shape[-3:]) != shape:
            raise ValueError(f"{what} mask must be (B, 1, D, H, W) on the image grid {shape}, "
                             f"got {tuple(m.shape)}")
        masks.append(binary_fov(m, f"{what} mask", device=device, dtype=dtype))
    if masks[0] is None and masks[1] is None:
        return None
    ones = torch.ones((1, 1, *shape), device=device, dtype=dtype)
    return tuple(pool_mask(ones if m is None else m, factor) for m in masks)


def mask_weight(masks: tuple[torch.Tensor, torch.Tensor] | None,
                u_feat: torch.Tensor) -> torch.Tensor | None:
    """Data-term weight of one step: the pooled fixed mask times the pooled moving mask warped
    by the feature-grid field ``u_feat``; ``None`` without masks."""
    if masks is None:
        return None
    fixed, moving = masks
    return fixed * warp(moving, u_feat)


def to_feature_grid(u: torch.Tensor, factor: int) -> torch.Tensor:
    """Image-grid field to the feature grid (strided sampling, values / ``factor``)."""
    return u if int(factor) == 1 else downsample_field(u, factor)


def to_image_grid(du: torch.Tensor, shape: Sequence[int], factor: int, smooth: int = 5) -> torch.Tensor:
    """Feature-grid update to the image grid: trilinear (feature voxel ``i`` at ``i*factor``),
    values x ``factor``, then a box filter of size ``smooth`` (0/1: none)."""
    if int(factor) == 1 and tuple(du.shape[-3:]) == tuple(int(s) for s in shape):
        return box_filter(du, smooth)
    return upsample_field(du, shape, smooth=smooth, factor=factor)


def representation_ssd(r_fix: torch.Tensor, r_mov: torch.Tensor) -> float:
    """Mean squared difference of two representations (a Python float)."""
    return float(((r_mov.detach() - r_fix.detach()) ** 2).mean())


def _check_feature_grids(r_fix: torch.Tensor, r_mov: torch.Tensor, shape: Sequence[int],
                         factor: int) -> None:
    """The representations must share the factor-``factor`` feature grid of the image grid
    ``shape`` (``ceil(n / factor)`` voxels per axis, where :func:`to_feature_grid` puts a field)."""
    grid = feature_shape(shape, factor)
    if tuple(r_fix.shape[-3:]) != grid or r_fix.shape != r_mov.shape:
        raise ValueError(
            f"feature grids disagree: fixed {tuple(r_fix.shape)}, moving {tuple(r_mov.shape)}, "
            f"field on the feature grid {grid} (image {tuple(int(n) for n in shape)}, factor {factor}); "
            "a representation with factor f must return ceil(n/f) voxels per axis")


def displacement_update(r_fix: torch.Tensor, r_mov: torch.Tensor, u: torch.Tensor, lam: float,
                        gamma: float = 1.0, factor: int = 1, smooth: int = 5,
                        solver: object | None = None, tol: float = 1e-6,
                        grad_A: bool = False, weight: torch.Tensor | None = None) -> torch.Tensor:
    """``u^k = u^{k-1} + gamma * up(Δu)`` with ``Δu`` the Gauss-Newton step on the feature grid.

    Args:
        r_fix, r_mov: ``(B, C, d, h, w)`` representations on the feature grid.
        u: ``(B, 3, D, H, W)`` current field ``u^{k-1}`` on the image grid (voxels).
        lam: diffusion weight λ.
        gamma: step size γ.
        factor: feature grid factor ``f`` (``d = ceil(D/f)``).
        smooth: box filter size after the trilinear upsampling.
        solver, tol, grad_A: passed to :func:`suits.diffusion.gauss_newton_step`.
        weight: ``(B, 1, d, h, w)`` data-term weight on the feature grid (:func:`mask_weight`);
            ``None``: unweighted.

    Differentiable w.r.t. the representations (and ``u``) if the solver is.
    """
    from suits.diffusion import gauss_newton_step

    u_feat = to_feature_grid(u, factor)
    _check_feature_grids(r_fix, r_mov, u.shape[-3:], factor)
    kwargs = {"solver": solver, "tol": tol}
    if grad_A:
        kwargs["grad_A"] = True
    if weight is not None:
        kwargs["weight"] = weight
    du = gauss_newton_step(r_fix, r_mov, u_feat, lam, **kwargs)
    return u + gamma * to_image_grid(du, u.shape[-3:], factor, smooth)


def iterate(r_fix: torch.Tensor, represent: Callable[[torch.Tensor], torch.Tensor],
            moving: torch.Tensor, u: torch.Tensor, lam: float, gamma: float = 1.0,
            factor: int = 1, smooth: int = 5, solver: object | None = None, tol: float = 1e-6,
            grad_A: bool = False, warp_space: str = "image",
            masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration of Eq. (2): warp ``moving`` by ``u``, represent it, update ``u``.

    Args:
        r_fix: fixed representation on the feature grid.
        represent: maps the warped moving volume ``(B, C, D, H, W)`` to its representation.
        moving: ``warp_space="image"``: the moving volume on the image grid (grey values, or
            one-hot labels in training), warped by ``u`` and then represented;
            ``"features"``: the moving *representation* on the feature grid, warped there by
            ``u`` brought to it (:func:`to_feature_grid`); ``represent`` is not applied.
        u: ``u^{k-1}`` on the image grid.
        masks: the pooled fixed and moving field-of-view masks (:func:`padding_masks`) that
            weight the data term (:func:`mask_weight`); ``None``: unweighted.
        others: see :func:`displacement_update`.

    Returns:
        ``(u^k, R_mov^{k-1})``.
    """
    features = check_warp_space(warp_space) == "features"
    u_feat = to_feature_grid(u, factor) if features or masks is not None else None
    if features:
        _check_feature_grids(r_fix, moving, u.shape[-3:], factor)  # before warp's own, vaguer error
        r_mov = warp(moving, u_feat)
    else:
        r_mov = represent(warp(moving, u))
    return displacement_update(r_fix, r_mov, u, lam, gamma=gamma, factor=factor, smooth=smooth,
                               solver=solver, tol=tol, grad_A=grad_A,
                               weight=mask_weight(masks, u_feat)), r_mov


def feature_grid_iterations(r_fix: torch.Tensor, r_mov: torch.Tensor, shape: Sequence[int],
                            iterations: int, lam: float, gamma: float = 1.0, factor: int = 1,
                            smooth: int = 5, solver: object | None = None, tol: float = 1e-6,
                            callback: Callback | None = None,
                            masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``iterations`` updates of Eq. (2) with ``warp_space="features"`` from ``u^0 = 0``, without
    gradients; returns ``u^n`` ``(B, 3, *shape)`` on the image grid.

    Equal (up to float rounding) to ``iterations`` calls of :func:`iterate` with
    ``warp_space="features"``, but the field stays on the feature grid: with ``c^k`` the sum of
    the feature-grid updates ``gamma * Δu``, the iteration's ``to_feature_grid(u^k)`` is
    ``upsample_field_strided(c^k)`` and ``u^k = to_image_grid(c^k)`` (upsampling and the box
    filter are linear), so the image-grid field is formed once, not once per iteration.

    Args:
        r_fix: ``(B, C, d, h, w)`` fixed representation on the feature grid.
        r_mov: the moving representation on the same grid (computed once, warped here).
        shape: the image grid ``(D, H, W)`` (``d = ceil(D / factor)``).
        callback: ``callback(k, u^k, ssd)`` as in :func:`register` (``u^k`` is then formed on
            the image grid every iteration).
        masks: pooled field-of-view masks weighting the data term (:func:`iterate`).
        others: see :func:`displacement_update`.
    """
    from suits.diffusion import gauss_newton_step

    shape = tuple(int(s) for s in shape)
    batch = max(r_fix.shape[0], r_mov.shape[0])
    c = torch.zeros((batch, 3, *r_fix.shape[-3:]), device=r_fix.device, dtype=r_fix.dtype)
    u_feat = torch.zeros_like(c)
    _check_feature_grids(r_fix, r_mov, shape, factor)
    with torch.no_grad():
        for k in range(1, int(iterations) + 1):
            r_warped = warp(r_mov, u_feat)
            kwargs = {} if masks is None else {"weight": mask_weight(masks, u_feat)}
            c = c + gamma * gauss_newton_step(r_fix, r_warped, u_feat, lam, solver=solver, tol=tol,
                                              **kwargs)
            u_feat = upsample_field_strided(c, shape, factor, smooth)
            if callback is not None:
                callback(k, to_image_grid(c, shape, factor, smooth), representation_ssd(r_fix, r_warped))
    return to_image_grid(c, shape, factor, smooth)


def register(fixed: torch.Tensor, moving: torch.Tensor, model: Representation | str,
             iterations: int = 15, lam: float = 10.0, gamma: float = 1.0,
             fixed_modality: str = "mr", moving_modality: str = "ct",
             solver: object | None = None, tol: float = 1e-6, smooth: int = 5,
             callback: Callback | None = None, warp_space: str = "features",
             fixed_mask: torch.Tensor | None = None,
             moving_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Register ``moving`` to ``fixed``: ``u`` with ``warp(moving, u) ≈ fixed``.

    Args:
        fixed, moving: ``(B, 1, D, H, W)`` images on the same grid (after affine alignment).
        model: a FeatCNN, ``"mind"`` (MIND-SSC on a factor-4 feature grid) or any callable
            ``f(x, modality)`` with an attribute ``factor`` (default 1).
        iterations: number of updates (paper: 15).
        lam: diffusion weight λ (paper: 10 at test time).
        gamma: step size γ (paper: 1).
        fixed_modality, moving_modality: stream names passed to the model.
        solver, tol: passed to :func:`suits.diffusion.gauss_newton_step`.
        smooth: box filter size after upsampling the updates (paper: 5).
        callback: ``callback(k, u^k, ssd)`` after iteration ``k`` (1-based), ``ssd`` the mean
            squared difference of ``R_fix`` and ``R_mov^{k-1}`` (the representation the step
            was computed from, i.e. before this update).
        warp_space: ``"features"`` (default): the moving image is represented once and its
            representation is warped on the feature grid by ``u`` brought there (the paper's
            Sec. 3.1-3.2 wording, "warp the moving representation"; two model passes per
            registration); ``"image"``: every iteration warps the moving grey-value image on
            the image grid and represents it anew (Fig. 1 of the paper; one model pass per
            iteration). See ``docs/method-choices.md``.
        fixed_mask, moving_mask: ``(B, 1, D, H, W)`` field-of-view masks (1 = scan, 0 =
            padding) on the image grid; with padding they weight the data term of every step
            (:func:`padding_masks`, :func:`mask_weight`). ``None`` or all ones: unweighted,
            the same ``u`` as without them.

    Returns:
        ``u`` ``(B, 3, D, H, W)`` float, voxels of the fixed grid, on ``fixed``'s device.
        Computed under ``torch.no_grad``.
    """
    if fixed.dim() != 5 or moving.dim() != 5:
        raise ValueError(f"images must be (B, 1, D, H, W), got {tuple(fixed.shape)} and {tuple(moving.shape)}")
    if fixed.shape[-3:] != moving.shape[-3:]:
        raise ValueError(f"fixed grid {tuple(fixed.shape[-3:])} != moving grid {tuple(moving.shape[-3:])}; "
                         "resample the moving image onto the fixed grid first")
    check_warp_space(warp_space)
    rep = resolve_representation(model)
    factor = _factor(rep)
    dtype = fixed.dtype if fixed.is_floating_point() else torch.float32
    fixed = fixed.to(dtype)
    moving = moving.to(device=fixed.device, dtype=dtype)
    masks = padding_masks(fixed_mask, moving_mask, fixed.shape[-3:], factor, fixed.device, dtype)
    with torch.no_grad():
        r_fix = rep(fixed, fixed_modality)
        if warp_space == "features":    # the moving representation, computed once, is warped
            r_mov = rep(moving, moving_modality).to(dtype)
            return feature_grid_iterations(r_fix.to(dtype), r_mov, fixed.shape[-3:], iterations,
                                           lam, gamma=gamma, factor=factor, smooth=smooth,
                                           solver=solver, tol=tol, callback=callback,
                                           masks=masks)
        batch = max(fixed.shape[0], moving.shape[0])
        u = torch.zeros((batch, 3, *fixed.shape[-3:]), device=fixed.device, dtype=dtype)
        for k in range(1, int(iterations) + 1):
            u, r_mov = iterate(r_fix, lambda x: rep(x, moving_modality), moving, u, lam,
                               gamma=gamma, factor=factor, smooth=smooth, solver=solver, tol=tol,
                               warp_space=warp_space, masks=masks)
            if callback is not None:
                callback(k, u, representation_ssd(r_fix, r_mov))
    return u
