"""Displacement field files without torch: the contract field and its ITK form.

The contract field (``suits.io.save_field``): NIfTI ``(X, Y, Z, 3)`` ``float32`` on the fixed
grid, the fixed image's affine, components the displacement in voxels along the array axes
``i, j, k``; ``warped(x) = moving(x + u(x))`` with ``x`` a voxel index of the fixed grid.

The ITK field (:func:`save_itk_field`): the same map as ITK, ANTs and 3D Slicer apply it, on the
same grid: NIfTI ``(X, Y, Z, 1, 3)`` ``float32``, intent code 1007 (vector), the fixed image's
affine, components the displacement in mm in LPS physical coordinates (ITK's world). With
``A`` the fixed affine (voxel -> RAS mm) and ``F = diag(-1, -1, 1)`` (RAS -> LPS), the
displacement at voxel ``x`` is ``d(x) = F A[:3, :3] u(x)``: the physical point ``p`` of voxel
``x`` maps to ``p + d``, the physical point of ``x + u(x)``. ITK reads the affine into the
image's LPS origin and direction and applies the vectors as stored, so
``sitk.DisplacementFieldTransform`` (``sitk.Resample``), ``antsApplyTransforms`` and Slicer's
transform node pull the moving image back onto the fixed grid exactly as the contract field
does, provided the moving image lies in the same physical space as the fixed one (in the
benchmark every aligned image is on the mean-space grid). docs/fields.md has the conventions.
"""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from suits.atomic import atomic_path

__all__ = [
    "FIELD_DESCRIPTION",
    "ITK_FIELD_DESCRIPTION",
    "RAS_TO_LPS",
    "read_contract",
    "voxel_to_itk",
    "itk_to_voxel",
    "itk_field_image",
    "save_itk_field",
    "load_itk_field",
    "contract_to_itk",
]

FIELD_DESCRIPTION = "displacement, voxels, ijk"
ITK_FIELD_DESCRIPTION = "displacement, mm, LPS (ITK)"
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
PathLike = str | os.PathLike


def _descrip(img: nib.Nifti1Image) -> str:
    raw = img.header["descrip"]
    raw = raw.item() if hasattr(raw, "item") else raw
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)


def read_contract(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a contract field: ``(u (3, X, Y, Z) float32, affine)``. Accepts ``(X,Y,Z,3)`` and the
    ITK/NIfTI-standard ``(X,Y,Z,1,3)``; an ITK field (mm, LPS) is refused."""
    img = nib.load(str(path))
    if _descrip(img) == ITK_FIELD_DESCRIPTION:
        raise ValueError(f"{path}: an ITK displacement field (mm, LPS), not a contract field "
                         "(voxels, ijk); read the field under fields/, not fields_itk/")
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim != 4 or data.shape[-1] != 3:
        raise ValueError(f"{path}: a displacement field is (X,Y,Z,3), got {data.shape}")
    return np.ascontiguousarray(np.moveaxis(data, -1, 0)), np.asarray(img.affine, dtype=np.float64)


def _field3(u: np.ndarray) -> np.ndarray:
    a = np.asarray(u)
    if a.ndim == 5 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 4 or a.shape[0] != 3:
        raise ValueError(f"field must be (1,3,X,Y,Z) or (3,X,Y,Z), got {a.shape}")
    return a


def _linear(affine: np.ndarray) -> np.ndarray:
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {a.shape}")
    return a[:3, :3]


def voxel_to_itk(u: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxel displacement ``(3, X, Y, Z)`` (or ``(1, 3, ...)``) on the grid of ``affine`` ->
    LPS displacement in mm, ``(X, Y, Z, 3)`` float64: ``d = diag(-1,-1,1) A[:3,:3] u``."""
    m = RAS_TO_LPS @ _linear(affine)
    return np.einsum("rc,c...->...r", m, _field3(u).astype(np.float64))


def itk_to_voxel(d: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`voxel_to_itk`: LPS mm ``(X, Y, Z, 3)`` -> voxels ``(3, X, Y, Z)``."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim == 5 and d.shape[3] == 1:
        d = d[:, :, :, 0, :]
    if d.ndim != 4 or d.shape[-1] != 3:
        raise ValueError(f"an ITK displacement field is (X,Y,Z,3) or (X,Y,Z,1,3), got {d.shape}")
    m_inv = np.linalg.inv(RAS_TO_LPS @ _linear(affine))
    return np.einsum("cr,...r->c...", m_inv, d)


def itk_field_image(u: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """The ITK displacement field of a voxel field ``u`` on the grid of ``affine`` (module
    docstring): ``(X, Y, Z, 1, 3)`` float32, intent vector (1007), sform and qform ``affine``
    (code 1, scanner), units mm."""
    affine = np.asarray(affine, dtype=np.float64)
    d = voxel_to_itk(u, affine).astype(np.float32)
    img = nib.Nifti1Image(np.ascontiguousarray(d[:, :, :, None, :]), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_intent("vector", (), name="displacement")
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = ITK_FIELD_DESCRIPTION
    return img


def save_itk_field(path: PathLike, u: np.ndarray, affine: np.ndarray) -> None:
    """Write :func:`itk_field_image` atomically."""
    img = itk_field_image(u, affine)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def load_itk_field(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an ITK displacement field: ``(d (X, Y, Z, 3) LPS mm float64, affine)``."""
    img = nib.load(str(path))
    d = np.asarray(img.get_fdata(dtype=np.float64))
    if d.ndim == 5 and d.shape[3] == 1:
        d = d[:, :, :, 0, :]
    if d.ndim != 4 or d.shape[-1] != 3:
        raise ValueError(f"{path}: an ITK displacement field is (X,Y,Z,1,3), got {d.shape}")
    return d, np.asarray(img.affine, dtype=np.float64)


def contract_to_itk(contract_path: PathLike, out_path: PathLike) -> None:
    """Convert a contract field file into an ITK displacement field file on the same grid."""
    u, affine = read_contract(contract_path)
    save_itk_field(out_path, u, affine)
