"""Field-of-view masks: which voxels of an image came from the scan (1) and which are padding (0).

:func:`binary_fov` takes and returns tensors (it imports torch when called);
:func:`binary_fov_array` is the same for numpy arrays, without torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["binary_fov", "binary_fov_array"]


def _check_shape(mask_shape: tuple[int, ...], size: int, what: str,
                 shape: Sequence[int] | None) -> None:
    if len(mask_shape) < 3 or size == 0:
        raise ValueError(f"{what} must be a 3-D volume or a batch of them, got shape "
                         f"{mask_shape}")
    if shape is not None and mask_shape[-3:] != tuple(int(n) for n in shape):
        raise ValueError(f"{what} has shape {mask_shape[-3:]} but its image "
                         f"{tuple(int(n) for n in shape)}: give the field-of-view mask on the "
                         "image's grid")


def _empty(what: str) -> ValueError:
    return ValueError(f"{what} has no voxel inside the field of view: give the image's own "
                      "field-of-view mask")


def binary_fov(mask: torch.Tensor | None, what: str = "mask", shape: Sequence[int] | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype | None = None
               ) -> torch.Tensor | None:
    """``mask > 0.5`` as a 0/1 tensor of ``dtype`` (``None``: ``torch.float32``), or ``None``
    when ``mask`` is ``None`` or all ones (nothing to mask: callers then run unmasked).
    ``ValueError`` naming ``what`` when the mask's last three sizes differ from ``shape`` (if
    given) or when it, or one item of a batch ``(B, 1, D, H, W)``, has no voxel inside the
    field of view."""
    if mask is None:
        return None
    import torch

    _check_shape(tuple(mask.shape), mask.numel(), what, shape)
    m = (mask > 0.5).to(device=device, dtype=torch.float32 if dtype is None else dtype)
    if not bool(m.reshape(-1, *m.shape[-3:]).flatten(1).any(1).all()):
        raise _empty(what)
    return None if bool(m.all()) else m


def binary_fov_array(mask: np.ndarray | None, what: str = "mask",
                     shape: Sequence[int] | None = None, dtype: np.dtype | str = np.uint8
                     ) -> np.ndarray | None:
    """:func:`binary_fov` for a numpy array: ``mask > 0.5`` as a 0/1 array of ``dtype``, or
    ``None`` when ``mask`` is ``None`` or all ones; the same ``ValueError`` cases."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    _check_shape(tuple(int(n) for n in mask.shape), mask.size, what, shape)
    m = (mask > 0.5).astype(dtype)
    if not m.reshape(-1, int(np.prod(m.shape[-3:]))).any(1).all():
        raise _empty(what)
    return None if m.all() else m
