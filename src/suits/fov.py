"""Field-of-view masks: which voxels of an image came from the scan (1) and which are padding (0)."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["binary_fov"]


def binary_fov(mask: torch.Tensor | None, what: str = "mask", shape: Sequence[int] | None = None,
               device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
               ) -> torch.Tensor | None:
    """``mask > 0.5`` as a 0/1 tensor of ``dtype``, or ``None`` when ``mask`` is ``None`` or all
    ones (nothing to mask: callers then run unmasked). ``ValueError`` naming ``what`` when the
    mask's last three sizes differ from ``shape`` (if given) or when it, or one item of a batch
    ``(B, 1, D, H, W)``, has no voxel inside the field of view."""
    if mask is None:
        return None
    if mask.dim() < 3 or mask.numel() == 0:
        raise ValueError(f"{what} must be a 3-D volume or a batch of them, got shape "
                         f"{tuple(mask.shape)}")
    if shape is not None and tuple(mask.shape[-3:]) != tuple(int(n) for n in shape):
        raise ValueError(f"{what} has shape {tuple(mask.shape[-3:])} but its image "
                         f"{tuple(int(n) for n in shape)}: give the field-of-view mask on the "
                         "image's grid")
    m = (mask > 0.5).to(device=device, dtype=dtype)
    if not bool(m.reshape(-1, *m.shape[-3:]).flatten(1).any(1).all()):
        raise ValueError(f"{what} has no voxel inside the field of view: give the image's own "
                         "field-of-view mask")
    return None if bool(m.all()) else m
