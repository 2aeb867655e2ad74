"""Dense displacement fields: warping, label warping, resizing and the update upsampling.

Conventions (``docs/architecture.md``): a field ``u`` is ``(B, 3, D, H, W)`` in voxel units of
the grid it lives on, channel 0 along ``D``, 1 along ``H``, 2 along ``W``;
``warped(x) = img(x + u(x))``, trilinear, border padding, ``grid_sample`` with
``align_corners=True`` (voxel index ``0`` and ``n-1`` are the normalised ``-1`` and ``+1``).

Feature grids: a FeatCNN with downsampling factor ``f`` puts its output voxel ``i`` at image
voxel ``i*f`` (``suits.featcnn``), so feature grid size = ``ceil(n / f)``. Moving a field
between the image grid and such a grid is exact with ``downsample_field(u, f)`` and
``upsample_field(du, shape, factor=f)``; ``resize_field`` is the generic ``align_corners``
resize between two grids that span the same extent (voxel ``n-1`` on ``m-1``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "identity_grid",
    "warp",
    "one_hot",
    "warp_labels",
    "resize_field",
    "downsample_field",
    "upsample_field",
    "box_filter",
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
    shape = img.shape[-3:]
    coords = identity_grid(shape, device=u.device, dtype=u.dtype) + u
    grid = _normalised_grid(coords, shape).to(img.dtype)
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
    return F.one_hot(idx, num_classes).permute(0, 4, 1, 2, 3).float()


def warp_labels(labels: torch.Tensor, u: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Warp a label map as one-hot channels, trilinear per channel.

    Returns ``(B, K, D, H, W)`` class probabilities (sum 1 per voxel); ``.argmax(1)`` gives an
    index map. ``num_classes`` counts the background (labels ``0..K-1``).
    """
    return warp(one_hot(labels, num_classes).to(u.dtype), u, mode="bilinear")


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
    ``size`` 0 or 1 returns ``x``."""
    size = int(size)
    if size <= 1:
        return x
    if size % 2 == 0:
        raise ValueError(f"box filter size must be odd (centred), got {size}")
    r = size // 2
    return F.avg_pool3d(F.pad(x, (r, r, r, r, r, r), mode="replicate"), size, stride=1)


def upsample_field(du: torch.Tensor, shape: Sequence[int], smooth: int = 5,
                   factor: int | None = None) -> torch.Tensor:
    """The paper's update upsampling (Sec. 4.2): trilinear to the image grid, then a box filter
    of kernel size ``smooth`` (5 in the paper; trilinear + box = the quadratic B-spline model
    with control points every 4th voxel). ``smooth`` 0 or 1 disables the filter.

    Args:
        du: ``(B, 3, d, h, w)`` field in voxels of its grid.
        shape: target grid ``(D, H, W)``.
        smooth: odd box size, or 0/1 for none.
        factor: ``None``: ``resize_field`` (grids span the same extent). An integer ``f``: ``du``
            lives on a FeatCNN feature grid (voxel ``i`` at image voxel ``i*f``); image voxel ``x``
            samples ``du`` at ``x/f`` (border-clamped past the last feature voxel) and the
            values are multiplied by ``f``. Exact inverse of ``downsample_field`` on the strided
            voxels.
    """
    _check_field(du)
    shape = tuple(int(s) for s in shape)
    if factor is None:
        up = resize_field(du, shape)
    else:
        f = float(factor)
        coords = identity_grid(shape, device=du.device, dtype=du.dtype) / f
        grid = _normalised_grid(coords.expand(du.shape[0], -1, -1, -1, -1), du.shape[-3:])
        up = F.grid_sample(du, grid, mode="bilinear", padding_mode="border", align_corners=True) * f
    return box_filter(up, smooth)
