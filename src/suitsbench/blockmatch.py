"""Block matching on feature volumes and the trimmed least-squares affine fit to its matches.

The two steps of one iteration of the affine pre-registration (:mod:`suitsbench.affine`):

1. **Block matching** (:func:`block_match`): for a grid of ``block``-sized blocks (stride
   ``stride``) the mean SSD of the feature channels (MIND-SSC in :mod:`suitsbench.affine`) is
   evaluated for every integer displacement in ``[-search, search]^3`` (voxels); the best
   displacement per block is refined to sub-voxel precision by a parabola through its
   neighbours on each axis. :func:`distinctive_pairs` drops the blocks whose moving block lies
   mostly outside the moving field of view and the least distinctive ones (smallest
   ``mean cost - best cost``), and turns the rest into weighted point pairs in world
   millimetres.
2. **Trimmed least squares** (:func:`trimmed_affine_fit`): an affine is fitted to the
   (block centre, centre + displacement) pairs; the ``trim`` fraction with the smallest
   residuals is kept and the fit repeated (``iterations`` times).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["block_match", "distinctive_pairs", "grid_noise_scale", "trimmed_affine_fit"]

_COND_MAX = 1e12


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


def distinctive_pairs(centres: torch.Tensor, disp: torch.Tensor, distinct: torch.Tensor,
                      valid: torch.Tensor, keep_distinctive: float, affine: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point pairs and per-axis weights for :func:`trimmed_affine_fit` from a block match.

    Args:
        centres, disp, distinct: the output of :func:`block_match` (``(N, 3)`` each).
        valid: ``(N,)`` boolean, the blocks that lie mostly inside the moving field of view.
        keep_distinctive: fraction of the valid blocks (largest summed per-axis
            distinctiveness) that is kept; 1 keeps all.
        affine: voxel-to-world affine (4x4) of the grid the blocks live on.

    Returns:
        ``src (K, 3)`` block centres and ``dst (K, 3)`` centres + displacements, both in world
        millimetres, and ``weights (K, 3)``: each block's distinctiveness along each axis over
        the 90th percentile of the kept blocks' values, clipped to ``[0, 1]`` (all 1 when that
        percentile is 0), so blocks that do not constrain an axis do not decide it.
    """
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
    src = c @ affine[:3, :3].T + affine[:3, 3]
    dst = (c + dv) @ affine[:3, :3].T + affine[:3, 3]
    return src, dst, w.double().cpu().numpy()


def grid_noise_scale(affine: np.ndarray) -> float:
    """Mean voxel spacing (mm, the cube root of the voxel volume) of a grid with ``affine``:
    the ``noise_scale`` of :func:`trimmed_affine_fit` for pairs matched on that grid."""
    return float(np.abs(np.linalg.det(affine[:3, :3])) ** (1 / 3))


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
