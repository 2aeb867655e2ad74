"""Global initialisation of the affine stage: an exhaustive coarse search over translations
(and optionally scales) that finds where one scan lies in another, e.g. an MR slab in a CT.

Block matching (:mod:`suitsbench.affine`) has a capture range of a few search radii (about
+-24 mm at the default settings); a partial scan whose header or centre of mass puts it 90 mm
from its anatomy stays there. :func:`search_translation` looks at every offset instead:

1. Both images go onto one **coarse lattice** with the fixed image's direction cosines and an
   isotropic spacing ``spacing`` mm (default :func:`coarse_spacing`: about 12 cells along the
   smallest field-of-view extent, at most 8 mm): the fixed image over its field of view, the
   moving image pulled back through the start transform ``T0`` (and a scale about its centre)
   over the lattice cells its field of view covers. Each gets a mask of the cells that lie
   inside its field of view (and inside the optional field-of-view mask, e.g. without
   padding), eroded by the MIND-SSC reach.
2. Both are described by MIND-SSC (:func:`suits.mind.mind_ssc`) on the lattice.
3. The masked mean MIND distance ``sum wf wm |F - M|^2 / sum wf wm`` over the overlap of both
   masks is evaluated for **every integer lattice offset** at once by FFT cross-correlation
   (three correlations of masked feature sums). Offsets whose overlap is below
   ``min_overlap`` times the smaller image's masked volume are excluded.
4. The offset (and scale) with the lowest cost wins. :func:`search_initial` keeps the start
   ``T0`` unless the winner's cost is below ``(1 - margin)`` times the start's, so images that
   already agree (e.g. full fields of view whose centres of mass match) keep their start.

The result is a 4x4 transform in world mm (fixed world -> moving world, the convention of
:mod:`suitsbench.affine`): ``T = T0 @ Z(k) @ S(t)`` with ``S(t)`` the translation by the
lattice offset ``t`` and ``Z(k)`` the scale ``k`` about the centre of the moving field of
view (pulled back into fixed world).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage

from suits.mind import mind_ssc

__all__ = ["SearchResult", "coarse_spacing", "search_translation", "search_initial",
           "masked_cost_map"]


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`search_translation`.

    Attributes:
        T: best transform (4x4, fixed world -> moving world).
        cost: its cost (the metric of :func:`masked_cost_map` plus the overlap term).
        overlap: its overlap (cells in both masks) over the smaller image's masked cells.
        start_cost: cost of the start transform ``T0`` (inf when its overlap is below the
            minimum).
        start_overlap: overlap fraction of the start.
        offset_mm: translation of the winner relative to the start (mm, fixed world).
        scale: scale of the winner.
        spacing: lattice spacing (mm).
        candidates: the ``top`` best local minima of the cost over offsets and scales,
            best first, as ``(T, cost)`` (the winner is the first).
    """

    T: np.ndarray
    cost: float
    overlap: float
    start_cost: float
    start_overlap: float
    offset_mm: np.ndarray
    scale: float
    spacing: float
    candidates: tuple = ()


def _fov_extent(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Extent (mm) of the field of view along each array axis."""
    return np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0) * np.asarray(shape[:3], float)


def _masked_shape(shape: Sequence[int], mask: np.ndarray | None) -> tuple[int, ...]:
    """Bounding-box shape (voxels) of the nonzero voxels of ``mask`` (``shape`` without)."""
    if mask is None:
        return tuple(int(s) for s in shape[:3])
    idx = np.argwhere(np.asarray(mask) > 0)
    if not len(idx):
        return tuple(int(s) for s in shape[:3])
    return tuple(int(v) for v in idx.max(0) - idx.min(0) + 1)


def coarse_spacing(fixed_affine: np.ndarray, fixed_shape: Sequence[int],
                   moving_affine: np.ndarray, moving_shape: Sequence[int],
                   cells: int = 12, max_spacing: float = 8.0) -> float:
    """Lattice spacing (mm) of the search: the smallest field-of-view extent of both images
    over ``cells``, at most ``max_spacing`` and at least the larger of the two finest voxel
    sizes."""
    ext = min(_fov_extent(fixed_affine, fixed_shape).min(),
              _fov_extent(moving_affine, moving_shape).min())
    vox = max(np.linalg.norm(np.asarray(a, float)[:3, :3], axis=0).min()
              for a in (fixed_affine, moving_affine))
    return float(max(vox, min(max_spacing, ext / cells)))


def _corners(shape: Sequence[int]) -> np.ndarray:
    return np.array([[i, j, k, 1.0] for i in (-0.5, shape[0] - 0.5)
                     for j in (-0.5, shape[1] - 0.5) for k in (-0.5, shape[2] - 0.5)]).T


def _lattice(fixed_affine: np.ndarray, spacing: float) -> np.ndarray:
    """Affine of the lattice: the fixed image's direction cosines, ``spacing`` mm, index 0 at
    the fixed image's voxel 0."""
    a = np.asarray(fixed_affine, float)
    L = np.eye(4)
    L[:3, :3] = a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0) * spacing
    L[:3, 3] = a[:3, 3]
    return L


