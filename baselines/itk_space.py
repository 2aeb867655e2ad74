"""NIfTI grids as ITK sees them, and ITK displacement fields as contract fields.

ITK (elastix, ANTs) works in LPS physical space. A NIfTI affine ``A`` (RAS) maps voxel
``(i, j, k)`` to RAS millimetres; ITK's index ``(x, y, z)`` is NIfTI's ``(i, j, k)``, and its
geometry is spacing = column norms of ``diag(-1, -1, 1) @ A[:3, :3]``, direction = that matrix
with unit columns, origin = ``diag(-1, -1, 1) @ A[:3, 3]``.

An ITK displacement field ``d`` (LPS millimetres, on the fixed grid) maps the fixed point ``p``
to the moving point ``p + d(p)``; in fixed-grid voxels that is
``u = A_fix[:3, :3]^-1 @ diag(-1, -1, 1) @ d``, channels ``i, j, k`` (the field contract,
``docs/architecture.md``).

The affine's linear part must be orthogonal up to column scaling (no shear), as ITK images
cannot represent shear; preprocessed (canonical) images always satisfy this.

Only :func:`lps_field_to_voxels` (a tensor result) imports torch, when called.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["LPS", "volume_array", "itk_geometry", "lps_field_to_voxel_array",
           "lps_field_to_voxels"]

LPS = np.diag([-1.0, -1.0, 1.0])


def volume_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(D,H,W)`` or ``(1,1,D,H,W)`` to a C-contiguous float32 numpy ``(D,H,W)``."""
    a = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3:
        raise ValueError(f"expected one 3D volume ((D,H,W) or (1,1,D,H,W)), got shape {a.shape}")
    return np.ascontiguousarray(a, dtype=np.float32)


def itk_geometry(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    """NIfTI affine (RAS) -> ITK ``(origin, spacing, direction)`` in LPS; ``direction`` is the
    3x3 matrix whose column ``a`` is the physical direction of index axis ``a``."""
    A = np.asarray(affine, dtype=np.float64)
    if A.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {A.shape}")
    lin = LPS @ A[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"degenerate affine (zero voxel size): {A.tolist()}")
    direction = lin / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise ValueError("affine has shear; ITK images need orthogonal axes "
                         "(resample to a canonical grid first)")
    origin = LPS @ A[:3, 3]
    return tuple(origin.tolist()), tuple(spacing.tolist()), direction


def lps_field_to_voxel_array(d: np.ndarray, fixed_affine: np.ndarray,
                             fixed_shape: Sequence[int] | None = None) -> np.ndarray:
    """An ITK displacement field ``(D, H, W, 3)`` (LPS mm, ITK index order = NIfTI ``i, j, k``)
    as a contract field: numpy ``(1, 3, D, H, W)`` float32 in fixed-grid voxels, channels
    ``i, j, k``."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 4 or d.shape[-1] != 3:
        raise ValueError(f"an ITK displacement field is (D, H, W, 3), got {d.shape}")
    if fixed_shape is not None and d.shape[:3] != tuple(int(s) for s in fixed_shape):
        raise RuntimeError(f"the field lies on {d.shape[:3]}, expected the fixed grid "
                           f"{tuple(int(s) for s in fixed_shape)}")
    to_vox = np.linalg.inv(np.asarray(fixed_affine, float)[:3, :3]) @ LPS
    u = np.einsum("cl,dhwl->cdhw", to_vox, d)
    return u.astype(np.float32)[None]


def lps_field_to_voxels(d: np.ndarray, fixed_affine: np.ndarray,
                        fixed_shape: Sequence[int] | None = None) -> torch.Tensor:
    """:func:`lps_field_to_voxel_array` as a tensor ``(1, 3, D, H, W)`` float32."""
    import torch

    return torch.from_numpy(lps_field_to_voxel_array(d, fixed_affine, fixed_shape))
