"""SimpleElastix-MI baseline (paper Sec. 4.1): B-spline-only elastix registration with Mattes
mutual information, written as a contract displacement field.

Geometry. Images are handed to elastix with the geometry of their NIfTI affine (converted to
ITK's LPS physical space: ITK index ``(x, y, z)`` = NIfTI ``(i, j, k)``, spacing = column norms,
direction = ``diag(-1, -1, 1) @ A[:3, :3] / spacing``, origin = ``diag(-1, -1, 1) @ A[:3, 3]``),
so control-point spacing, pyramid smoothing and the bending-energy penalty see the real voxel
size. Transformix's deformation field ``d`` (LPS millimetres, on the fixed grid) maps the fixed
point ``p`` to the moving point ``p + d(p)``; it is converted to fixed-grid voxels
``u = A_fix[:3,:3]^-1 · diag(-1,-1,1) · d``, channels ``i, j, k`` (both conversions:
:mod:`baselines.itk_space`).

Grids. The moving image may lie on another grid than the fixed one (elastix works in world
space). The contract field is always on the fixed grid in fixed-grid voxels: it is the field
that warps the moving image *resampled onto the fixed grid* (``suits.warp.warp``), which is
what the benchmark feeds every method (all aligned images share the mean-space grid). With
identical grids ``u`` applies to the moving image as it is.

Field-of-view masks. A mask (1 = voxel from the scan, 0 = padding) on its image's grid is
handed to elastix as its fixed or moving mask (uint8, the image's geometry) when it has
padding: elastix then draws its samples inside the fixed mask and drops those that map outside
the moving one, so padding never enters mutual information. The masks are not eroded at the
coarse pyramid levels (``ErodeMask "false"`` unless the parameter map sets it): elastix's
erosion follows the smoothing schedule and empties the mask of a small image (the smoke
config's 48x40x40 grid), where every sample then maps outside it. A mask without padding
(all ones) is not passed, which leaves the registration exactly as without a mask.

The affine's linear part must be orthogonal up to column scaling (no shear), as ITK images
cannot represent shear; preprocessed (canonical) images always satisfy this.

Torch. The registration runs on numpy arrays (:func:`register_array`, :func:`register_files`)
without torch; :func:`register` and :func:`deformation_field` return tensors and import torch
when called.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from baselines.elastix_params import parameter_map, to_elastix
from baselines.itk_space import itk_geometry, lps_field_to_voxel_array, volume_array
from suits.fov import binary_fov_array

if TYPE_CHECKING:
    import torch

__all__ = [
    "register",
    "register_array",
    "register_files",
    "run_elastix",
    "deformation_field",
    "deformation_array",
    "transformix_resample",
    "to_sitk",
    "from_sitk",
    "padding_mask",
]

PathLike = str | os.PathLike


def _sitk():
    import SimpleITK as sitk

    if not hasattr(sitk, "ElastixImageFilter"):
        raise ImportError("the SimpleITK module has no ElastixImageFilter: install "
                          "SimpleITK-SimpleElastix==3.0.0a1.post183 (not plain SimpleITK)")
    return sitk



def _geometry(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """NIfTI affine (RAS) -> ITK ``(origin, spacing, direction)`` in LPS (direction row-major)."""
    origin, spacing, direction = itk_geometry(affine)
    return origin, spacing, tuple(direction.ravel().tolist())


def to_sitk(volume: np.ndarray | torch.Tensor, affine: np.ndarray):
    """A SimpleITK float32 image of a ``(D,H,W)`` volume with the affine's geometry (LPS)."""
    sitk = _sitk()
    a = volume_array(volume)
    img = sitk.GetImageFromArray(np.ascontiguousarray(a.transpose(2, 1, 0)))  # sitk wants [k, j, i]
    origin, spacing, direction = _geometry(affine)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    return img


def from_sitk(img) -> np.ndarray:
    """A SimpleITK image back to numpy in NIfTI order ``(i, j, k[, components])``."""
    sitk = _sitk()
    a = sitk.GetArrayFromImage(img)
    return np.ascontiguousarray(np.moveaxis(a, (0, 1, 2), (2, 1, 0)))


def padding_mask(mask: np.ndarray | torch.Tensor | None, shape: Sequence[int],
                 what: str = "mask") -> np.ndarray | None:
    """The field-of-view mask as a ``(D,H,W)`` uint8 array (1 inside, 0 padding) when it has
    padding, ``None`` when it is ``None`` or all ones. ``ValueError`` when its shape differs
    from the image's ``shape`` or it has no voxel inside (``what`` names it)."""
    if mask is None:
        return None
    return binary_fov_array(volume_array(mask), what, shape=shape, dtype=np.uint8)


def _sitk_mask(mask: np.ndarray, affine: np.ndarray):
    return _sitk().Cast(to_sitk(mask, affine), _sitk().sitkUInt8)


