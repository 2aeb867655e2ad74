"""Pairwise multi-modal affine registration by MIND-SSC block matching and trimmed least squares.

The pre-registration of the SUITS paper (section 4: "the multi-modal, multi-level affine method
based on block-matching and trimmed-least squares as described in Heinrich (2018)"), written
anew with torch:

1. **Initialisation** (``init="com"``): a translation that maps the centre of mass of the
   fixed image's foreground onto the moving image's (foreground = above 15 % of the robust
   1-99 % intensity range, which works for CT in HU, MR and z-scored images alike), so images
   whose world coordinates hardly overlap still start aligned; ``"fov"`` aligns the
   field-of-view centres, ``"identity"`` trusts the headers.
2. **Pyramid** (``AffineSettings.levels``, coarse to fine): both images are average-pooled by
   the level factor (the pooled grid's affine keeps every cell centre at its world position)
   and described by MIND-SSC (:func:`suits.mind.mind_ssc`) on that grid.
3. **Per iteration** on a level: the moving MIND features are resampled onto the fixed level
   grid through the current transform (trilinear, ``grid_sample``), matched block by block
   (:func:`suitsbench.blockmatch.block_match`, :func:`suitsbench.blockmatch.distinctive_pairs`)
   and an affine is fitted to the matches in world millimetres by trimmed least squares
   (:func:`suitsbench.blockmatch.trimmed_affine_fit`). The fit is composed with the current
   estimate unless the result leaves the allowed scales.

Settings are an :class:`AffineSettings`; :func:`register_affine` runs the pyramid.

Convention (everywhere in ``suitsbench.affine`` / ``suitsbench.groupwise``): a transform is a
4x4 ``numpy.float64`` matrix in **world millimetres** (the NIfTI affines' space) that maps a
point ``p`` of the **fixed / output** space to the corresponding point ``T @ p`` of the
**moving / input** image. Resampling the moving image onto the fixed grid therefore samples it
at voxel ``inv(moving_affine) @ T @ fixed_affine @ v`` for every fixed voxel ``v`` ("pull
back"): :func:`resample_affine` does this (defined in :mod:`suitsbench.affinemap`, which
needs no torch, and exported here).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from suits.mind import mind_ssc
from suitsbench.affinemap import resample_affine, voxel_map
from suitsbench.blockmatch import (block_match, distinctive_pairs, grid_noise_scale,
                                   trimmed_affine_fit)

log = logging.getLogger(__name__)

__all__ = [
    "AffineSettings", "register_affine", "resample_affine", "voxel_map", "level_affine",
    "centre_of_mass", "initial_transform", "initial_starts", "affine_grid_for", "INIT_MODES",
]

ArrayLike = np.ndarray | torch.Tensor


def _as_volume(x: ArrayLike, device: torch.device | str | None) -> torch.Tensor:
    """A ``(1, 1, D, H, W)`` float32 tensor from a 3-D array/tensor or a ``(1,1,D,H,W)`` one."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x, np.float32))
    if device is None:
        device = t.device
    t = t.to(device=device, dtype=torch.float32)
    while t.dim() > 3 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3:
        raise ValueError(f"expected a 3-D volume or (1, 1, D, H, W), got shape {tuple(x.shape)}")
    return t[None, None]


def level_affine(affine: np.ndarray, factor: int) -> np.ndarray:
    """Affine of a grid average-pooled by ``factor``: cell ``v`` covers voxels
    ``factor*v .. factor*v + factor - 1``, its centre is voxel ``factor*v + (factor - 1)/2``."""
    s = np.eye(4)
    s[:3, :3] *= factor
    s[:3, 3] = (factor - 1) / 2.0
    return np.asarray(affine, float) @ s


