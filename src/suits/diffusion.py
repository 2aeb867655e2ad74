"""One Gauss-Newton step of the Brox-style diffusion registration (paper Sec. 3.2.1, Eq. 4-6).

With representations ``R_fix``, ``R_mov`` (``R_mov`` already warped by ``u^{k-1}``) of ``C``
channels on one grid, spatial gradients ``g_c = ∇R_mov,c`` (central differences, one-sided at
the border, voxel units, components along D, H, W) and ``u^{k-1}`` on the same grid, the update
``z = Δu`` solves (Eq. 6, summed over channels)

    (M + λ L ⊗ I_3) z = -Σ_c (R_mov,c - R_fix,c) g_c - λ L u^{k-1},   M_v = Σ_c g_c(v) g_c(v)^T,

``L`` the 6-neighbour graph Laplacian (Neumann). An optional per-voxel ``weight`` ``w(v) >= 0``
multiplies the data term, ``M_v`` and ``Σ_c (R_mov,c - R_fix,c) g_c`` at ``v``, so voxels of
weight 0 (padding outside a scan's field of view) contribute nothing and the diffusion term
fills the field in there. The solve is :func:`suits.solver.lse_solve`
(Algorithm 2), so the step is differentiable w.r.t. both representations: through ``b`` always
and through ``M`` with ``grad_A=True``.
"""
from __future__ import annotations

import torch

from suits.solver import grid_laplacian, lse_solve

__all__ = ["spatial_gradient", "laplacian", "brox_system", "gauss_newton_step"]


def _diff_axis(r: torch.Tensor, dim: int) -> torch.Tensor:
    """Central difference along ``dim`` (one-sided at the border, 0 on a 1-voxel axis)."""
    n = r.shape[dim]
    if n < 2:
        return torch.zeros_like(r)
    first = r.narrow(dim, 1, 1) - r.narrow(dim, 0, 1)
    last = r.narrow(dim, n - 1, 1) - r.narrow(dim, n - 2, 1)
    if n == 2:
        return torch.cat([first, last], dim)
    inner = 0.5 * (r.narrow(dim, 2, n - 2) - r.narrow(dim, 0, n - 2))
    return torch.cat([first, inner, last], dim)


def spatial_gradient(r: torch.Tensor) -> torch.Tensor:
    """``(B, C, d, h, w)`` → ``(B, C, 3, d, h, w)``: ``∂r/∂D, ∂r/∂H, ∂r/∂W`` in voxel units.

    Central differences inside, one-sided (forward/backward) differences at the border
    (as ``numpy.gradient`` with ``edge_order=1``).
    """
    if r.dim() != 5:
        raise ValueError(f"a representation is (B, C, d, h, w), got {tuple(r.shape)}")
    return torch.stack([_diff_axis(r, 2 + a) for a in range(3)], dim=2)


def laplacian(u: torch.Tensor) -> torch.Tensor:
    """``L u`` per channel: the 6-neighbour graph Laplacian (degree minus neighbours, Neumann),
    i.e. ``-Δu`` of the paper; ``u`` ``(..., d, h, w)``. Rows sum to zero."""
    return grid_laplacian(u)


def brox_system(r_fix: torch.Tensor, r_mov: torch.Tensor, u: torch.Tensor,
                lam: float, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The data blocks ``M`` ``(B, 3, 3, d, h, w)`` and right-hand side ``b`` ``(B, 3, d, h, w)``
    of Eq. (6); the full operator is ``A = M + lam·(L ⊗ I_3)`` (``suits.solver.BroxOperator``).

    Args:
        r_fix, r_mov: ``(B, C, d, h, w)`` representations on one grid (``r_mov`` warped by ``u``);
            a batch of 1 broadcasts.
        u: ``(B, 3, d, h, w)`` previous displacement ``u^{k-1}`` on that grid (voxels).
        lam: diffusion weight λ.
        weight: ``(B, 1, d, h, w)`` (a batch of 1 broadcasts) non-negative weight of the data
            term per voxel; ``None``: 1 everywhere (the unweighted system).
    """
    if r_fix.dim() != 5 or r_mov.dim() != 5 or r_fix.shape[1:] != r_mov.shape[1:]:
        raise ValueError(f"representations must be (B, C, d, h, w) of equal C and grid, "
                         f"got {tuple(r_fix.shape)} and {tuple(r_mov.shape)}")
    if u.dim() != 5 or u.shape[1] != 3 or u.shape[-3:] != r_fix.shape[-3:]:
        raise ValueError(f"u must be (B, 3, d, h, w) on the representation grid "
                         f"{tuple(r_fix.shape[-3:])}, got {tuple(u.shape)}")
    if weight is not None and (weight.dim() != 5 or weight.shape[1] != 1
                               or weight.shape[-3:] != r_fix.shape[-3:]):
        raise ValueError(f"weight must be (B, 1, d, h, w) on the representation grid "
                         f"{tuple(r_fix.shape[-3:])}, got {tuple(weight.shape)}")
    g = spatial_gradient(r_mov)                                          # (B, C, 3, d, h, w)
    M = (g.unsqueeze(3) * g.unsqueeze(2)).sum(1)                         # (B, 3, 3, d, h, w)
    diff = (r_mov - r_fix).unsqueeze(2)                                  # (B, C, 1, d, h, w)
    data = (diff * g).sum(1)                                             # (B, 3, d, h, w)
    if weight is not None:
        M = M * weight.unsqueeze(1)
        data = data * weight
    b = -data - lam * laplacian(u)
    batch = max(M.shape[0], b.shape[0])
    return M.expand(batch, *M.shape[1:]).contiguous(), b.expand(batch, *b.shape[1:]).contiguous()


def gauss_newton_step(r_fix: torch.Tensor, r_mov: torch.Tensor, u: torch.Tensor, lam: float,
                      solver: object | None = None, tol: float = 1e-6, grad_A: bool = False,
                      maxiter: int | None = None, eps: float = 1e-6,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """``Δu`` ``(B, 3, d, h, w)`` of one Gauss-Newton step on the grid of ``r_fix`` (Eq. 6).

    Args:
        r_fix, r_mov: ``(B, C, d, h, w)`` fixed and (warped) moving representations.
        u: ``(B, 3, d, h, w)`` current displacement ``u^{k-1}`` on that grid, voxels.
        lam: diffusion weight λ (> 0).
        solver: ``None``/``"torch"`` (fast, on the device), ``"pyamg"``, ``"pyamg-rs"`` or a
            configured solver object (``suits.solver``).
        tol: relative residual of the forward and backward solves.
        grad_A: differentiate through the system matrix too (Eq. 9); default only through ``b``.
        maxiter: solver iteration cap (backend default).
        eps: diagonal shift ``eps·lam·I`` added to ``A`` so it is positive definite even where the
            representation has no gradient anywhere (``A`` is only semi-definite then); 0 disables.
        weight: per-voxel weight of the data term (:func:`brox_system`); ``None``: none.

    Differentiable w.r.t. ``r_fix``, ``r_mov`` (and ``u``, through ``b``).
    """
    M, b = brox_system(r_fix, r_mov, u, lam, weight=weight)
    return lse_solve(M, b, float(lam), solver=solver, tol=tol, grad_A=grad_A, maxiter=maxiter,
                     shift=float(eps) * float(lam))