def run_elastix(fixed: np.ndarray | torch.Tensor, moving: np.ndarray | torch.Tensor,
                fixed_affine: np.ndarray, moving_affine: np.ndarray | None = None,
                params: Mapping[str, Any] | None = None, threads: int | None = None,
                log_dir: PathLike | None = None,
                fixed_mask: np.ndarray | torch.Tensor | None = None,
                moving_mask: np.ndarray | torch.Tensor | None = None,
                ) -> list[dict[str, tuple[str, ...]]]:
    """Run elastix; return the transform parameter maps (as dicts, for transformix).

    Args:
        fixed, moving: volumes ``(D,H,W)`` or ``(1,1,D,H,W)`` (any float type).
        fixed_affine, moving_affine: 4x4 NIfTI affines; ``moving_affine=None``: the fixed one.
        params: the full parameter map (default :func:`baselines.elastix_params.parameter_map`).
        threads: elastix threads (``None``: SimpleITK's default, all cores).
        log_dir: write ``elastix.log`` there; ``None``: no log files.
        fixed_mask, moving_mask: field-of-view masks on the fixed and moving grid (1 = scan,
            0 = padding), passed to elastix only when they have padding
            (:func:`padding_mask`); ``None``: no mask.
    """
    sitk = _sitk()
    pm = parameter_map() if params is None else dict(params)
    moving_affine = fixed_affine if moving_affine is None else moving_affine
    fixed_mask = padding_mask(fixed_mask, volume_array(fixed).shape, "fixed mask")
    moving_mask = padding_mask(moving_mask, volume_array(moving).shape, "moving mask")
    if (fixed_mask is not None or moving_mask is not None) and "ErodeMask" not in pm:
        pm["ErodeMask"] = ("false",)
    f = sitk.ElastixImageFilter()
    f.LogToConsoleOff()
    with tempfile.TemporaryDirectory(prefix="elastix_") as tmp:
        out = Path(log_dir) if log_dir is not None else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        f.SetOutputDirectory(str(out))
        if log_dir is not None:
            f.LogToFileOn()
        else:
            f.LogToFileOff()
        f.SetFixedImage(to_sitk(fixed, fixed_affine))
        f.SetMovingImage(to_sitk(moving, moving_affine))
        if fixed_mask is not None:
            f.SetFixedMask(_sitk_mask(fixed_mask, fixed_affine))
        if moving_mask is not None:
            f.SetMovingMask(_sitk_mask(moving_mask, moving_affine))
        f.SetParameterMap(to_elastix(pm))
        if threads is not None:
            f.SetNumberOfThreads(int(threads))
        f.Execute()
        return [{k: tuple(v) for k, v in m.items()} for m in f.GetTransformParameterMap()]


def _transformix(tmaps: Sequence[Mapping[str, Any]], moving_img, field: bool,
                 threads: int | None = None):
    sitk = _sitk()
    t = sitk.TransformixImageFilter()
    t.LogToConsoleOff()
    t.LogToFileOff()
    with tempfile.TemporaryDirectory(prefix="transformix_") as tmp:
        t.SetOutputDirectory(tmp)
        t.SetTransformParameterMap([to_elastix(m) for m in tmaps])
        t.SetMovingImage(moving_img)
        if field:
            t.ComputeDeformationFieldOn()
        if threads is not None and hasattr(t, "SetNumberOfThreads"):
            t.SetNumberOfThreads(int(threads))
        t.Execute()
        return t.GetDeformationField() if field else t.GetResultImage()


def deformation_array(tmaps: Sequence[Mapping[str, Any]], fixed_affine: np.ndarray,
                      fixed_shape: Sequence[int]) -> np.ndarray:
    """Transformix's deformation field converted to the contract: numpy ``(1, 3, D, H, W)``
    float32, voxels of the fixed grid, channels ``i, j, k``."""
    dummy = to_sitk(np.zeros(tuple(int(s) for s in fixed_shape), np.float32), fixed_affine)
    d = from_sitk(_transformix(tmaps, dummy, field=True))    # (D,H,W,3) LPS mm
    return lps_field_to_voxel_array(d, fixed_affine, fixed_shape)


def deformation_field(tmaps: Sequence[Mapping[str, Any]], fixed_affine: np.ndarray,
                      fixed_shape: Sequence[int]) -> torch.Tensor:
    """:func:`deformation_array` as a tensor ``(1, 3, D, H, W)`` float32."""
    import torch

    return torch.from_numpy(deformation_array(tmaps, fixed_affine, fixed_shape))


_INTERPOLATORS = {
    "nearest": "FinalNearestNeighborInterpolator",
    "linear": "FinalLinearInterpolator",
    "bspline": "FinalBSplineInterpolator",
}