def affine_grid_for(M: np.ndarray, out_shape: Sequence[int], in_shape: Sequence[int],
                    device: torch.device | str | None = None) -> torch.Tensor:
    """``grid_sample`` grid (``align_corners=True``) sampling an input of ``in_shape`` at the
    voxel indices ``M @ v`` (``M`` a 4x4 voxel->voxel map) for every output voxel ``v``."""
    def norm(shape: Sequence[int]) -> np.ndarray:
        # voxel index (i, j, k) -> normalised (x, y, z) = (k, j, i) in [-1, 1]
        n = np.zeros((4, 4))
        for a in range(3):
            size = max(int(shape[a]), 2)
            n[2 - a, a] = 2.0 / (size - 1)
            n[2 - a, 3] = -1.0
        n[3, 3] = 1.0
        return n
    theta = norm(in_shape) @ np.asarray(M, float) @ np.linalg.inv(norm(out_shape))
    th = torch.tensor(theta[:3], dtype=torch.float32, device=device)[None]
    return F.affine_grid(th, [1, 1, *[int(s) for s in out_shape]], align_corners=True)


def _warp(x: torch.Tensor, M: np.ndarray, out_shape: Sequence[int], mode: str = "bilinear",
          padding: str = "border") -> torch.Tensor:
    """Sample ``x`` (B, C, D, H, W) at voxel ``M @ v`` for each output voxel ``v``."""
    grid = affine_grid_for(M, out_shape, x.shape[2:], x.device)
    return F.grid_sample(x, grid.expand(x.shape[0], *grid.shape[1:]), mode=mode,
                         padding_mode=padding, align_corners=True)


def _foreground(img: np.ndarray, fraction: float = 0.15, mask: np.ndarray | None = None
                ) -> np.ndarray:
    if mask is None:
        lo, hi = np.percentile(img, [1.0, 99.0])
        return img > lo + fraction * (hi - lo)
    inside = np.asarray(mask).reshape(img.shape) > 0
    if not inside.any():
        return inside
    lo, hi = np.percentile(img[inside], [1.0, 99.0])
    return inside & (img > lo + fraction * (hi - lo))


def _numpy3d(x: ArrayLike) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.asarray(a, np.float32).reshape(a.shape[-3:])


def centre_of_mass(image: ArrayLike, affine: np.ndarray, mask: ArrayLike | None = None
                   ) -> np.ndarray:
    """World position (mm) of the centre of mass of the image's foreground (above 15 % of the
    1-99 % percentile range, within ``mask`` when given: the scanned voxels, not padding);
    the field-of-view centre if the foreground is empty."""
    img = _numpy3d(image)
    fg = _foreground(img, mask=None if mask is None else _numpy3d(mask))
    if fg.any():
        c = np.array(ndimage.center_of_mass(fg))
    else:
        c = (np.asarray(img.shape, float) - 1) / 2
    a = np.asarray(affine, float)
    return a[:3, :3] @ c + a[:3, 3]


INIT_MODES = ("com", "search", "fov", "identity")


def initial_transform(fixed: ArrayLike, moving: ArrayLike, fixed_affine: np.ndarray,
                      moving_affine: np.ndarray, init: str = "com",
                      fixed_mask: ArrayLike | None = None, moving_mask: ArrayLike | None = None,
                      settings: "AffineSettings | None" = None) -> np.ndarray:
    """Initial transform (fixed world -> moving world): ``"com"`` the translation between the
    foreground centres of mass, ``"search"`` the centre-of-mass start refined by the
    exhaustive coarse search of :func:`suitsbench.globalinit.search_initial` (kept only when
    it beats the start by ``settings.init_margin``), ``"fov"`` the field-of-view centres,
    ``"identity"`` the headers as they are. Masks (nonzero = scanned) keep padding out of
    the centre of mass and the search."""
    T = np.eye(4)
    if init == "identity":
        return T
    if init in ("com", "search"):
        T[:3, 3] = (centre_of_mass(moving, moving_affine, moving_mask)
                    - centre_of_mass(fixed, fixed_affine, fixed_mask))
        if init == "search":
            from suitsbench.globalinit import search_initial

            st = AffineSettings() if settings is None else settings
            start = T
            T, res = search_initial(
                _numpy3d(fixed), _numpy3d(moving), fixed_affine, moving_affine, start,
                margin=st.init_margin, fixed_mask=None if fixed_mask is None else _numpy3d(
                    fixed_mask), moving_mask=None if moving_mask is None else _numpy3d(
                    moving_mask), spacing=st.init_spacing, scales=st.init_scales,
                min_overlap=st.init_min_overlap)
            log.info("affine init search: best offset %s mm from the centre-of-mass start, "
                     "scale %.3g, cost %.4g (start %.4g), overlap %.2f, lattice %.1f mm; %s",
                     np.round(res.offset_mm, 1).tolist(), res.scale, res.cost, res.start_cost,
                     res.overlap, res.spacing,
                     "start kept" if T is start or np.array_equal(T, start) else "moved")
    elif init == "fov":
        def fov(shape, a):
            c = (np.asarray(shape[-3:], float) - 1) / 2
            return np.asarray(a, float)[:3, :3] @ c + np.asarray(a, float)[:3, 3]
        T[:3, 3] = fov(moving.shape, moving_affine) - fov(fixed.shape, fixed_affine)
    else:
        raise ValueError(f"init must be one of {INIT_MODES}, got {init!r}")
    return T


