"""Pairwise multi-modal affine registration by MIND-SSC block matching and trimmed least squares.

The pre-registration of the SUITS paper (section 4: "the multi-modal, multi-level affine method
based on block-matching and trimmed-least squares as described in Heinrich (2018)"), written
anew with torch:

1. **Initialisation** (``init="com"``): a translation that maps the centre of mass of the
   fixed image's foreground onto the moving image's (foreground = above 15 % of the robust
   1-99 % intensity range, which works for CT in HU, MR and z-scored images alike), so images
   whose world coordinates hardly overlap still start aligned; ``"fov"`` aligns the
   field-of-view centres, ``"identity"`` trusts the headers.
2. **Pyramid** (``levels``, coarse to fine): both images are average-pooled by the level factor
   (the pooled grid's affine keeps every cell centre at its world position) and described by
   MIND-SSC (:func:`suits.mind.mind_ssc`) on that grid.
3. **Block matching** (per iteration): the moving MIND features are resampled onto the fixed
   level grid through the current transform (trilinear, ``grid_sample``); for a grid of
   ``block``-sized blocks (stride ``block_stride``) the mean SSD of the 12 channels is evaluated
   for every integer displacement in ``[-search, search]^3`` (level voxels); the best displacement
   per block is refined to sub-voxel precision by a parabola through its neighbours on each
   axis. Blocks whose moving block lies mostly outside the moving field of view, and the least
   distinctive blocks (smallest ``mean cost - best cost``; ``keep_distinctive`` fraction kept),
   are dropped.
4. **Trimmed least squares**: an affine is fitted to the (block centre, centre + displacement)
   pairs in world millimetres; the ``trim`` fraction with the smallest residuals is kept and the
   fit repeated (``trim_iterations`` times). The result is composed with the current estimate.

Convention (everywhere in ``suitsbench.affine`` / ``suitsbench.groupwise``): a transform is a
4x4 ``numpy.float64`` matrix in **world millimetres** (the NIfTI affines' space) that maps a
point ``p`` of the **fixed / output** space to the corresponding point ``T @ p`` of the
**moving / input** image. Resampling the moving image onto the fixed grid therefore samples it
at voxel ``inv(moving_affine) @ T @ fixed_affine @ v`` for every fixed voxel ``v`` ("pull
back"): :func:`resample_affine` does this.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from suits.mind import mind_ssc

log = logging.getLogger(__name__)

__all__ = [
    "register_affine", "resample_affine", "voxel_map", "level_affine", "centre_of_mass",
    "initial_transform", "block_match", "trimmed_affine_fit", "affine_grid_for",
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


def voxel_map(T: np.ndarray, fixed_affine: np.ndarray, moving_affine: np.ndarray) -> np.ndarray:
    """4x4 map from fixed voxel indices to moving voxel indices: ``inv(A_m) @ T @ A_f``."""
    return np.linalg.inv(np.asarray(moving_affine, float)) @ np.asarray(T, float) @ np.asarray(
        fixed_affine, float)


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


def resample_affine(moving: ArrayLike, moving_affine: np.ndarray, T: np.ndarray,
                    fixed_affine: np.ndarray, fixed_shape: Sequence[int], order: int = 1,
                    cval: float = 0.0) -> np.ndarray:
    """Moving image on the fixed grid through ``T`` (fixed world -> moving world).

    ``order`` 1 (trilinear) or 0 (nearest, for labels); outside the moving field of view the
    value is ``cval``. Returns a ``numpy`` array of ``fixed_shape`` (dtype of ``moving``).
    """
    data = moving.detach().cpu().numpy() if isinstance(moving, torch.Tensor) else np.asarray(
        moving)
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    m = voxel_map(T, fixed_affine, moving_affine)
    src = data.astype(np.float32) if order > 0 else data
    return ndimage.affine_transform(src, m[:3, :3], offset=m[:3, 3],
                                    output_shape=tuple(int(s) for s in fixed_shape),
                                    order=order, mode="constant", cval=cval)


def _foreground(img: np.ndarray, fraction: float = 0.15) -> np.ndarray:
    lo, hi = np.percentile(img, [1.0, 99.0])
    return img > lo + fraction * (hi - lo)


def centre_of_mass(image: ArrayLike, affine: np.ndarray) -> np.ndarray:
    """World position (mm) of the centre of mass of the image's foreground (above 15 % of the
    1-99 % percentile range); the field-of-view centre if the foreground is empty."""
    img = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    img = np.asarray(img, np.float32).reshape(img.shape[-3:])
    mask = _foreground(img)
    if mask.any():
        c = np.array(ndimage.center_of_mass(mask))
    else:
        c = (np.asarray(img.shape, float) - 1) / 2
    a = np.asarray(affine, float)
    return a[:3, :3] @ c + a[:3, 3]


def initial_transform(fixed: ArrayLike, moving: ArrayLike, fixed_affine: np.ndarray,
                      moving_affine: np.ndarray, init: str = "com") -> np.ndarray:
    """Initial translation (fixed world -> moving world): ``"com"`` foreground centres of mass,
    ``"fov"`` field-of-view centres, ``"identity"`` the headers as they are."""
    T = np.eye(4)
    if init == "identity":
        return T
    if init == "com":
        T[:3, 3] = centre_of_mass(moving, moving_affine) - centre_of_mass(fixed, fixed_affine)
    elif init == "fov":
        def fov(shape, a):
            c = (np.asarray(shape[-3:], float) - 1) / 2
            return np.asarray(a, float)[:3, :3] @ c + np.asarray(a, float)[:3, 3]
        T[:3, 3] = fov(moving.shape, moving_affine) - fov(fixed.shape, fixed_affine)
    else:
        raise ValueError(f"init must be 'com', 'fov' or 'identity', got {init!r}")
    return T


def block_match(feat_fixed: torch.Tensor, feat_moving: torch.Tensor, search: int, block: int,
                stride: int, subvoxel: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best integer (+ sub-voxel) displacement per block by SSD over a cubic search window.

    Args:
        feat_fixed, feat_moving: ``(1, C, D, H, W)`` features on the same grid (the moving one
            already resampled through the current transform).
        search: displacements ``-search..search`` voxels on each axis.
        block, stride: block size and block-grid stride (voxels); blocks start at voxel 0.

    Returns:
        ``centres (N, 3)`` block centres (voxel indices, float), ``disp (N, 3)`` displacements
        (voxels, i/j/k order), ``distinct (N, 3)`` the per-axis distinctiveness of the match
        (>= 0): on each axis, the smallest cost at least two displacement steps away from the
        best one along the line through it, minus the best cost (one step when the window has
        no such position). It is about 0 on an axis the block's content does not constrain
        (an edge or a tube along that axis, a repeated structure: the aperture problem) and
        large for a sharp, unique minimum. ``N`` = number of blocks, C-ordered over the block
        grid. The cost is the block-mean SSD over the channels up to a per-block constant (the
        fixed features' squared norm); the moving features are replicate-padded beyond the grid.
    """
    s, n = int(search), 2 * int(search) + 1
    D, H, W = feat_fixed.shape[2:]
    pad = F.pad(feat_moving, (s, s, s, s, s, s), mode="replicate")
    # SSD = |f|^2 - 2 f.m + |m|^2; |f|^2 is constant per block and left out (argmin, the
    # parabola and the distinctiveness do not depend on it)
    msq = (pad * pad).sum(1, keepdim=True)
    costs = []
    for a in range(n):
        for b in range(n):
            group = []
            for c in range(n):
                sl = (slice(None), slice(None), slice(a, a + D), slice(b, b + H), slice(c, c + W))
                group.append(msq[sl] - 2.0 * (feat_fixed * pad[sl]).sum(1, keepdim=True))
            pooled = F.avg_pool3d(torch.cat(group, 0), block, stride)  # (n, 1, nd, nh, nw)
            costs.append(pooled.flatten(1))                           # (n, N)
    cost = torch.stack(costs, 0).reshape(n, n, n, -1)                 # (da, db, dc, N)
    nb = cost.shape[-1]
    flat = cost.reshape(-1, nb)
    best = flat.argmin(0)
    best_cost = flat.min(0).values
    ia, ib, ic = best // (n * n), (best // n) % n, best % n
    idx = torch.stack([ia, ib, ic], 1)                                 # (N, 3)
    disp = (idx - s).to(feat_fixed.dtype)
    cols = torch.arange(nb, device=cost.device)
    steps = torch.arange(n, device=cost.device)
    distinct = torch.zeros(nb, 3, dtype=cost.dtype, device=cost.device)
    for axis in range(3):
        # the cost along this axis through the best displacement: (n, N)
        others = [idx[:, k] for k in range(3) if k != axis]
        line = cost.movedim(axis, 0)[:, others[0], others[1], cols]
        gap = (steps[:, None] - idx[None, :, axis]).abs()
        far = gap >= (2 if n >= 5 else 1)
        distinct[:, axis] = torch.where(far, line, torch.full_like(line, float("inf"))
                                        ).min(0).values - best_cost
        if subvoxel and n >= 3:
            lo = (idx[:, axis] - 1).clamp(0, n - 1)
            hi = (idx[:, axis] + 1).clamp(0, n - 1)
            c0, cm, cp = best_cost, line[lo, cols], line[hi, cols]
            den = cm - 2 * c0 + cp
            interior = (idx[:, axis] > 0) & (idx[:, axis] < n - 1) & (den > 1e-12)
            off = torch.where(interior, 0.5 * (cm - cp) / den.clamp_min(1e-12),
                              torch.zeros_like(den)).clamp(-0.5, 0.5)
            disp[:, axis] += off
    distinct = torch.nan_to_num(distinct, posinf=0.0).clamp_min(0.0)
    nd, nh, nw = [(size - block) // stride + 1 for size in (D, H, W)]
    g = torch.stack(torch.meshgrid(*[torch.arange(m, device=cost.device) for m in (nd, nh, nw)],
                                   indexing="ij"), -1).reshape(-1, 3)
    centres = g.to(feat_fixed.dtype) * stride + (block - 1) / 2.0
    return centres, disp, distinct


SELECT_DAMPED = True
_COND_MAX = 1e12
NOISE_SCALE = lambda af: float(np.abs(np.linalg.det(af[:3, :3])) ** (1 / 3))


def trimmed_affine_fit(src: np.ndarray, dst: np.ndarray, trim: float = 0.5,
                       iterations: int = 4, weights: np.ndarray | None = None,
                       ridge: float = 0.0, noise_scale: float | None = None) -> np.ndarray:
    """Affine ``U`` (4x4) with ``U @ [src, 1] ~ [dst, 1]`` by weighted, damped, trimmed least
    squares.

    Each output coordinate ``a`` is a weighted least-squares fit of ``dst[:, a]`` with the
    per-pair, per-axis ``weights[:, a]`` (``(N,)`` or ``(N, 3)``, >= 0; default 1), so a pair
    that constrains only some axes (the aperture problem of block matching) does not decide the
    others. The model is ``dst - src = G (src - c) / r + t`` (``c`` the centroid, ``r`` the RMS
    radius of ``src``): ``G`` is the change of the displacement across the point cloud (mm), so
    the penalty below weighs linear part and translation alike.

    Damping (``ridge`` > 0) pulls the fit towards the identity (no update) with the penalty
    ``lambda_a * n * (|G_a|^2 + t_a^2)`` per axis (``n`` pairs in the fit), as if ``lambda_a * n``
    unit-weight pairs said "no change". Without ``noise_scale``, ``lambda_a = ridge``. With
    ``noise_scale`` (e.g. the block-matching grid spacing in mm) the damping adapts to how well
    the pairs agree: ``lambda_a = ridge * (sigma_a / noise_scale)^2``, ``sigma_a`` the weighted
    RMS residual of axis ``a`` over the kept pairs under the undamped fit. Consistent pairs
    (``sigma`` a fraction of a voxel) are followed almost fully; inconsistent ones (axes the
    images do not determine, e.g. between different patients) hardly move the estimate. Repeated
    fits with updated pairs converge towards the undamped solution where it is well determined.

    Trimming: a first fit uses every pair; then ``iterations`` times only the
    ``ceil(trim * N)`` pairs with the smallest residual under the current (damped) fit are kept
    (residual: weighted mean square over the axes) and the fit is repeated. Fewer than 12
    usable pairs, or a rank-deficient design, return the identity.
    """
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    n = len(src)
    if n < 12:
        return np.eye(4)
    w = np.ones((n, 3)) if weights is None else np.broadcast_to(
        np.asarray(weights, float).reshape(n, -1), (n, 3)).astype(float)
    w = np.where(np.isfinite(w), np.clip(w, 0.0, None), 0.0)
    centre = src.mean(0)
    radius = float(np.sqrt(((src - centre) ** 2).sum(1).mean()))
    if not radius > 0:
        return np.eye(4)
    X = np.concatenate([(src - centre) / radius, np.ones((n, 1))], 1)   # (n, 4)
    Y = dst - src                                                         # (n, 3)
    keep = np.arange(n)
    k = max(12, int(np.ceil(trim * n)))

    def solve(lam: np.ndarray) -> np.ndarray | None:
        Xk, Yk, wk = X[keep], Y[keep], w[keep]
        out = np.zeros((4, 3))
        for a in range(3):
            A = (Xk * wk[:, a:a + 1]).T @ Xk + lam[a] * len(keep) * np.eye(4)
            if not np.all(np.isfinite(A)) or np.linalg.cond(A) > _COND_MAX:
                return None
            out[:, a] = np.linalg.solve(A, (Xk * wk[:, a:a + 1]).T @ Yk[:, a])
        return out

    def damping() -> np.ndarray | None:
        if ridge <= 0:
            return np.zeros(3)
        if noise_scale is None:
            return np.full(3, float(ridge))
        # undamped (numerically regularised) fit -> residual scale of each axis
        beta = solve(np.full(3, 1e-9))
        if beta is None:
            beta = solve(np.full(3, 1e-3))
        if beta is None:
            return None
        r2 = (X[keep] @ beta - Y[keep]) ** 2
        wk = w[keep]
        sigma2 = (r2 * wk).sum(0) / np.maximum(wk.sum(0), 1e-12)
        sigma2[wk.sum(0) <= 0] = np.inf
        return ridge * np.minimum(sigma2 / float(noise_scale) ** 2, 1e6)

    for it in range(iterations + 1):
        lam = damping()
        beta = None if lam is None else solve(lam)
        if beta is None:
            return np.eye(4)
        if it == iterations or k >= n:
            break
        res2 = ((X @ beta - Y) ** 2 * w).sum(1) / np.maximum(w.sum(1), 1e-12)
        res2[w.sum(1) <= 0] = np.inf
        keep = np.argsort(res2, kind="stable")[:k]
    G, t = beta[:3].T / radius, beta[3]                                  # rows: output axes
    U = np.eye(4)
    U[:3, :3] += G
    U[:3, 3] = t - G @ centre
    return U


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


def register_affine(fixed: ArrayLike, moving: ArrayLike, fixed_affine: np.ndarray,
                    moving_affine: np.ndarray, levels: Sequence[int] = (4, 2),
                    iterations: int | Sequence[int] | None = None,
                    block: int | Sequence[int] = 4,
                    block_stride: int | Sequence[int] | None = None,
                    search: int | Sequence[int] | None = None, trim: float = 0.5,
                    trim_iterations: int = 4, keep_distinctive: float = 0.75,
                    ridge: float = 0.05, min_level_size: int = 16, max_scale: float = 1.5,
                    radius: int = 1, dilation: int = 1, init: str = "com",
                    initial: np.ndarray | None = None, tol: float = 0.02,
                    device: torch.device | str | None = None) -> np.ndarray:
    """Affine transform ``T`` (4x4, world mm) with ``T @ p_fixed = p_moving``.

    Args:
        fixed, moving: 3-D volumes (numpy or torch, or ``(1, 1, D, H, W)``), any modality, any
            grids; ``fixed_affine`` / ``moving_affine`` their NIfTI voxel-to-world affines.
        levels: pyramid downsampling factors, coarse to fine. A level whose fixed or moving
            grid has fewer than ``min_level_size`` voxels along an axis is skipped (too few
            blocks per axis for a stable fit; logged); if every level is too small, only the
            finest one runs.
        iterations, search: per level (or one value for all): block-matching iterations and
            search radius in level voxels (``(2*search+1)^3`` displacements). Default
            (``None``): 8 iterations and search 3 on the first level that runs, 5 and 2 on the
            finer ones (e.g. ``levels=(4, 2)`` at 2 mm: +-24 mm, then +-8 mm per iteration).
        block, block_stride: block size and stride in level voxels (stride default
            ``max(1, block // 2)``: half-overlapping blocks).
        trim, trim_iterations: trimmed least squares (fraction kept, refits).
        keep_distinctive: fraction of blocks (largest summed per-axis distinctiveness, see
            :func:`block_match`) used for the fit; each block's displacement then enters the
            fit of each axis with a weight from its distinctiveness along that axis (saturating
            at the 90th percentile), so blocks that do not constrain an axis do not decide it.
        ridge: damping of each update towards no change (:func:`trimmed_affine_fit`): an axis
            the blocks hardly constrain keeps the previous estimate.
        max_scale: an update whose result scales any direction by more than ``max_scale`` (or
            less than ``1 / max_scale``), or is not orientation-preserving, is rejected and the
            level stops (logged). Within a level the iterate with the lowest MIND distance is
            kept, so a level never ends worse than it started by its own criterion.
        radius, dilation: MIND-SSC patch radius and neighbour distance (level voxels).
        init: ``"com"`` | ``"fov"`` | ``"identity"`` (:func:`initial_transform`), ignored when
            ``initial`` (a 4x4 starting transform) is given.
        tol: stop a level early once an update moves no fixed-grid corner by more than ``tol``
            level voxels.
        device: torch device for the features (default: the input tensor's, else CPU).

    Returns:
        ``T`` as a 4x4 ``numpy.float64`` array: fixed world point -> moving world point, so
        the moving image resampled onto the fixed grid is ``moving(inv(A_m) @ T @ A_f @ v)``.
        Its linear part has a positive determinant and singular values within
        ``[1 / max_scale, max_scale]`` whenever the initial transform has.
    """
    fixed_affine = np.asarray(fixed_affine, float)
    moving_affine = np.asarray(moving_affine, float)
    f_vol, m_vol = _as_volume(fixed, device), _as_volume(moving, device)
    m_vol = m_vol.to(f_vol.device)
    nl = len(levels)
    if nl == 0:
        raise ValueError("levels must name at least one downsampling factor")
    explicit = {"iterations": iterations, "search": search}
    blocks = _per_level(block, nl, "block")
    strides = ([max(1, b // 2) for b in blocks] if block_stride is None
               else _per_level(block_stride, nl, "block_stride"))
    iters = _per_level(8 if iterations is None else iterations, nl, "iterations")
    searches = _per_level(3 if search is None else search, nl, "search")

    def grid(x: torch.Tensor, f: int) -> tuple[int, ...]:
        return tuple(int(v) // int(f) for v in x.shape[2:])

    run = [li for li in range(nl)
           if min(grid(f_vol, levels[li]) + grid(m_vol, levels[li])) >= max(min_level_size,
                                                                               blocks[li])]
    for li in range(nl):
        if li not in run:
            log.info("affine level %d: grids %s / %s below %d voxels per axis, skipped",
                     levels[li], grid(f_vol, levels[li]), grid(m_vol, levels[li]),
                     min_level_size)
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
        if explicit["iterations"] is None:
            iters[li] = 8 if pos == 0 else 5
        if explicit["search"] is None:
            searches[li] = 3 if pos == 0 else 2

    if initial is not None:
        T = np.asarray(initial, float).copy()
    else:
        T = initial_transform(f_vol, m_vol, fixed_affine, moving_affine, init)
    with torch.no_grad():
        for li in run:
            factor, n_it, s, b, st = int(levels[li]), iters[li], searches[li], blocks[li], \
                strides[li]
            fl, ml = _pool(f_vol, factor), _pool(m_vol, factor)
            af, am = level_affine(fixed_affine, factor), level_affine(moving_affine, factor)
            feat_f = mind_ssc(fl, radius, dilation)
            feat_m = mind_ssc(ml, radius, dilation)
            ones = torch.ones_like(ml)
            shape = fl.shape[2:]
            corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1)
                                for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]).T
            best_T, best_cost = T, np.inf
            for it in range(n_it + 1):
                M = voxel_map(T, af, am)
                warped = _warp(feat_m, M, shape)
                cost = _level_cost(feat_f, warped)
                if cost < best_cost:
                    best_T, best_cost = T, cost
                if it == n_it:
                    break
                inside = _warp(ones, M, shape, padding="zeros")
                centres, disp, distinct = block_match(feat_f, warped, s, b, st)
                valid = F.avg_pool3d(inside, b, st).flatten() > 0.5
                if valid.sum() < 12:
                    log.warning("affine level %d: fewer than 12 blocks overlap the moving "
                                "image; level stopped", factor)
                    break
                conf = distinct[valid]
                score = conf.sum(1)
                thr = (torch.quantile(score, 1.0 - keep_distinctive) if keep_distinctive < 1
                       else -1.0)
                sel = score >= thr
                use = valid.clone()
                use[valid] = sel
                conf = conf[sel]
                scale = torch.quantile(conf.flatten(), 0.9)
                w = (conf / scale).clamp(0, 1) if scale > 0 else torch.ones_like(conf)
                c = centres[use].double().cpu().numpy()
                dv = disp[use].double().cpu().numpy()
                src = c @ af[:3, :3].T + af[:3, 3]
                dst = (c + dv) @ af[:3, :3].T + af[:3, 3]
                U = trimmed_affine_fit(src, dst, trim, trim_iterations,
                                       weights=w.double().cpu().numpy(), ridge=ridge,
                                       noise_scale=NOISE_SCALE(af))
                T_new = T @ U
                sv = _scales(T_new)
                if (not np.all(np.isfinite(T_new)) or np.linalg.det(T_new[:3, :3]) <= 0
                        or sv.max() > max_scale or sv.min() < 1.0 / max_scale):
                    log.warning("affine level %d iteration %d: update rejected (scales %s, det "
                                "%.3g), keeping the previous estimate", factor, it + 1,
                                np.round(sv, 3).tolist(), np.linalg.det(T_new[:3, :3]))
                    break
                T = T_new
                move = np.linalg.inv(af) @ (U - np.eye(4)) @ af @ corners
                if np.abs(move[:3]).max() < tol:
                    M = voxel_map(T, af, am)
                    cost = _level_cost(feat_f, _warp(feat_m, M, shape))
                    if cost < best_cost:
                        best_T, best_cost = T, cost
                    break
            T = best_T
    return T
