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

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from suits.mind import mind_ssc

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
        (voxels, i/j/k order), ``distinct (N,)`` mean cost minus best cost (>= 0; small =
        ambiguous match). ``N`` = number of blocks, C-ordered over the block grid. The cost
        is the block-mean SSD over the channels up to a per-block constant (the fixed
        features' squared norm); the moving features are replicate-padded beyond the grid.
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
    distinct = flat.mean(0) - flat.min(0).values
    ia, ib, ic = best // (n * n), (best // n) % n, best % n
    idx = torch.stack([ia, ib, ic], 1)                                 # (N, 3)
    disp = (idx - s).to(feat_fixed.dtype)
    if subvoxel and n >= 3:
        cols = torch.arange(nb, device=cost.device)
        for axis in range(3):
            lo_idx, hi_idx = idx.clone(), idx.clone()
            lo_idx[:, axis] = (idx[:, axis] - 1).clamp(0, n - 1)
            hi_idx[:, axis] = (idx[:, axis] + 1).clamp(0, n - 1)
            c0 = cost[idx[:, 0], idx[:, 1], idx[:, 2], cols]
            cm = cost[lo_idx[:, 0], lo_idx[:, 1], lo_idx[:, 2], cols]
            cp = cost[hi_idx[:, 0], hi_idx[:, 1], hi_idx[:, 2], cols]
            den = cm - 2 * c0 + cp
            interior = (idx[:, axis] > 0) & (idx[:, axis] < n - 1) & (den > 1e-12)
            off = torch.where(interior, 0.5 * (cm - cp) / den.clamp_min(1e-12),
                              torch.zeros_like(den)).clamp(-0.5, 0.5)
            disp[:, axis] += off
    nd, nh, nw = [(size - block) // stride + 1 for size in (D, H, W)]
    g = torch.stack(torch.meshgrid(*[torch.arange(m, device=cost.device) for m in (nd, nh, nw)],
                                   indexing="ij"), -1).reshape(-1, 3)
    centres = g.to(feat_fixed.dtype) * stride + (block - 1) / 2.0
    return centres, disp, distinct


def trimmed_affine_fit(src: np.ndarray, dst: np.ndarray, trim: float = 0.5,
                       iterations: int = 4) -> np.ndarray:
    """Affine ``U`` (4x4) with ``U @ [src, 1] ~ [dst, 1]`` by trimmed least squares.

    A first fit uses every pair; then ``iterations`` times only the ``ceil(trim * N)`` pairs with
    the smallest residual under the current fit are kept and the fit is repeated. Fewer than 12
    usable pairs or a rank-deficient design return the identity.
    """
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    n = len(src)
    U = np.eye(4)
    if n < 12:
        return U
    X = np.concatenate([src, np.ones((n, 1))], 1)
    keep = np.arange(n)
    k = max(12, int(np.ceil(trim * n)))
    for it in range(iterations + 1):
        if np.linalg.matrix_rank(X[keep]) < 4:
            return np.eye(4)
        sol, *_ = np.linalg.lstsq(X[keep], dst[keep], rcond=None)     # (4, 3)
        U[:3, :] = sol.T
        if it == iterations or k >= n:
            break
        res = np.linalg.norm(X @ sol - dst, axis=1)
        keep = np.argsort(res, kind="stable")[:k]
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


def register_affine(fixed: ArrayLike, moving: ArrayLike, fixed_affine: np.ndarray,
                    moving_affine: np.ndarray, levels: Sequence[int] = (4, 2),
                    iterations: int | Sequence[int] | None = None,
                    block: int | Sequence[int] = 4,
                    block_stride: int | Sequence[int] | None = None,
                    search: int | Sequence[int] | None = None, trim: float = 0.5,
                    trim_iterations: int = 4, keep_distinctive: float = 0.75,
                    radius: int = 1, dilation: int = 1, init: str = "com",
                    initial: np.ndarray | None = None, tol: float = 0.02,
                    device: torch.device | str | None = None) -> np.ndarray:
    """Affine transform ``T`` (4x4, world mm) with ``T @ p_fixed = p_moving``.

    Args:
        fixed, moving: 3-D volumes (numpy or torch, or ``(1, 1, D, H, W)``), any modality, any
            grids; ``fixed_affine`` / ``moving_affine`` their NIfTI voxel-to-world affines.
        levels: pyramid downsampling factors, coarse to fine.
        iterations, search: per level (or one value for all): block-matching iterations and
            search radius in level voxels (``(2*search+1)^3`` displacements). Default
            (``None``): 8 iterations and search 3 on the first (coarsest) level, 5 and 2 on the
            finer ones (e.g. ``levels=(4, 2)`` at 2 mm: +-24 mm, then +-8 mm per iteration).
        block, block_stride: block size and stride in level voxels (stride default
            ``max(1, block // 2)``: half-overlapping blocks).
        trim, trim_iterations: trimmed least squares (fraction kept, refits).
        keep_distinctive: fraction of blocks (most distinctive cost minimum) used for the fit.
        radius, dilation: MIND-SSC patch radius and neighbour distance (level voxels).
        init: ``"com"`` | ``"fov"`` | ``"identity"`` (:func:`initial_transform`), ignored when
            ``initial`` (a 4x4 starting transform) is given.
        tol: stop a level early once an update moves no fixed-grid corner by more than ``tol``
            level voxels.
        device: torch device for the features (default: the input tensor's, else CPU).

    Returns:
        ``T`` as a 4x4 ``numpy.float64`` array: fixed world point -> moving world point, so
        the moving image resampled onto the fixed grid is ``moving(inv(A_m) @ T @ A_f @ v)``.
    """
    fixed_affine = np.asarray(fixed_affine, float)
    moving_affine = np.asarray(moving_affine, float)
    f_vol, m_vol = _as_volume(fixed, device), _as_volume(moving, device)
    m_vol = m_vol.to(f_vol.device)
    nl = len(levels)
    iters = _per_level([8] + [5] * (nl - 1) if iterations is None else iterations, nl,
                       "iterations")
    searches = _per_level([3] + [2] * (nl - 1) if search is None else search, nl, "search")
    blocks = _per_level(block, nl, "block")
    strides = ([max(1, b // 2) for b in blocks] if block_stride is None
               else _per_level(block_stride, nl, "block_stride"))
    if initial is not None:
        T = np.asarray(initial, float).copy()
    else:
        T = initial_transform(f_vol, m_vol, fixed_affine, moving_affine, init)
    with torch.no_grad():
        for factor, n_it, s, b, st in zip(levels, iters, searches, blocks, strides):
            factor = int(factor)
            fl, ml = _pool(f_vol, factor), _pool(m_vol, factor)
            if min(fl.shape[2:]) < b or min(ml.shape[2:]) < 2:
                continue
            af, am = level_affine(fixed_affine, factor), level_affine(moving_affine, factor)
            feat_f = mind_ssc(fl, radius, dilation)
            feat_m = mind_ssc(ml, radius, dilation)
            ones = torch.ones_like(ml)
            shape = fl.shape[2:]
            corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1)
                                for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]).T
            for _ in range(n_it):
                M = voxel_map(T, af, am)
                warped = _warp(feat_m, M, shape)
                inside = _warp(ones, M, shape, padding="zeros")
                centres, disp, distinct = block_match(feat_f, warped, s, b, st)
                valid = F.avg_pool3d(inside, b, st).flatten() > 0.5
                if valid.sum() < 12:
                    break
                d = distinct[valid]
                thr = torch.quantile(d, 1.0 - keep_distinctive) if keep_distinctive < 1 else -1
                use = valid.clone()
                use[valid] = d >= thr
                c = centres[use].double().cpu().numpy()
                dv = disp[use].double().cpu().numpy()
                src = c @ af[:3, :3].T + af[:3, 3]
                dst = (c + dv) @ af[:3, :3].T + af[:3, 3]
                U = trimmed_affine_fit(src, dst, trim, trim_iterations)
                T = T @ U
                move = np.linalg.inv(af) @ (U - np.eye(4)) @ af @ corners
                if np.abs(move[:3]).max() < tol:
                    break
    return T