def transformix_resample(image: np.ndarray | torch.Tensor, tmaps: Sequence[Mapping[str, Any]],
                         moving_affine: np.ndarray, interpolation: str = "bspline",
                         default_value: float = 0.0) -> np.ndarray:
    """Resample a moving-grid volume with the registration's transform onto the fixed grid
    (transformix). ``interpolation``: ``"nearest"`` (label maps; the result is rounded),
    ``"linear"`` or ``"bspline"`` (elastix's final interpolator, order
    ``FinalBSplineInterpolationOrder``). Outside the moving image: ``default_value``.
    Returns numpy ``(D, H, W)`` float32."""
    if interpolation not in _INTERPOLATORS:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATORS)}, got {interpolation!r}")
    maps = [dict(m) for m in tmaps]
    maps[-1]["ResampleInterpolator"] = (_INTERPOLATORS[interpolation],)
    maps[-1]["DefaultPixelValue"] = (repr(float(default_value)),)
    maps[-1]["ResultImagePixelType"] = ("float",)
    out = from_sitk(_transformix(maps, to_sitk(image, moving_affine), field=False)).astype(np.float32)
    return np.rint(out) if interpolation == "nearest" else out


def register(fixed: np.ndarray | torch.Tensor, moving: np.ndarray | torch.Tensor,
             fixed_affine: np.ndarray, moving_affine: np.ndarray | None = None,
             params: Mapping[str, Any] | None = None, threads: int | None = None,
             fixed_mask: np.ndarray | torch.Tensor | None = None,
             moving_mask: np.ndarray | torch.Tensor | None = None) -> torch.Tensor:
    """SimpleElastix-MI: B-spline elastix registration of ``moving`` to ``fixed``.

    Args:
        fixed, moving: preprocessed, affinely aligned volumes ``(D,H,W)`` or ``(1,1,D,H,W)``.
        fixed_affine: the fixed image's 4x4 NIfTI affine; ``moving_affine`` the moving one's
            (``None``: same grid as the fixed image).
        params: effective parameter map (see :mod:`baselines.elastix_params`); ``None``: the
            default (:func:`~baselines.elastix_params.parameter_map`).
        threads: number of elastix threads (``None``: all cores).
        fixed_mask, moving_mask: field-of-view masks on the fixed and moving grid (1 = scan,
            0 = padding); each is passed to elastix only when it has padding, so ``None`` and a
            mask of all ones give the same field.

    Returns:
        ``u`` ``(1, 3, D, H, W)`` float32 on the CPU (or on ``fixed``'s device if it is a
        tensor), fixed-grid voxels, ``warp(moving, u) ≈ fixed``.
    """
    import torch

    u = torch.from_numpy(register_array(fixed, moving, fixed_affine, moving_affine, params=params,
                                        threads=threads, fixed_mask=fixed_mask,
                                        moving_mask=moving_mask))
    return u.to(fixed.device) if isinstance(fixed, torch.Tensor) else u


def register_array(fixed: np.ndarray | torch.Tensor, moving: np.ndarray | torch.Tensor,
                   fixed_affine: np.ndarray, moving_affine: np.ndarray | None = None,
                   params: Mapping[str, Any] | None = None, threads: int | None = None,
                   fixed_mask: np.ndarray | torch.Tensor | None = None,
                   moving_mask: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """:func:`register` with the field as numpy ``(1, 3, D, H, W)`` float32 (fixed-grid
    voxels), without torch."""
    shape = volume_array(fixed).shape
    tmaps = run_elastix(fixed, moving, fixed_affine, moving_affine, params=params, threads=threads,
                        fixed_mask=fixed_mask, moving_mask=moving_mask)
    return deformation_array(tmaps, fixed_affine, shape)





def _load_mask(path: PathLike | None, image_shape: Sequence[int]) -> np.ndarray | None:
    """A field-of-view mask file checked against its image (one-line error naming the file)."""
    from suits.io import read_volume

    if path is None:
        return None
    return padding_mask(read_volume(path)[0], image_shape, str(path))


def register_files(fixed_path: PathLike, moving_path: PathLike, out_field: PathLike,
                   params: Mapping[str, Any] | None = None, threads: int | None = None,
                   fixed_mask_path: PathLike | None = None,
                   moving_mask_path: PathLike | None = None) -> float:
    """Register two NIfTI images and write the contract field (``suits.io.save_field``, the
    fixed image's affine, atomic); with field-of-view mask files, elastix gets those that have
    padding (:func:`register_array`). Returns the registration wall time in seconds."""
    from suits.io import read_volume, save_field

    fixed, fixed_affine = read_volume(fixed_path)
    moving, moving_affine = read_volume(moving_path)
    fixed_mask = _load_mask(fixed_mask_path, fixed.shape[-3:])
    moving_mask = _load_mask(moving_mask_path, moving.shape[-3:])
    t0 = time.perf_counter()
    u = register_array(fixed, moving, fixed_affine, moving_affine, params=params,
                       threads=threads, fixed_mask=fixed_mask, moving_mask=moving_mask)
    seconds = time.perf_counter() - t0
    save_field(out_field, u, fixed_affine)
    return seconds
