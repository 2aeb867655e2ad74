"""Preconditioned conjugate gradients on a :class:`~suits.solver.operator.BroxOperator`.

:func:`pcg` runs CG from ``z = 0`` on a batch of independent systems ``A z = b``, preconditioned
by any fixed symmetric positive definite linear map, and stops per batch element at the relative
residual ``||b - A z|| <= tol ||b||`` (CG's recursive residual). :class:`SolveInfo` reports
iterations and the true relative residual (:func:`true_residual`) of each element.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from suits.solver.operator import BroxOperator

__all__ = ["SolveInfo", "true_residual", "pcg"]


class SolveInfo(NamedTuple):
    """Outcome of a solve: per batch element iterations and final relative residual.

    ``residual`` is the *true* relative residual ``||b - A z|| / ||b||`` recomputed after the
    solve (0 where ``b = 0``), in the working precision.
    """

    iterations: torch.Tensor
    residual: torch.Tensor
    backend: str


def true_residual(A: BroxOperator, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||b - A z|| / ||b||`` per batch element (``||b - A z||`` where ``b = 0``)."""
    r = (b - A.matvec(z)).flatten(1).norm(dim=1)
    bn = b.flatten(1).norm(dim=1)
    return torch.where(bn > 0, r / torch.where(bn > 0, bn, torch.ones_like(bn)), r)


def pcg(A: BroxOperator, b: torch.Tensor, precondition: Callable[[torch.Tensor], torch.Tensor],
        tol: float, maxiter: int, check: int, backend: str) -> tuple[torch.Tensor, SolveInfo]:
    """Preconditioned CG on ``A z = b`` from ``z = 0``, per batch element to ``||r|| <= tol ||b||``.

    ``precondition(r)`` applies the preconditioner (a fixed SPD linear map) to a residual
    ``(B, 3, d, h, w)``. Convergence is checked every ``check`` iterations (one host sync per
    check); systems of a batch that have converged are frozen, so the result does not depend on
    it. ``backend`` names the solver in the returned :class:`SolveInfo`.
    """
    B = b.shape[0]

    def dot(x, y):
        return (x * y).flatten(1).sum(1)

    def bc(s):  # (B,) -> broadcastable
        return s.view(B, 1, 1, 1, 1)

    z = torch.zeros_like(b)
    r = b.clone()
    thresh = tol * b.flatten(1).norm(dim=1)
    active = r.flatten(1).norm(dim=1) > thresh
    iters = torch.zeros(B, dtype=torch.long, device=b.device)
    s = precondition(r)
    p = s
    rs = dot(r, s)
    for it in range(maxiter):
        if it % check == 0 and not bool(active.any()):
            break
        q = A.matvec(p)
        pq = dot(p, q)
        alpha = torch.where(active & (pq != 0), rs / torch.where(pq != 0, pq, torch.ones_like(pq)),
                            torch.zeros_like(pq))
        z = z + bc(alpha) * p
        r = r - bc(alpha) * q
        iters = iters + active.long()
        active = active & (r.flatten(1).norm(dim=1) > thresh)
        s = precondition(r)
        rs_new = dot(r, s)
        beta = torch.where(rs != 0, rs_new / torch.where(rs != 0, rs, torch.ones_like(rs)),
                           torch.zeros_like(rs))
        p = s + bc(beta) * p
        rs = torch.where(active, rs_new, rs)
    return z, SolveInfo(iters, true_residual(A, z, b), backend)
