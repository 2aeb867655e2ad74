"""Voxel maps of world-millimetre affine transforms and resampling through them, with numpy and
scipy only (no torch): the part of :mod:`suitsbench.affine` that the resampling jobs use.

Convention (as in :mod:`suitsbench.affine`): a transform ``T`` is a 4x4 ``numpy.float64``
matrix in world millimetres that maps a point of the fixed / output space to the corresponding
point of the moving / input image.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    import torch

__all__ = ["voxel_map", "resample_affine"]


def voxel_map(T: np.ndarray, fixed_affine: np.ndarray, moving_affine: np.ndarray) -> np.ndarray:
    """4x4 map from fixed voxel indices to moving voxel indices: ``inv(A_m) @ T @ A_f``."""
    return np.linalg.inv(np.asarray(moving_affine, float)) @ np.asarray(T, float) @ np.asarray(
        fixed_affine, float)


def resample_affine(moving: np.ndarray | torch.Tensor, moving_affine: np.ndarray, T: np.ndarray,
                    fixed_affine: np.ndarray, fixed_shape: Sequence[int], order: int = 1,
                    cval: float = 0.0) -> np.ndarray:
    """Moving image on the fixed grid through ``T`` (fixed world -> moving world).

    ``moving``: a 3-D array, optionally with leading 1-axes; a tensor is copied to host numpy.
    ``order`` 1 (trilinear) or 0 (nearest, for labels); outside the moving field of view the
    value is ``cval``. Returns a ``numpy`` array of ``fixed_shape`` (``float32`` for
    ``order > 0``, the dtype of ``moving`` for ``order=0``).
    """
    data = moving.detach().cpu().numpy() if hasattr(moving, "detach") else np.asarray(moving)
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    m = voxel_map(T, fixed_affine, moving_affine)
    src = data.astype(np.float32) if order > 0 else data
    return ndimage.affine_transform(src, m[:3, :3], offset=m[:3, 3],
                                    output_shape=tuple(int(s) for s in fixed_shape),
                                    order=order, mode="constant", cval=cval)