def initial_starts(fixed: ArrayLike, moving: ArrayLike, fixed_affine: np.ndarray,
                   moving_affine: np.ndarray, init: str = "com",
                   fixed_mask: ArrayLike | None = None, moving_mask: ArrayLike | None = None,
                   settings: "AffineSettings | None" = None) -> list[np.ndarray]:
    """The starts of :func:`register_affine`: :func:`initial_transform` first; with
    ``init="search"``, ``settings.init_starts > 1`` and a field-of-view mask marking padding
    (a partial or padded scan), also the centre-of-mass start, the search's winner and its
    next best local minima, in this order, up to ``init_starts`` distinct ones (closer than 1 mm at the
    field-of-view corners counts as the same)."""
    st = AffineSettings() if settings is None else settings
    partial = any(m is not None and not bool((_numpy3d(m) > 0).all())
                  for m in (fixed_mask, moving_mask))
    if init != "search" or st.init_starts <= 1 or not partial:
        return [initial_transform(fixed, moving, fixed_affine, moving_affine, init,
                                  fixed_mask, moving_mask, settings)]
    from suitsbench.globalinit import search_initial

    fm = None if fixed_mask is None else _numpy3d(fixed_mask)
    mm = None if moving_mask is None else _numpy3d(moving_mask)
    com = initial_transform(fixed, moving, fixed_affine, moving_affine, "com", fm, mm)
    T, res = search_initial(_numpy3d(fixed), _numpy3d(moving), fixed_affine, moving_affine,
                            com, margin=st.init_margin, fixed_mask=fm, moving_mask=mm,
                            spacing=st.init_spacing, scales=st.init_scales,
                            min_overlap=st.init_min_overlap, top=st.init_starts)
    shape = _numpy3d(fixed).shape
    corners = np.asarray(fixed_affine, float) @ np.array(
        [[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
         for k in (0, shape[2] - 1)]).T
    starts: list[np.ndarray] = []
    for cand in [T, com, res.T, *(c for c, _ in res.candidates)]:
        if len(starts) == st.init_starts:
            break
        if all(np.linalg.norm(((cand - s) @ corners)[:3], axis=0).max() >= 1.0
               for s in starts):
            starts.append(np.asarray(cand, float))
    log.info("affine init search: %d starts (the first: %s)", len(starts),
             "moved" if not np.array_equal(T, com) else "the centre of mass")
    return starts


def _pool(x: torch.Tensor, f: int) -> torch.Tensor:
    return x if f == 1 else F.avg_pool3d(x, f, f)


def _per_level(value: int | Sequence[int], n: int, name: str) -> list[int]:
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n
    vals = [int(v) for v in value]
    if len(vals) != n:
        raise ValueError(f"{name} needs one value per level ({n}), got {vals}")
    return vals


def _level_cost(feat_f: torch.Tensor, warped: torch.Tensor) -> float:
    """Mean squared MIND distance at zero displacement (the block-matching criterion)."""
    return float(((feat_f - warped) ** 2).sum(1).mean())


def _scales(M: np.ndarray) -> np.ndarray:
    return np.linalg.svd(np.asarray(M, float)[:3, :3], compute_uv=False)


def _tupled(value):
    return tuple(value) if isinstance(value, (list, np.ndarray)) else value


@dataclass(frozen=True)
class AffineSettings:
    """Numeric settings of :func:`register_affine`.

    Attributes:
        levels: pyramid downsampling factors, coarse to fine. A level whose fixed or moving
            grid has fewer than ``min_level_size`` voxels along an axis is skipped (too few
            blocks per axis for a stable fit; logged); if every level is too small, only the
            finest one runs.
        iterations, search: per level (or one value for all): block-matching iterations and
            search radius in level voxels (``(2*search+1)^3`` displacements). Default
            (``None``): 8 iterations and search 3 on the first level that runs, 5 and 2 on the
            finer ones (e.g. ``levels=(4, 2)`` at 2 mm: +-24 mm, then +-8 mm per iteration).
        block, block_stride: block size and stride in level voxels, per level or one value for
            all (stride default ``max(1, block // 2)``: half-overlapping blocks).
        trim, trim_iterations: trimmed least squares (fraction kept, refits).
        keep_distinctive: fraction of blocks (largest summed per-axis distinctiveness, see
            :func:`suitsbench.blockmatch.block_match`) used for the fit; each block's
            displacement then enters the fit of each axis with a weight from its
            distinctiveness along that axis (saturating at the 90th percentile), so blocks
            that do not constrain an axis do not decide it.
        ridge: damping of each update towards no change
            (:func:`suitsbench.blockmatch.trimmed_affine_fit`): an axis the blocks hardly
            constrain keeps the previous estimate.
        min_level_size: smallest grid size (voxels per axis) of a level that runs.
        max_scale: an update whose result scales any direction by more than ``max_scale`` (or
            less than ``1 / max_scale``), or is not orientation-preserving, is rejected and the
            level stops (logged). Within a level the iterate with the lowest MIND distance is
            kept, so a level never ends worse than it started by its own criterion.
        radius, dilation: MIND-SSC patch radius and neighbour distance (level voxels).
        tol: stop a level early once an update moves no fixed-grid corner by more than ``tol``
            level voxels.
        init_margin, init_min_overlap, init_scales, init_spacing: the global search of
            ``init="search"`` (:mod:`suitsbench.globalinit`): its winner replaces the
            centre-of-mass start only when its cost is below ``1 - init_margin`` times the
            start's; offsets whose field-of-view overlap is below ``init_min_overlap`` of the
            smaller image are not considered; ``init_scales`` are the scales tried (about the
            moving field-of-view centre); ``init_spacing`` the lattice spacing in mm (default:
            :func:`suitsbench.globalinit.coarse_spacing`).
        init_starts: with ``init="search"`` and a field-of-view mask that marks padding,
            the pyramid runs from this many starts (:func:`initial_starts`: the chosen one,
            the search's next best local minima, the centre of mass) and the result with the
            lowest final MIND distance is kept; 1 (or no padding): one start.

    Lists given for the per-level fields are stored as tuples.
    """

    levels: Sequence[int] = (4, 2)
    iterations: int | Sequence[int] | None = None
    block: int | Sequence[int] = 4
    block_stride: int | Sequence[int] | None = None
    search: int | Sequence[int] | None = None
    trim: float = 0.5
    trim_iterations: int = 4
    keep_distinctive: float = 0.75
    ridge: float = 0.05
    min_level_size: int = 16
    max_scale: float = 1.5
    radius: int = 1
    dilation: int = 1
    tol: float = 0.02
    init_margin: float = 0.1
    init_min_overlap: float = 0.5
    init_scales: Sequence[float] = (1.0,)
    init_spacing: float | None = None
    init_starts: int = 1

    def __post_init__(self) -> None:
        for name in ("levels", "iterations", "block", "block_stride", "search", "init_scales"):
            object.__setattr__(self, name, _tupled(getattr(self, name)))


class _Level(NamedTuple):
    """One pyramid level as it runs: downsampling factor, iterations, search radius, block
    size and block stride (level voxels)."""
    factor: int
    iterations: int
    search: int
    block: int
    stride: int


def _mask_extent(vol: torch.Tensor, mask: torch.Tensor | None) -> tuple[int, ...]:
    """Grid shape of ``vol``, or the bounding box of the nonzero voxels of ``mask``."""
    if mask is None:
        return tuple(int(v) for v in vol.shape[2:])
    idx = torch.nonzero(mask[0, 0] > 0)
    if not len(idx):
        return tuple(int(v) for v in vol.shape[2:])
    return tuple(int(v) for v in (idx.max(0).values - idx.min(0).values + 1))


def _plan_levels(f_vol: torch.Tensor, m_vol: torch.Tensor, settings: AffineSettings,
                 f_mask: torch.Tensor | None = None, m_mask: torch.Tensor | None = None
                 ) -> list[_Level]:
    """The levels that run, coarse to fine, with their per-level values (defaults filled in,
    too small levels skipped). With field-of-view masks the size of a level is that of the
    masks' bounding boxes (a thin slab padded to the grid does not count as a full grid)."""
    levels = settings.levels
    nl = len(levels)
    if nl == 0:
        raise ValueError("levels must name at least one downsampling factor")
    blocks = _per_level(settings.block, nl, "block")
    strides = ([max(1, b // 2) for b in blocks] if settings.block_stride is None
               else _per_level(settings.block_stride, nl, "block_stride"))
    iters = _per_level(8 if settings.iterations is None else settings.iterations, nl,
                       "iterations")
    searches = _per_level(3 if settings.search is None else settings.search, nl, "search")

    f_ext, m_ext = _mask_extent(f_vol, f_mask), _mask_extent(m_vol, m_mask)

    def grid(x: torch.Tensor, f: int) -> tuple[int, ...]:
        return tuple(int(v) // int(f) for v in x.shape[2:])

    def extent(ext: tuple[int, ...], f: int) -> tuple[int, ...]:
        return tuple(int(v) // int(f) for v in ext)

    run = [li for li in range(nl)
           if min(extent(f_ext, levels[li]) + extent(m_ext, levels[li])) >= max(
               settings.min_level_size, blocks[li])]
    for li in range(nl):
        if li not in run:
            log.info("affine level %d: grids %s / %s below %d voxels per axis, skipped",
                     levels[li], extent(f_ext, levels[li]), extent(m_ext, levels[li]),
                     settings.min_level_size)
    if not run:
        li = nl - 1
        if min(grid(f_vol, levels[li]) + grid(m_vol, levels[li])) < max(blocks[li], 2):
            raise ValueError(
                f"images too small for affine registration at level {levels[li]}: fixed "
                f"{tuple(f_vol.shape[2:])}, moving {tuple(m_vol.shape[2:])}; use smaller "
                "levels (downsampling factors) or larger images")
        run = [li]
    # defaults: the first level that runs searches widely, the finer ones refine
    for pos, li in enumerate(run):
        if settings.iterations is None:
            iters[li] = 8 if pos == 0 else 5
        if settings.search is None:
            searches[li] = 3 if pos == 0 else 2
    return [_Level(int(levels[li]), iters[li], searches[li], blocks[li], strides[li])
            for li in run]


def _fit_update(feat_f: torch.Tensor, warped: torch.Tensor, inside: torch.Tensor,
                af: np.ndarray, level: _Level, settings: AffineSettings) -> np.ndarray | None:
    """Update ``U`` (4x4, fixed world -> fixed world) fitted to the block matches of the fixed
    features against the warped moving ones; ``None`` when fewer than 12 blocks overlap the
    moving image (``inside``: the moving field of view on the fixed level grid, times the
    fixed field-of-view mask when there is one)."""
    centres, disp, distinct = block_match(feat_f, warped, level.search, level.block,
                                          level.stride)
    valid = F.avg_pool3d(inside, level.block, level.stride).flatten() > 0.5
    if valid.sum() < 12:
        log.warning("affine level %d: fewer than 12 blocks overlap the moving "
                    "image; level stopped", level.factor)
        return None
    src, dst, weights = distinctive_pairs(centres, disp, distinct, valid,
                                          settings.keep_distinctive, af)
    return trimmed_affine_fit(src, dst, settings.trim, settings.trim_iterations,
                              weights=weights, ridge=settings.ridge,
                              noise_scale=grid_noise_scale(af))


def _acceptable(T_new: np.ndarray, max_scale: float) -> bool:
    """Whether ``T_new`` is finite, orientation-preserving and scales every direction within
    ``[1 / max_scale, max_scale]``."""
    sv = _scales(T_new)
    return bool(np.all(np.isfinite(T_new)) and np.linalg.det(T_new[:3, :3]) > 0
                and sv.max() <= max_scale and sv.min() >= 1.0 / max_scale)


def _level_mask(mask: torch.Tensor | None, factor: int) -> torch.Tensor | None:
    """A field-of-view mask on a pyramid level: cells at least half inside."""
    return None if mask is None else (_pool(mask, factor) > 0.5).float()


def _masked_cost(feat_f: torch.Tensor, warped: torch.Tensor, weight: torch.Tensor) -> float:
    """Mean squared MIND distance over the cells of ``weight`` (inf when there are none)."""
    n = float(weight.sum())
    if n <= 0:
        return float("inf")
    return float((((feat_f - warped) ** 2).sum(1, keepdim=True) * weight).sum()) / n


def _register_level(T: np.ndarray, f_vol: torch.Tensor, m_vol: torch.Tensor,
                    fixed_affine: np.ndarray, moving_affine: np.ndarray, level: _Level,
                    settings: AffineSettings, f_mask: torch.Tensor | None = None,
                    m_mask: torch.Tensor | None = None) -> tuple[np.ndarray, float]:
    """The estimate ``T`` refined on one pyramid level and its cost: the iterate with the
    lowest MIND distance among the start and the accepted updates. With field-of-view masks
    (``f_mask``, ``m_mask``: 1 = scanned, 0 = padding) blocks and the MIND distance count only
    where both images were scanned."""
    factor = level.factor
    fl, ml = _pool(f_vol, factor), _pool(m_vol, factor)
    af, am = level_affine(fixed_affine, factor), level_affine(moving_affine, factor)
    feat_f = mind_ssc(fl, settings.radius, settings.dilation)
    feat_m = mind_ssc(ml, settings.radius, settings.dilation)
    masked = f_mask is not None or m_mask is not None
    fm = _level_mask(f_mask, factor)
    mm = _level_mask(m_mask, factor)
    ones = torch.ones_like(ml) if mm is None else mm
    shape = fl.shape[2:]
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1)
                        for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]).T

    def cost_of(warped: torch.Tensor, M: np.ndarray) -> float:
        if not masked:
            return _level_cost(feat_f, warped)
        w = _warp(ones, M, shape, padding="zeros")
        return _masked_cost(feat_f, warped, w if fm is None else w * fm)

    best_T, best_cost = T, np.inf
    for it in range(level.iterations + 1):
        M = voxel_map(T, af, am)
        warped = _warp(feat_m, M, shape)
        cost = cost_of(warped, M)
        if cost < best_cost:
            best_T, best_cost = T, cost
        if it == level.iterations:
            break
        inside = _warp(ones, M, shape, padding="zeros")
        if fm is not None:
            inside = inside * fm
        U = _fit_update(feat_f, warped, inside, af, level, settings)
        if U is None:
            break
        T_new = T @ U
        if not _acceptable(T_new, settings.max_scale):
            log.warning("affine level %d iteration %d: update rejected (scales %s, det "
                        "%.3g), keeping the previous estimate", factor, it + 1,
                        np.round(_scales(T_new), 3).tolist(), np.linalg.det(T_new[:3, :3]))
            break
        T = T_new
        move = np.linalg.inv(af) @ (U - np.eye(4)) @ af @ corners
        if np.abs(move[:3]).max() < settings.tol:
            M = voxel_map(T, af, am)
            cost = cost_of(_warp(feat_m, M, shape), M)
            if cost < best_cost:
                best_T, best_cost = T, cost
            break
    return best_T, best_cost


def register_affine(fixed: ArrayLike, moving: ArrayLike, fixed_affine: np.ndarray,
                    moving_affine: np.ndarray, settings: AffineSettings = AffineSettings(),
                    init: str = "com", initial: np.ndarray | None = None,
                    device: torch.device | str | None = None,
                    fixed_mask: ArrayLike | None = None,
                    moving_mask: ArrayLike | None = None) -> np.ndarray:
    """Affine transform ``T`` (4x4, world mm) with ``T @ p_fixed = p_moving``.

    Args:
        fixed, moving: 3-D volumes (numpy or torch, or ``(1, 1, D, H, W)``), any modality, any
            grids; ``fixed_affine`` / ``moving_affine`` their NIfTI voxel-to-world affines.
        settings: pyramid, block matching, fit and stopping settings (:class:`AffineSettings`).
        init: ``"com"`` | ``"search"`` | ``"fov"`` | ``"identity"``
            (:func:`initial_transform`), ignored when ``initial`` (a 4x4 starting transform)
            is given.
        device: torch device for the features (default: the input tensor's, else CPU).
        fixed_mask, moving_mask: field-of-view masks on the images' grids (nonzero = voxel
            came from the scan, 0 = padding), or None (every voxel counts). Padding then
            takes part in neither the initialisation nor the block matching nor the MIND
            distance that picks each level's best iterate.

    Returns:
        ``T`` as a 4x4 ``numpy.float64`` array: fixed world point -> moving world point, so
        the moving image resampled onto the fixed grid is ``moving(inv(A_m) @ T @ A_f @ v)``.
        Its linear part has a positive determinant and singular values within
        ``[1 / settings.max_scale, settings.max_scale]`` whenever the initial transform has.
    """
    fixed_affine = np.asarray(fixed_affine, float)
    moving_affine = np.asarray(moving_affine, float)
    f_vol, m_vol = _as_volume(fixed, device), _as_volume(moving, device)
    m_vol = m_vol.to(f_vol.device)
    f_mask = None if fixed_mask is None else (_as_volume(fixed_mask, f_vol.device) > 0).float()
    m_mask = None if moving_mask is None else (_as_volume(moving_mask, f_vol.device) > 0).float()
    for name, vol, mask in (("fixed", f_vol, f_mask), ("moving", m_vol, m_mask)):
        if mask is not None and mask.shape != vol.shape:
            raise ValueError(f"{name}_mask has shape {tuple(mask.shape[2:])}, the image "
                             f"{tuple(vol.shape[2:])}")
    levels = _plan_levels(f_vol, m_vol, settings, f_mask, m_mask)
    if initial is not None:
        starts = [np.asarray(initial, float).copy()]
    else:
        starts = initial_starts(f_vol, m_vol, fixed_affine, moving_affine, init,
                                fixed_mask=f_mask, moving_mask=m_mask, settings=settings)
    best_T, best_cost = starts[0], np.inf
    with torch.no_grad():
        for n, T in enumerate(starts):
            cost = np.inf
            for level in levels:
                T, cost = _register_level(T, f_vol, m_vol, fixed_affine, moving_affine, level,
                                          settings, f_mask, m_mask)
            if len(starts) > 1:
                log.info("affine start %d of %d: final MIND distance %.5g", n + 1,
                         len(starts), cost)
            if n == 0 or cost < best_cost:
                best_T, best_cost = T, cost
    return best_T
