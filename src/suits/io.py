"""NIfTI I/O of volumes, label maps and displacement fields, with atomic writes.

Arrays keep nibabel's axis order (``D, H, W`` = ``i, j, k``), never transposed. Every write goes
to a temporary file in the target's folder (same suffix, so nibabel compresses ``.nii.gz``) and
is moved into place with ``os.replace``: a killed job never leaves a complete-looking file, and
the next write of the same file removes the killed job's temporary.

The module loads torch only in the readers that return tensors (:func:`load_volume`,
:func:`load_labels`, :func:`load_field`): the writers take numpy arrays or tensors, and
:func:`read_volume` / :func:`read_labels` return numpy arrays, so jobs that do not compute
with torch read and write NIfTI files without importing it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from suits.atomic import atomic_path
from suits.fieldfile import FIELD_DESCRIPTION, read_contract

if TYPE_CHECKING:
    import torch

__all__ = [
    "FIELD_DESCRIPTION",
    "load_volume",
    "load_labels",
    "read_volume",
    "read_labels",
    "save_volume",
    "save_labels",
    "save_field",
    "load_field",
]

PathLike = str | os.PathLike


def _to_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """``x`` as a host numpy array; a tensor is recognised without importing torch (a tensor
    exists only once torch is loaded)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _squeeze3(a: np.ndarray, what: str) -> np.ndarray:
    """Drop leading (batch/channel) and trailing singleton axes down to 3D."""
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    while a.ndim > 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 3:
        raise ValueError(f"{what}: expected a 3D volume (optionally (1,1,D,H,W)), got shape {a.shape}")
    return a


def _image(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return img


def _save(path: PathLike, img: nib.Nifti1Image) -> None:
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def _load3(path: PathLike) -> tuple[nib.Nifti1Image, np.ndarray]:
    img = nib.load(str(path))
    data = np.asarray(img.get_fdata(dtype=np.float64))
    return img, _squeeze3(data, str(path))


def _label_values(path: PathLike, data: np.ndarray, tol: float) -> np.ndarray:
    """``data`` rounded to ``int64``; ``ValueError`` naming the file when a value lies more
    than ``tol`` from an integer."""
    rounded = np.rint(data)
    if data.size and np.max(np.abs(data - rounded)) > tol:
        raise ValueError(f"{path}: label map has non-integer values (max deviation "
                         f"{np.max(np.abs(data - rounded)):.3g}); is it an image, not labels?")
    return rounded.astype(np.int64)


def read_volume(path: PathLike, dtype: np.dtype | str = np.float32
                ) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI image (scaling applied) as a C-contiguous numpy ``(D, H, W)`` array of
    ``dtype`` and its 4x4 affine: the values of :func:`load_volume` with the same ``dtype``,
    without torch."""
    img, data = _load3(path)
    return np.ascontiguousarray(data, dtype=dtype), np.asarray(img.affine, dtype=np.float64)


def read_labels(path: PathLike, tol: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Read a label map as an ``int64`` numpy ``(D, H, W)`` array and its affine, checked and
    rounded as :func:`load_labels` does, without torch."""
    img, data = _load3(path)
    return _label_values(path, data, tol), np.asarray(img.affine, dtype=np.float64)


def load_volume(path: PathLike, dtype: torch.dtype | None = None,
                device: torch.device | str | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Read a 3D NIfTI image (scaling applied) as ``(1, 1, D, H, W)`` and its 4x4 affine.
    ``dtype=None``: ``torch.float32``."""
    import torch

    img, data = _load3(path)
    dtype = torch.float32 if dtype is None else dtype
    t = torch.from_numpy(np.ascontiguousarray(data)).to(dtype=dtype, device=device)
    return t[None, None], np.asarray(img.affine, dtype=np.float64)


def load_labels(path: PathLike, device: torch.device | str | None = None,
                tol: float = 1e-3) -> tuple[torch.Tensor, np.ndarray]:
    """Read a label map as a ``LongTensor (1, 1, D, H, W)`` and its affine; values are rounded
    and must be integers within ``tol`` (``ValueError`` naming the file otherwise)."""
    import torch

    labels, affine = read_labels(path, tol)
    t = torch.from_numpy(labels).to(device=device)
    return t[None, None], affine


def save_volume(path: PathLike, array: np.ndarray | torch.Tensor, affine: np.ndarray,
                dtype: np.dtype | str | None = None) -> None:
    """Write a volume ``(D,H,W)``, ``(1,D,H,W)`` or ``(1,1,D,H,W)`` atomically. ``dtype=None``:
    floats as ``float32``, integers and booleans keep an integer type (bool -> uint8)."""
    a = _squeeze3(_to_numpy(array), str(path))
    if dtype is None:
        dtype = np.float32 if np.issubdtype(a.dtype, np.floating) else (
            np.uint8 if a.dtype == np.bool_ else a.dtype)
    _save(path, _image(np.ascontiguousarray(a.astype(dtype)), affine))


def save_labels(path: PathLike, labels: np.ndarray | torch.Tensor, affine: np.ndarray) -> None:
    """Write a label map as ``uint8`` (max < 256) or ``uint16``; values must be non-negative
    integers below 65536."""
    a = _squeeze3(_to_numpy(labels), str(path))
    if np.issubdtype(a.dtype, np.floating):
        r = np.rint(a)
        if a.size and np.max(np.abs(a - r)) > 1e-3:
            raise ValueError(f"{path}: labels must be integer valued")
        a = r
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise ValueError(f"{path}: label values must lie in [0, 65535], found [{lo}, {hi}]")
    dtype = np.uint8 if hi < 256 else np.uint16
    _save(path, _image(np.ascontiguousarray(a.astype(dtype)), affine))


def save_field(path: PathLike, u: np.ndarray | torch.Tensor, affine: np.ndarray) -> None:
    """Write a displacement field ``(1,3,D,H,W)`` or ``(3,D,H,W)`` (voxels, ijk) as the contract
    NIfTI: ``float32`` array ``(D,H,W,3)``, ``affine`` (the fixed image's), intent vector,
    description ``"displacement, voxels, ijk"``."""
    a = _to_numpy(u)
    if a.ndim == 5 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 4 or a.shape[0] != 3:
        raise ValueError(f"{path}: field must be (1,3,D,H,W) or (3,D,H,W), got {a.shape}")
    data = np.ascontiguousarray(np.moveaxis(a, 0, -1).astype(np.float32))
    img = _image(data, affine)
    img.header.set_intent("vector", (), name="displacement")
    img.header["descrip"] = FIELD_DESCRIPTION
    _save(path, img)


def load_field(path: PathLike, device: torch.device | str | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Read a contract field: ``(u (1,3,D,H,W) float32, affine)``. Accepts ``(X,Y,Z,3)`` and the
    ITK/NIfTI-standard ``(X,Y,Z,1,3)``; refuses an ITK field (mm, LPS: ``suits.fieldfile``)."""
    import torch

    u, affine = read_contract(path)
    return torch.from_numpy(u)[None].to(device=device), affine