def _sample(data: np.ndarray, affine: np.ndarray, mask: np.ndarray | None, B: np.ndarray,
            lattice: np.ndarray, lo: np.ndarray, shape: Sequence[int]
            ) -> tuple[np.ndarray, np.ndarray]:
    """``data`` (voxel-to-world ``affine``) seen through ``B`` (lattice world -> data world) on
    the lattice cells ``lo .. lo + shape - 1``: smoothed to the lattice spacing, trilinear; and
    the mask of cells inside the field of view (and ``mask``)."""
    out_aff = lattice.copy()
    out_aff[:3, 3] = lattice[:3, :3] @ lo + lattice[:3, 3]
    m = np.linalg.inv(np.asarray(affine, float)) @ B @ out_aff
    step = np.linalg.norm(m[:3, :3], axis=1)          # lattice cells per data voxel, per axis
    sigma = np.maximum(0.0, (step - 1.0) / 2.0)
    src = np.asarray(data, np.float32)
    if np.any(sigma > 0):
        src = ndimage.gaussian_filter(src, sigma, mode="nearest")
    shape = tuple(int(s) for s in shape)
    img = ndimage.affine_transform(src, m[:3, :3], offset=m[:3, 3], output_shape=shape,
                                   order=1, mode="nearest")
    fov = np.ones(data.shape, np.float32) if mask is None else np.asarray(mask, np.float32)
    inside = ndimage.affine_transform(fov, m[:3, :3], offset=m[:3, 3], output_shape=shape,
                                      order=1, mode="constant", cval=0.0) > 0.5
    return img, inside


