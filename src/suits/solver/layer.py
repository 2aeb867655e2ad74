"""The Brox solve as an autograd layer (paper Sec. 3.2, Eq. 6-9, Algorithm 2) and its backends.

:func:`lse_solve` is Algorithm 2: the forward pass solves ``A z = b``
(``A = M + λ (L ⊗ I_3) + shift·I``, :class:`~suits.solver.operator.BroxOperator`), the backward
pass solves ``A^T grad@b = grad@z`` with the same solver (Eq. 8) and, on request, gives
``grad@M = -(grad@b ⊗ z)`` on the pattern of the 3x3 data blocks (Eq. 9). :func:`solve` is the
same solve without autograd.

Backends (``solver=``, :func:`get_solver`):

- ``None`` / ``"torch"``: :class:`~suits.solver.multigrid.TorchMultigrid`, conjugate gradients
  preconditioned by a matrix-free geometric multigrid V-cycle, on the tensors' own device,
  vectorised over the batch.
- ``"pyamg"`` (smoothed aggregation) / ``"pyamg-rs"`` (Ruge-Stuben):
  :class:`~suits.solver.pyamg_backend.PyAMG`, pyamg on the host in float64, CG-accelerated.
  The faithful reference; the only code that leaves the device.

Any instance of those classes can be passed as ``solver`` to configure it. Both stop at the
relative residual ``||b - A z|| <= tol ||b||`` (CG's recursive residual) per batch element.
"""
from __future__ import annotations

import warnings

import torch
from torch.autograd.function import once_differentiable

from suits.solver.krylov import SolveInfo
from suits.solver.multigrid import TorchMultigrid
from suits.solver.operator import BroxOperator
from suits.solver.pyamg_backend import PyAMG

__all__ = ["get_solver", "solve", "lse_solve"]


def get_solver(solver: object | None = None):
    """``None``/``"torch"`` → :class:`TorchMultigrid`, ``"pyamg"``/``"pyamg-sa"`` → :class:`PyAMG`,
    ``"pyamg-rs"`` → Ruge-Stuben; an object with ``setup``/``solve`` is returned unchanged."""
    if solver is None or solver == "torch":
        return TorchMultigrid()
    if solver in ("pyamg", "pyamg-sa"):
        return PyAMG()
    if solver == "pyamg-rs":
        return PyAMG(method="rs")
    if hasattr(solver, "setup") and hasattr(solver, "solve"):
        return solver
    raise ValueError(f"unknown solver {solver!r}; use None/'torch', 'pyamg', 'pyamg-rs' or a solver object")


def _as_operator(A: torch.Tensor | BroxOperator, lam: float | None, shift: float) -> BroxOperator:
    if isinstance(A, BroxOperator):
        return A
    if lam is None:
        raise TypeError("lam is required when A is given as the data blocks M")
    return BroxOperator(A, float(lam), float(shift))


def _check(A: BroxOperator, b: torch.Tensor) -> None:
    if A.M.dim() != 6 or tuple(A.M.shape[1:3]) != (3, 3):
        raise ValueError(f"M must be (B, 3, 3, d, h, w), got {tuple(A.M.shape)}")
    if b.dim() != 5 or b.shape[1] != 3 or b.shape[0] != A.M.shape[0] or tuple(b.shape[-3:]) != A.grid:
        raise ValueError(f"b must be (B, 3, d, h, w) matching M {tuple(A.M.shape)}, got {tuple(b.shape)}")


def solve(A: torch.Tensor | BroxOperator, b: torch.Tensor, lam: float | None = None,
          solver: object | None = None, tol: float = 1e-6, maxiter: int | None = None,
          shift: float = 0.0) -> tuple[torch.Tensor, SolveInfo]:
    """Solve ``A z = b`` without autograd; returns ``(z, SolveInfo)`` (set-up included)."""
    op = _as_operator(A, lam, shift)
    _check(op, b)
    backend = get_solver(solver)
    with torch.no_grad():
        return backend.solve(backend.setup(op), b, tol=tol, maxiter=maxiter)


