"""ConvexAdam with MIND-SSC features (Siebert, Hansen, Heinrich, MICCAI 2021; the ``convexadam``
package, ``convexAdam.convex_adam_MIND.convex_adam_pt``) behind the field contract.

ConvexAdam describes both images with MIND-SSC (radius ``mind_r``, dilation ``mind_d``),
finds a discrete displacement per ``grid_sp``-voxel block within ``disp_hw`` blocks by a
coupled convex optimisation, makes it inverse-consistent (``ic``), and refines it with
``selected_niter`` Adam steps on a ``grid_sp_adam`` grid under a diffusion penalty of weight
``lambda_weight``. It needs no trained weights and runs on the CPU.

Conventions. The package's result is ``(D, H, W, 3)``, component ``c`` the displacement along
array axis ``c`` in voxels, applied as ``warped(x) = moving(x + u(x))``
(``convexAdam.apply_convex.apply_convex``): exactly the field contract after moving the
component axis first. The images are arrays on one grid, as for the SUITS rows: the moving
image must have the fixed image's shape (every aligned image of the benchmark lies on the
mean-space grid); its affine is not used.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULTS", "register"]

#: the package's own defaults (``convex_adam_pt``); config section ``convexadam``
DEFAULTS: dict[str, Any] = {
    "mind_r": 1,
    "mind_d": 2,
    "lambda_weight": 1.25,
    "grid_sp": 6,
    "disp_hw": 4,
    "selected_niter": 80,
    "selected_smooth": 0,
    "grid_sp_adam": 2,
    "ic": True,
}


def _convex_adam_pt():
    # the package turns every warning off when it is imported; keep the process's filters
    with warnings.catch_warnings():
        from convexAdam.convex_adam_MIND import convex_adam_pt
    return convex_adam_pt


def _volume(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(x).detach().cpu().float()
    while t.dim() > 3 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3:
        raise ValueError(f"expected one 3D volume ((D,H,W) or (1,1,D,H,W)), got shape {tuple(t.shape)}")
    return t


def register(fixed: np.ndarray | torch.Tensor, moving: np.ndarray | torch.Tensor,
             fixed_affine: np.ndarray | None = None, moving_affine: np.ndarray | None = None,
             *, device: str = "cpu", threads: int | None = None, **settings: Any) -> torch.Tensor:
    """ConvexAdam (MIND-SSC) of ``moving`` to ``fixed``.

    Args:
        fixed, moving: volumes ``(D,H,W)`` or ``(1,1,D,H,W)`` of the same shape.
        fixed_affine, moving_affine: unused (one grid; see the module docstring).
        device: torch device of the computation (``"cpu"``, ``"cuda"``).
        threads: unused (torch's thread count is the process's).
        settings: keys of :data:`DEFAULTS` (the package's argument names).

    Returns:
        ``u`` ``(1, 3, D, H, W)`` float32 on the CPU, fixed-grid voxels, channels ``i, j, k``,
        ``warp(moving, u) ≈ fixed``.
    """
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown ConvexAdam setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **settings}
    f, m = _volume(fixed), _volume(moving)
    if f.shape != m.shape:
        raise ValueError(f"ConvexAdam needs both images on one grid: fixed {tuple(f.shape)}, moving "
                         f"{tuple(m.shape)}; resample the moving image onto the fixed grid first")
    small = min(f.shape) // int(opts["grid_sp"])
    if small < 2:
        raise ValueError(f"grid_sp {opts['grid_sp']} leaves {small} block(s) along the shortest axis "
                         f"of {tuple(f.shape)}; choose a smaller grid_sp")
    disp = _convex_adam_pt()(
        img_fixed=f, img_moving=m,
        mind_r=int(opts["mind_r"]), mind_d=int(opts["mind_d"]),
        lambda_weight=float(opts["lambda_weight"]), grid_sp=int(opts["grid_sp"]),
        disp_hw=int(opts["disp_hw"]), selected_niter=int(opts["selected_niter"]),
        selected_smooth=int(opts["selected_smooth"]), grid_sp_adam=int(opts["grid_sp_adam"]),
        ic=bool(opts["ic"]), dtype=torch.float32, device=torch.device(device),
    )
    u = torch.from_numpy(np.ascontiguousarray(np.moveaxis(disp, -1, 0)).astype(np.float32))[None]
    if u.shape[2:] != f.shape:
        raise RuntimeError(f"convex_adam_pt returned a field on {tuple(u.shape[2:])}, expected {tuple(f.shape)}")
    return u