def _features(img: np.ndarray, inside: np.ndarray, radius: int, dilation: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """MIND-SSC ``(C, D, H, W)`` float64 and the mask eroded by the MIND reach."""
    x = torch.from_numpy(np.ascontiguousarray(img, np.float32))[None, None]
    feat = mind_ssc(x, radius, dilation)[0].double()
    reach = int(radius) + int(dilation)
    w = ndimage.binary_erosion(inside, iterations=reach, border_value=0) if reach else inside
    return feat, torch.from_numpy(w.astype(np.float64))


def _xcorr(a: torch.Tensor, b: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``c[d] = sum_v a[v] b[v + d]`` (summed over leading channels) for ``d`` in
    ``-(sa - 1) .. sb - 1`` per axis, index ``d + sa - 1``; ``size`` = ``sa + sb - 1``."""
    fa = torch.fft.rfftn(a, s=size, dim=(-3, -2, -1))
    fb = torch.fft.rfftn(b, s=size, dim=(-3, -2, -1))
    prod = fa.conj() * fb
    if prod.dim() == 4:
        prod = prod.sum(0)
    c = torch.fft.irfftn(prod, s=size, dim=(-3, -2, -1))
    # circular index e = d mod size; move d = -(sa - 1) to index 0
    sa = [int(s) for s in a.shape[-3:]]
    return torch.roll(c, shifts=[s - 1 for s in sa], dims=(-3, -2, -1))


def masked_cost_map(feat_f: torch.Tensor, w_f: torch.Tensor, feat_m: torch.Tensor,
                    w_m: torch.Tensor, metric: str = "ncc") -> tuple[np.ndarray, np.ndarray]:
    """Masked dissimilarity of the features for every integer offset ``d`` (moving cell
    ``v + d`` against fixed cell ``v``) and the overlap count.

    Args:
        feat_f, feat_m: ``(C, ...)`` features; ``w_f``, ``w_m``: their ``(...)`` 0/1 weights.
        metric: ``"ncc"``: ``1 - r`` with ``r`` the correlation of the two feature sets over
            the overlap (each channel centred on its overlap mean, channels pooled), so an
            offset is not favoured because its overlap holds easier content; ``"ssd"``: the
            mean squared feature distance over the overlap.

    Returns:
        ``(cost, overlap)`` arrays of shape ``sf + sm - 1``; entry ``e`` is the offset
        ``d = e - (sf - 1)``. The cost is ``inf`` where the overlap is empty.
    """
    size = [int(a) + int(b) - 1 for a, b in zip(feat_f.shape[-3:], feat_m.shape[-3:])]
    fw, mw = feat_f * w_f, feat_m * w_m
    f2 = (feat_f ** 2).sum(0) * w_f
    m2 = (feat_m ** 2).sum(0) * w_m
    n = np.rint(_xcorr(w_f, w_m, size).numpy())        # 0/1 weights: a cell count
    sf2, sm2 = _xcorr(f2, w_m, size).numpy(), _xcorr(w_f, m2, size).numpy()
    sfm = _xcorr(fw, mw, size).numpy()
    safe = np.maximum(n, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "ssd":
            out = np.maximum((sf2 + sm2 - 2.0 * sfm) / safe, 0.0)
        elif metric == "ncc":
            s_f = torch.stack([_xcorr(fw[c], w_m, size) for c in range(fw.shape[0])]).numpy()
            s_m = torch.stack([_xcorr(w_f, mw[c], size) for c in range(mw.shape[0])]).numpy()
            num = sfm - (s_f * s_m).sum(0) / safe
            vf = np.maximum(sf2 - (s_f ** 2).sum(0) / safe, 0.0)
            vm = np.maximum(sm2 - (s_m ** 2).sum(0) / safe, 0.0)
            den = np.sqrt(vf * vm)
            out = np.where(den > 1e-9 * safe, 1.0 - num / np.maximum(den, 1e-300), np.inf)
        else:
            raise ValueError(f"metric must be 'ncc' or 'ssd', got {metric!r}")
    return np.where(n > 0, out, np.inf), n


def _local_minima(cost: np.ndarray, top: int, separation: int) -> list[tuple[int, ...]]:
    """Indices of the ``top`` lowest finite local minima of ``cost`` (lowest within
    ``separation`` cells along every axis), lowest first."""
    finite = np.isfinite(cost)
    if not finite.any():
        return []
    c = np.where(finite, cost, np.inf)
    low = ndimage.minimum_filter(c, size=2 * int(separation) + 1, mode="constant",
                                 cval=np.inf)
    idx = np.argwhere(finite & (c <= low))
    order = np.argsort(c[tuple(idx.T)], kind="stable")[:int(top)]
    return [tuple(int(v) for v in idx[k]) for k in order]


def search_translation(fixed: np.ndarray, moving: np.ndarray, fixed_affine: np.ndarray,
                       moving_affine: np.ndarray, start: np.ndarray | None = None,
                       fixed_mask: np.ndarray | None = None,
                       moving_mask: np.ndarray | None = None, spacing: float | None = None,
                       scales: Sequence[float] = (1.0,), min_overlap: float = 0.5,
                       radius: int = 1, dilation: int = 1, metric: str = "ncc",
                       overlap_weight: float = 0.5, top: int = 1,
                       separation: int = 2) -> SearchResult:
    """Exhaustive search over the lattice offsets (and ``scales``) of the moving image
    relative to ``start`` (module docstring); returns a :class:`SearchResult`.

    ``fixed_mask`` / ``moving_mask`` (same shape as the images, nonzero = scanned) keep
    padding out of the cost. ``min_overlap``: the fraction of the smaller image's masked
    lattice cells that must overlap for an offset to count. ``overlap_weight`` adds
    ``overlap_weight * (1 - overlap fraction)`` to the cost of ``metric``
    (:func:`masked_cost_map`): a partial scan lies inside the larger one, and an offset that
    slides two full scans apart along a self-similar axis (the spine) is not preferred for
    the part it leaves out. ``top`` > 1 also returns the next best local minima (at least
    ``separation`` lattice cells from a better one along some axis) as candidates.
    """
    fixed = np.asarray(fixed, np.float32).reshape(np.shape(fixed)[-3:])
    moving = np.asarray(moving, np.float32).reshape(np.shape(moving)[-3:])
    fa, ma = np.asarray(fixed_affine, float), np.asarray(moving_affine, float)
    T0 = np.eye(4) if start is None else np.asarray(start, float)
    s = (coarse_spacing(fa, _masked_shape(fixed.shape, fixed_mask), ma,
                        _masked_shape(moving.shape, moving_mask))
         if spacing is None else float(spacing))
    lat = _lattice(fa, s)
    lat_inv = np.linalg.inv(lat)
    # fixed: the lattice cells covering its field of view
    cf = lat_inv @ fa @ _corners(fixed.shape)
    lo_f = np.floor(cf[:3].min(1) + 0.5).astype(int)
    hi_f = np.ceil(cf[:3].max(1) - 0.5).astype(int)
    img_f, in_f = _sample(fixed, fa, fixed_mask, np.eye(4), lat, lo_f, hi_f - lo_f + 1)
    feat_f, w_f = _features(img_f, in_f, radius, dilation)
    nf = float(w_f.sum())
    centre_m = np.append((np.asarray(moving.shape, float) - 1) / 2, 1.0)
    c_world = (np.linalg.inv(T0) @ ma @ centre_m)[:3]        # moving centre in fixed world
    found = []
    start_cost, start_overlap = np.inf, 0.0
    for k in scales:
        Z = np.eye(4)
        Z[:3, :3] *= float(k)
        Z[:3, 3] = c_world - float(k) * c_world
        B = T0 @ Z                                           # fixed world -> moving world
        cm = lat_inv @ np.linalg.inv(B) @ ma @ _corners(moving.shape)
        lo_m = np.floor(cm[:3].min(1) + 0.5).astype(int)
        hi_m = np.ceil(cm[:3].max(1) - 0.5).astype(int)
        img_m, in_m = _sample(moving, ma, moving_mask, B, lat, lo_m, hi_m - lo_m + 1)
        feat_m, w_m = _features(img_m, in_m, radius, dilation)
        nm = float(w_m.sum())
        if nf <= 0 or nm <= 0:
            continue
        cost, n = masked_cost_map(feat_f, w_f, feat_m, w_m, metric)
        frac = n / min(nf, nm)
        cost = np.where(frac >= min_overlap, cost + overlap_weight * (1.0 - frac), np.inf)
        # entry e <-> lattice offset (moving cell index - fixed cell index)
        # e - (sf - 1) + lo_m - lo_f
        base = lo_m - lo_f - (np.asarray(feat_f.shape[-3:]) - 1)
        if float(k) == 1.0:
            e0 = tuple(int(v) for v in -base)
            if all(0 <= e < size for e, size in zip(e0, cost.shape)):
                start_cost, start_overlap = float(cost[e0]), float(frac[e0])
        if not np.isfinite(cost).any():
            continue
        for e in _local_minima(cost, max(1, int(top)), separation):
            found.append((float(cost[e]), float(frac[e]), np.asarray(e) + base, float(k), B))
    if not found:
        return SearchResult(T0.copy(), np.inf, 0.0, start_cost, start_overlap, np.zeros(3),
                            1.0, s)
    found.sort(key=lambda f: f[0])

    def transform(d: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        S = np.eye(4)
        S[:3, 3] = lat[:3, :3] @ d.astype(float)
        return B @ S, S[:3, 3]

    cost, frac, d, k, B = found[0]
    T, t = transform(d, B)
    cands = tuple((transform(f[2], f[4])[0], f[0]) for f in found[:max(1, int(top))])
    return SearchResult(T, cost, frac, start_cost, start_overlap, t, k, s, cands)


def search_initial(fixed: np.ndarray, moving: np.ndarray, fixed_affine: np.ndarray,
                   moving_affine: np.ndarray, start: np.ndarray, margin: float = 0.1,
                   **kwargs) -> tuple[np.ndarray, SearchResult]:
    """``(T, result)``: the search's winner when its cost is below ``(1 - margin)`` times the
    start's (or the start's overlap is below the minimum), else ``start`` unchanged.
    ``kwargs`` go to :func:`search_translation`."""
    res = search_translation(fixed, moving, fixed_affine, moving_affine, start=start, **kwargs)
    if np.isfinite(res.cost) and res.cost < (1.0 - margin) * res.start_cost:
        return res.T, res
    return np.asarray(start, float).copy(), res
