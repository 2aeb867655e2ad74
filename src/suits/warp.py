"""Dense displacement fields: warping, label warping, resizing and the update upsampling.

Conventions (``docs/architecture.md``): a field ``u`` is ``(B, 3, D, H, W)`` in voxel units of
the grid it lives on, channel 0 along ``D``, 1 along ``H``, 2 along ``W``;
``warped(x) = img(x + u(x))``, trilinear, border padding, ``grid_sample`` with
``align_corners=True`` (voxel index ``0`` and ``n-1`` are the normalised ``-1`` and ``+1``).

Feature grids: a FeatCNN with downsampling factor ``f`` puts its output voxel ``i`` at image
voxel ``i*f`` (``suits.featcnn``), so feature grid size = ``ceil(n / f)``. Moving a field
between the image grid and such a grid is exact with ``downsample_field(u, f)`` and
``upsample_field(du, shape, factor=f)``; ``upsample_field_strided`` is their composition
evaluated on the feature grid only; ``resize_field`` is the generic ``align_corners``
resize between two grids that span the same extent (voxel ``n-1`` on ``m-1``).
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "identity_grid",
    "warp",
    "one_hot",
    "warp_labels",
    "warped_label_probability",
    "resize_field",
    "downsample_field",
    "upsample_field",
    "upsample_field_strided",
    "box_filter",
    "box_filter_strided",
]


def identity_grid(shape: Sequence[int], device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Voxel coordinates of a grid: ``(1, 3, D, H, W)`` with ``grid[0, c, i, j, k] = (i, j, k)[c]``."""
    D, H, W = (int(s) for s in shape)
    axes = [torch.arange(n, device=device, dtype=dtype) for n in (D, H, W)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


def _normalised_grid(coords: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Voxel coordinates ``(B, 3, d, h, w)`` (channels D, H, W of a source grid of ``shape``) to
    a ``grid_sample`` grid ``(B, d, h, w, 3)`` (last axis x=W, y=H, z=D), ``align_corners=True``."""
    scale = torch.tensor([2.0 / max(int(n) - 1, 1) for n in shape],
                         device=coords.device, dtype=coords.dtype).view(1, 3, 1, 1, 1)
    norm = coords * scale - 1.0
    return norm.flip(1).permute(0, 2, 3, 4, 1)


def _sampling_grid(u: torch.Tensor, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """``grid_sample`` grid ``(B, D, H, W, 3)`` (x=W, y=H, z=D, ``align_corners=True``) of the
    points ``x + u(x)``: per component ``u_a * 2/(n_a-1) + (x_a * 2/(n_a-1) - 1)``, one fused
    pass per axis with the identity as a broadcast 1-D ramp (the same values as
    ``_normalised_grid(identity_grid + u)`` up to rounding, without the full-size identity grid,
    flip and permute copies). Differentiable w.r.t. ``u``."""
    comps = []
    for a in (2, 1, 0):
        n = int(shape[a])
        scale = 2.0 / max(n - 1, 1)
        view = [1, 1, 1]
        view[a] = n
        ramp = (torch.arange(n, device=u.device, dtype=u.dtype) * scale - 1.0).view(1, *view)
        comps.append(torch.add(ramp, u[:, a], alpha=scale))
    return torch.stack(comps, dim=-1).to(dtype)


def _check_field(u: torch.Tensor) -> None:
    if u.dim() != 5 or u.shape[1] != 3:
        raise ValueError(f"a displacement field is (B, 3, D, H, W), got {tuple(u.shape)}")


def warp(img: torch.Tensor, u: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``warped(x) = img(x + u(x))`` (trilinear for ``mode="bilinear"``), border padding.

    Args:
        img: ``(B, C, D, H, W)``; a batch of 1 is broadcast over ``u``'s batch.
        u: ``(B, 3, D, H, W)`` displacement in voxels of the same grid.
        mode: ``"bilinear"`` (trilinear in 3D) or ``"nearest"``.

    Differentiable with respect to ``img`` and ``u``.
    """
    _check_field(u)
    if img.shape[-3:] != u.shape[-3:]:
        raise ValueError(f"image grid {tuple(img.shape[-3:])} != field grid {tuple(u.shape[-3:])}")
    if img.shape[0] != u.shape[0]:
        if img.shape[0] == 1:
            img = img.expand(u.shape[0], *img.shape[1:])
        elif u.shape[0] == 1:
            u = u.expand(img.shape[0], *u.shape[1:])
        else:
            raise ValueError(f"batch sizes differ: image {img.shape[0]}, field {u.shape[0]}")
    grid = _sampling_grid(u, img.shape[-3:], img.dtype)
    return F.grid_sample(img, grid, mode=mode, padding_mode="border", align_corners=True)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Index map ``(B, 1, D, H, W)`` or ``(B, D, H, W)`` (integer valued) to one-hot float
    ``(B, K, D, H, W)``; raises ``ValueError`` for labels outside ``[0, K)``."""
    if labels.dim() == 5:
        if labels.shape[1] != 1:
            raise ValueError(f"labels must be (B, 1, D, H, W) or (B, D, H, W), got {tuple(labels.shape)}")
        labels = labels[:, 0]
    if labels.dim() != 4:
        raise ValueError(f"labels must be (B, 1, D, H, W) or (B, D, H, W), got {tuple(labels.shape)}")
    idx = labels.round().long() if labels.is_floating_point() else labels.long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_classes):
        raise ValueError(f"label values must lie in [0, {num_classes}), found "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    out = torch.zeros((idx.shape[0], int(num_classes), *idx.shape[1:]), device=idx.device,
                      dtype=torch.float32)
    return out.scatter_(1, idx.unsqueeze(1), 1.0)   # == F.one_hot(...).permute(...).float()


def warp_labels(labels: torch.Tensor, u: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Warp a label map as one-hot channels, trilinear per channel.

    Returns ``(B, K, D, H, W)`` class probabilities (sum 1 per voxel); ``.argmax(1)`` gives an
    index map. ``num_classes`` counts the background (labels ``0..K-1``).
    """
    return warp(one_hot(labels, num_classes).to(u.dtype), u, mode="bilinear")


def warped_label_probability(labels: torch.Tensor, u: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``warp_labels(labels, u, K).gather(1, target)`` without the ``K`` warped channels.

    The trilinearly warped one-hot probability of class ``target(x)`` at every voxel is
    ``sum over the 8 corners c of the sample point x + u(x) of w_c(x) * [labels(c) == target(x)]``
    (border clamp, ``align_corners=True``: the same points and weights as :func:`warp`), so it
    needs 8 gathers from the index map instead of ``K`` interpolated channels: the cost no
    longer grows with the number of classes, and the backward pass only touches the weights.
    Values equal ``warp_labels``'s; so does the gradient w.r.t. ``u`` almost everywhere (on the
    voxel lattice itself, where trilinear interpolation is not differentiable, the one-sided
    derivative may differ from ``grid_sample``'s).

    Args:
        labels: moving index map ``(B, 1, D, H, W)`` or ``(B, D, H, W)`` (integer valued;
            float maps are rounded).
        u: ``(B, 3, D, H, W)`` field in voxels.
        target: ``(B, 1, D, H, W)`` or ``(B, D, H, W)`` class per voxel (e.g. the fixed labels).
        A batch of 1 in any of the three is broadcast over the others.

    Returns:
        ``(B, D, H, W)`` probabilities in ``[0, 1]`` (``u``'s dtype), differentiable w.r.t. ``u``.
    """
    _check_field(u)
    shape = tuple(int(n) for n in u.shape[-3:])

    def index_map(x: torch.Tensor, name: str) -> torch.Tensor:
        if x.dim() == 5:
            if x.shape[1] != 1:
                raise ValueError(f"{name} must be an index map (B, 1, D, H, W), got {tuple(x.shape)}")
            x = x[:, 0]
        if x.dim() != 4 or tuple(x.shape[-3:]) != shape:
            raise ValueError(f"{name} {tuple(x.shape)} and field {tuple(u.shape)} must share one grid")
        return (x.round() if x.is_floating_point() else x).to(torch.int32)

    lab, tgt = index_map(labels, "labels"), index_map(target, "target")
    B = max(u.shape[0], lab.shape[0], tgt.shape[0])
    if any(n not in (1, B) for n in (u.shape[0], lab.shape[0], tgt.shape[0])):
        raise ValueError(f"batch sizes differ: labels {lab.shape[0]}, target {tgt.shape[0]}, "
                         f"field {u.shape[0]}")
    u = u.expand(B, *u.shape[1:])
    lab = lab.expand(B, *shape).reshape(B, -1)
    tgt = tgt.expand(B, *shape)
    base, w0, w1 = None, [], []
    strides = (shape[1] * shape[2], shape[2], 1)
    for a in range(3):
        n = shape[a]
        view = [1, 1, 1]
        view[a] = n
        ramp = torch.arange(n, device=u.device, dtype=u.dtype).view(1, *view)
        pos = (ramp + u[:, a]).clamp(0, n - 1)                      # border padding
        i0 = pos.detach().floor().clamp(max=max(n - 2, 0))
        frac = pos - i0                                             # in [0, 1]
        w0.append(1.0 - frac)
        w1.append(frac)
        term = i0.long() * strides[a]
        base = term if base is None else base + term
    base = base.reshape(B, -1)
    step = [strides[a] if shape[a] > 1 else 0 for a in range(3)]
    wxy = {(bi, bj): (w1[0] if bi else w0[0]) * (w1[1] if bj else w0[1])
           for bi in (0, 1) for bj in (0, 1)}
    p = None
    for bi in (0, 1):
        for bj in (0, 1):
            for bk in (0, 1):
                offset = bi * step[0] + bj * step[1] + bk * step[2]
                corner = lab.gather(1, base + offset if offset else base).view(B, *shape)
                w = wxy[bi, bj] * (w1[2] if bk else w0[2])
                term = torch.where(corner == tgt, w, 0.0)
                p = term if p is None else p + term
    return p


def resize_field(u: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Trilinear resize of a field to another grid covering the same extent (``align_corners``:
    voxel ``0`` on ``0`` and ``n-1`` on ``m-1``); component ``c`` is multiplied by
    ``(m_c - 1) / (n_c - 1)`` so it stays in voxel units of the new grid."""
    _check_field(u)
    shape = tuple(int(s) for s in shape)
    old = u.shape[-3:]
    out = F.interpolate(u, size=shape, mode="trilinear", align_corners=True) if tuple(old) != shape else u
    ratio = torch.tensor([(m - 1) / (n - 1) if n > 1 else 1.0 for n, m in zip(old, shape)],
                         device=u.device, dtype=u.dtype).view(1, 3, 1, 1, 1)
    return out * ratio


def downsample_field(u: torch.Tensor, factor: int) -> torch.Tensor:
    """Image-grid field to a stride-``factor`` feature grid (feature voxel ``i`` = image voxel
    ``i*factor``): strided sampling, values divided by ``factor``. Size ``ceil(n / factor)``."""
    _check_field(u)
    f = int(factor)
    return u[..., ::f, ::f, ::f] / f


def box_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Averaging filter of odd kernel ``size`` per channel, replicate padding, shape preserved;
    ``size`` 0 or 1 returns ``x``.

    Separable: one 1-D average pass per axis (the cubic box is the product of three 1-D boxes,
    and replicate padding clamps each index separately), equal to a ``size**3`` average up to
    float rounding but ``3*size`` instead of ``size**3`` additions per voxel.
    """
    size = int(size)
    if size <= 1:
        return x
    if size % 2 == 0:
        raise ValueError(f"box filter size must be odd (centred), got {size}")
    r = size // 2
    for a in range(3):                                   # W, H, D
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * a] = pad[2 * a + 1] = r
        kernel = [1, 1, 1]
        kernel[2 - a] = size
        x = F.avg_pool3d(F.pad(x, pad, mode="replicate"), kernel, stride=1)
    return x


@functools.lru_cache(maxsize=64)
def _axis_matrix(n: int, m: int, factor: int | None, smooth: int, device: torch.device,
                 dtype: torch.dtype) -> torch.Tensor:
    """``(n, m)``: 1-D linear interpolation from ``m`` to ``n`` samples followed by the 1-D box
    filter of size ``smooth`` (replicate padding), ``upsample_field`` along one axis.

    Output sample ``x`` reads the input at ``p = x / factor`` (``factor`` given) or
    ``p = x (m-1)/(n-1)`` (``align_corners``), clamped to ``[0, m-1]`` (border padding), with
    the weights ``1 - t`` and ``t`` of its two neighbours. Built in float64, then cast.
    """
    with torch.inference_mode(False), torch.no_grad():   # cached: must be a normal tensor
        x = torch.arange(n, dtype=torch.float64, device=device)
        if factor is not None:
            p = x / float(factor)
        else:
            p = x * ((m - 1) / (n - 1)) if n > 1 else torch.zeros_like(x)
        p = p.clamp(0.0, float(m - 1))
        i0 = p.floor().long().clamp(max=m - 1)
        i1 = (i0 + 1).clamp(max=m - 1)
        t = p - i0.to(torch.float64)
        mat = torch.zeros(n, m, dtype=torch.float64, device=device)
        rows = torch.arange(n, device=device)
        mat.index_put_((rows, i0), 1.0 - t, accumulate=True)
        mat.index_put_((rows, i1), t, accumulate=True)
        if smooth > 1:
            r = smooth // 2
            src = (rows.view(-1, 1) + torch.arange(-r, r + 1, device=device).view(1, -1)).clamp(0, n - 1)
            box = torch.zeros(n, n, dtype=torch.float64, device=device)
            box.index_put_((rows.view(-1, 1).expand_as(src), src),
                           torch.full(src.shape, 1.0 / smooth, dtype=torch.float64, device=device),
                           accumulate=True)
            mat = box @ mat
        return mat.to(dtype).contiguous()


@functools.lru_cache(maxsize=64)
def _box_stride_matrix(n: int, size: int, factor: int, device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
    """``(ceil(n/factor), n)``: row ``i`` averages the ``size`` samples centred on ``i*factor``
    with replicate padding (indices clamped to ``[0, n-1]``)."""
    with torch.inference_mode(False), torch.no_grad():
        m = -(-n // factor)
        r = size // 2
        rows = torch.arange(m, device=device)
        src = (rows.view(-1, 1) * factor + torch.arange(-r, r + 1, device=device).view(1, -1)).clamp(0, n - 1)
        mat = torch.zeros(m, n, dtype=torch.float64, device=device)
        mat.index_put_((rows.view(-1, 1).expand_as(src), src),
                       torch.full(src.shape, 1.0 / size, dtype=torch.float64, device=device), accumulate=True)
        return mat.to(dtype).contiguous()


def box_filter_strided(x: torch.Tensor, size: int, factor: int) -> torch.Tensor:
    """``box_filter(x, size)[..., ::factor, ::factor, ::factor]`` evaluated only where it is
    kept: one ``(ceil(n/f), n)`` averaging matrix per axis (cached), applied as three matrix
    products, without the padded copy of ``x``. Equal up to float rounding. ``x``
    ``(B, C, D, H, W)`` floating point; differentiable."""
    size, f = int(size), int(factor)
    if f < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if size > 1 and size % 2 == 0:
        raise ValueError(f"box filter size must be odd (centred), got {size}")
    if x.dim() != 5:
        raise ValueError(f"expected (B, C, D, H, W), got {tuple(x.shape)}")
    mats = [_box_stride_matrix(int(n), max(size, 1), f, x.device, x.dtype) for n in x.shape[-3:]]
    return _apply_separable(x, mats)


def _apply_separable(x: torch.Tensor, mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """``x`` ``(B, C, d, h, w)`` -> ``(B, C, D, H, W)`` with ``mats`` ``(D, d), (H, h), (W, w)``
    applied along the three axes (plain matrix products, no transposes of ``x``)."""
    B, C, d, h, w = x.shape
    KD, KH, KW = mats
    D, H, W = KD.shape[0], KH.shape[0], KW.shape[0]
    y = torch.matmul(x.reshape(B * C * d * h, w), KW.t())                  # (B C d h, W)
    y = torch.matmul(KH, y.reshape(B * C * d, h, W))                       # (B C d, H, W)
    y = torch.matmul(KD, y.reshape(B * C, d, H * W))                       # (B C, D, H W)
    return y.reshape(B, C, D, H, W)


def upsample_field(du: torch.Tensor, shape: Sequence[int], smooth: int = 5,
                   factor: int | None = None) -> torch.Tensor:
    """The paper's update upsampling (Sec. 4.2): trilinear to the image grid, then a box filter
    of kernel size ``smooth`` (5 in the paper; trilinear + box = the quadratic B-spline model
    with control points every 4th voxel). ``smooth`` 0 or 1 disables the filter.

    Args:
        du: ``(B, 3, d, h, w)`` field in voxels of its grid.
        shape: target grid ``(D, H, W)``.
        smooth: odd box size, or 0/1 for none.
        factor: ``None``: as ``resize_field`` (grids span the same extent). An integer ``f``:
            ``du`` lives on a FeatCNN feature grid (voxel ``i`` at image voxel ``i*f``); image
            voxel ``x`` samples ``du`` at ``x/f`` (border-clamped past the last feature voxel)
            and the values are multiplied by ``f``. Exact inverse of ``downsample_field`` on
            the strided voxels.

    Trilinear interpolation, replicate padding and the cubic box are all tensor products of
    1-D operators, so the whole map is applied as one ``(n, m)`` matrix per axis (cached),
    i.e. three small matrix products instead of ``grid_sample`` plus a ``smooth**3`` average;
    identical to that direct form up to float rounding (``tests/test_warp.py`` compares).
    Differentiable w.r.t. ``du``.
    """
    _check_field(du)
    shape = tuple(int(s) for s in shape)
    smooth = int(smooth)
    if smooth > 1 and smooth % 2 == 0:
        raise ValueError(f"box filter size must be odd (centred), got {smooth}")
    small = tuple(int(s) for s in du.shape[-3:])
    f = None if factor is None else int(factor)
    if f is not None and f < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    mats = [_axis_matrix(n, m, f, max(smooth, 1), du.device, du.dtype) for n, m in zip(shape, small)]
    up = _apply_separable(du, mats)
    if f is not None:
        return up * float(f)
    ratio = torch.tensor([(n - 1) / (m - 1) if m > 1 else 1.0 for m, n in zip(small, shape)],
                         device=du.device, dtype=du.dtype).view(1, 3, 1, 1, 1)
    return up * ratio


@functools.lru_cache(maxsize=64)
def _axis_matrix_strided(n: int, m: int, factor: int, smooth: int, device: torch.device,
                         dtype: torch.dtype) -> torch.Tensor:
    """``(m, m)``: the rows ``0, f, 2f, ...`` of :func:`_axis_matrix` ``(n, m)``."""
    with torch.inference_mode(False), torch.no_grad():
        return _axis_matrix(n, m, factor, smooth, device, dtype)[::factor].contiguous()


def upsample_field_strided(du: torch.Tensor, shape: Sequence[int], factor: int,
                           smooth: int = 5) -> torch.Tensor:
    """``downsample_field(upsample_field(du, shape, smooth, factor), factor)`` evaluated only on
    the feature grid: a feature-grid update as the iteration sees it on the feature grid after
    its round trip through the image grid (trilinear, box filter of size ``smooth``, strided
    sampling; the factors ``f`` and ``1/f`` cancel). The map is linear and separable, so it is
    the rows ``i*f`` of the per-axis matrices of :func:`upsample_field`: three products of
    size ``d**2`` instead of an image-grid field. Equal up to float rounding; differentiable.

    ``du`` ``(B, 3, d, h, w)`` with ``(d, h, w) = ceil(shape / factor)``; returns the same shape.
    """
    _check_field(du)
    shape = tuple(int(s) for s in shape)
    f, smooth = int(factor), int(smooth)
    if f < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    if smooth > 1 and smooth % 2 == 0:
        raise ValueError(f"box filter size must be odd (centred), got {smooth}")
    small = tuple(int(s) for s in du.shape[-3:])
    if small != tuple(-(-n // f) for n in shape):
        raise ValueError(f"field on {small} is not the factor-{f} feature grid of {shape}")
    mats = [_axis_matrix_strided(n, m, f, max(smooth, 1), du.device, du.dtype)
            for n, m in zip(shape, small)]
    return _apply_separable(du, mats)
