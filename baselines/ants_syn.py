"""ANTs SyN with mutual information (Avants et al. 2008; ``antspyx``, ``ants.registration``)
behind the field contract.

The inputs are affinely aligned, so the registration is ``type_of_transform="SyNOnly"`` (no
linear stage, identity initial transform) with the Mattes mutual-information metric
(``syn_metric="mattes"``, ``syn_sampling`` histogram bins, dense sampling: no random
sampling in this stage), SyN step ``grad_step``, update-field smoothing ``flow_sigma`` and
total-field smoothing ``total_sigma`` (voxels), and ``reg_iterations`` per level, coarse to
fine (levels shrink by 2 per level).

Geometry (:mod:`baselines.itk_space`). Images are handed to ANTs with the geometry of their
NIfTI affine in ITK's LPS space; an ANTs image's array is indexed like NIfTI's ``(i, j, k)``.
The forward transforms are composed into one displacement field on the fixed grid
(``ants.apply_transforms(..., compose=...)``): LPS millimetres, mapping the fixed point ``p``
to the moving point ``p + d(p)``, converted to fixed-grid voxels, channels ``i, j, k``. The
moving image may lie on another grid than the fixed one (ANTs works in world space); the
field then warps the moving image resampled onto the fixed grid, as for SimpleElastix-MI.

Threads: ITK's thread count is set through ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` before
``ants`` is imported; a process that has imported it keeps its first count.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Sequence

import numpy as np
import torch

from baselines.itk_space import itk_geometry, lps_field_to_voxels, volume_array

__all__ = ["DEFAULTS", "register", "to_ants"]

#: config section ``ants``; ``reg_iterations`` is ants.registration's default
DEFAULTS: dict[str, Any] = {
    "reg_iterations": [40, 20, 0],
    "grad_step": 0.2,
    "flow_sigma": 3.0,
    "total_sigma": 0.0,
    "syn_sampling": 32,
}


def _ants(threads: int | None = None):
    if threads is not None:
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))
    import ants

    return ants



def to_ants(volume: np.ndarray | torch.Tensor, affine: np.ndarray, threads: int | None = None):
    """An ANTs float image of a ``(D,H,W)`` volume with the affine's geometry (LPS)."""
    ants = _ants(threads)
    origin, spacing, direction = itk_geometry(affine)
    return ants.from_numpy(volume_array(volume), origin=origin, spacing=spacing, direction=direction)


def _iterations(value: Sequence[int]) -> tuple[int, ...]:
    its = tuple(int(v) for v in value)
    if not its or any(v < 0 for v in its) or not any(its):
        raise ValueError(f"reg_iterations must be non-negative counts per level with one > 0, got {list(value)}")
    return its


def register(fixed: np.ndarray | torch.Tensor, moving: np.ndarray | torch.Tensor,
             fixed_affine: np.ndarray, moving_affine: np.ndarray | None = None,
             *, threads: int | None = None, device: str = "cpu", **settings: Any) -> torch.Tensor:
    """ANTs SyN (mutual information) of ``moving`` to ``fixed``.

    Args:
        fixed, moving: affinely aligned volumes ``(D,H,W)`` or ``(1,1,D,H,W)``.
        fixed_affine: the fixed image's 4x4 NIfTI affine; ``moving_affine`` the moving one's
            (``None``: the fixed grid).
        threads: ITK threads (``None``: ITK's default, all cores).
        device: unused (ANTs runs on the CPU).
        settings: keys of :data:`DEFAULTS`.

    Returns:
        ``u`` ``(1, 3, D, H, W)`` float32 on the CPU, fixed-grid voxels, channels ``i, j, k``,
        ``warp(moving, u) ≈ fixed``.
    """
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown ANTs setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **settings}
    ants = _ants(threads)
    f = volume_array(fixed)
    moving_affine = fixed_affine if moving_affine is None else moving_affine
    fi = to_ants(f, fixed_affine)
    mi = to_ants(moving, moving_affine)
    with tempfile.TemporaryDirectory(prefix="ants_") as tmp:
        reg = ants.registration(
            fi, mi, type_of_transform="SyNOnly", outprefix=os.path.join(tmp, "reg_"),
            syn_metric="mattes", syn_sampling=int(opts["syn_sampling"]),
            reg_iterations=_iterations(opts["reg_iterations"]),
            grad_step=float(opts["grad_step"]), flow_sigma=float(opts["flow_sigma"]),
            total_sigma=float(opts["total_sigma"]),
        )
        composed = ants.apply_transforms(fi, mi, reg["fwdtransforms"],
                                         compose=os.path.join(tmp, "fwd_"))
        if composed is None:
            raise RuntimeError("ants.apply_transforms did not write the composed field")
        d = ants.image_read(composed).numpy()          # (D, H, W, 3), LPS mm
    return lps_field_to_voxels(d, fixed_affine, f.shape)