def _warn_unconverged(info: SolveInfo, backend, tol: float, maxiter: int | None, where: str) -> None:
    cap = backend.maxiter if maxiter is None else int(maxiter)
    if bool((info.iterations >= cap).any()):
        warnings.warn(f"lse_solve ({where}, {info.backend}): hit maxiter={cap} before the relative "
                      f"residual {tol:g}; reached {info.residual.max().item():.3g}", RuntimeWarning,
                      stacklevel=3)


class _LSESolve(torch.autograd.Function):
    """Algorithm 2. Inputs after ``M`` and ``b`` are constants."""

    @staticmethod
    def forward(ctx, M, b, lam, shift, weights, backend, tol, maxiter, grad_A):  # noqa: D401
        A = BroxOperator(M, lam, shift, weights)
        state = backend.setup(A)
        z, info = backend.solve(state, b, tol=tol, maxiter=maxiter)
        _warn_unconverged(info, backend, tol, maxiter, "forward")
        ctx.save_for_backward(M, b, z)
        ctx.constants = (lam, shift, weights, backend, tol, maxiter, grad_A)
        ctx.state = state
        return z

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z):
        M, b, z = ctx.saved_tensors
        lam, shift, weights, backend, tol, maxiter, grad_A = ctx.constants
        A_T = BroxOperator(M, lam, shift, weights).transpose()
        # Eq. (8): A^T grad@b = grad@z with the same solver. M is symmetric by contract, so
        # A^T = A and the forward hierarchy is reused instead of being set up again.
        state_T = backend.setup(A_T, reuse=ctx.state)
        grad_b, info = backend.solve(state_T, grad_z.contiguous(), tol=tol, maxiter=maxiter)
        _warn_unconverged(info, backend, tol, maxiter, "backward")
        grad_M = None
        if grad_A and ctx.needs_input_grad[0]:
            # Eq. (9) restricted to the 3x3 data blocks: grad@M_v[i, j] = -grad@b_v[i] · z_v[j]
            grad_M = -(grad_b.unsqueeze(2) * z.unsqueeze(1))
        return grad_M, (grad_b if ctx.needs_input_grad[1] else None), None, None, None, None, None, None, None


def lse_solve(A: torch.Tensor | BroxOperator, b: torch.Tensor, lam: float | None = None,
              solver: object | None = None, tol: float = 1e-6, grad_A: bool = False,
              maxiter: int | None = None, shift: float = 0.0) -> torch.Tensor:
    """``z = A^{-1} b`` as an autograd layer (Algorithm 2); batches are independent systems.

    Args:
        A: the data blocks ``M`` ``(B, 3, 3, d, h, w)`` (symmetric per voxel) — then ``lam`` (and
            ``shift``) complete ``A = M + lam·(L ⊗ I_3) + shift·I`` — or a :class:`BroxOperator`.
        b: right-hand side ``(B, 3, d, h, w)``.
        solver: ``None``/``"torch"`` (multigrid-preconditioned CG on the device), ``"pyamg"``,
            ``"pyamg-rs"`` or a configured :class:`TorchMultigrid` / :class:`PyAMG`.
        tol: relative residual at which forward and backward solves stop.
        grad_A: also return ``grad@M = -(grad@b ⊗ z)`` on the 3x3 block pattern (Eq. 9);
            default False: ``M`` gets no gradient (the paper's setting). ``λ L`` never does.
        maxiter: iteration cap (backend default 200); a ``RuntimeWarning`` is issued when a
            forward or backward solve hits it.
        shift: diagonal shift when ``A`` is given as ``M``.

    Returns:
        ``z`` ``(B, 3, d, h, w)``, same dtype and device as ``b``.
    """
    op = _as_operator(A, lam, shift)
    _check(op, b)
    backend = get_solver(solver)
    return _LSESolve.apply(op.M, b, float(op.lam), float(op.shift), tuple(op.weights), backend,
                           float(tol), maxiter, bool(grad_A))
