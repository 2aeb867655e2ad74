"""Geometric multigrid for the Brox operator: hierarchy, V-cycle and :class:`TorchMultigrid`.

:class:`TorchMultigrid` is the default backend of :func:`suits.solver.lse_solve`: conjugate
gradients (:func:`suits.solver.krylov.pcg`) preconditioned by a matrix-free geometric multigrid
V-cycle, on the tensors' own device, vectorised over the batch.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from suits.solver.krylov import SolveInfo, pcg
from suits.solver.operator import BroxOperator, block_apply, path_laplacian
from suits.threads import at_most

__all__ = ["TorchMultigrid"]


# --------------------------------------------------------------------------- hierarchy

def _prolongation_1d(n_fine: int, device, dtype) -> torch.Tensor:
    """Linear interpolation ``(n_fine, ceil(n_fine/2))``: fine ``2k`` = coarse ``k``, fine ``2k+1``
    the mean of coarse ``k`` and ``k+1`` (constant extrapolation past the last coarse node)."""
    n_c = (n_fine + 1) // 2
    P = torch.zeros(n_fine, n_c, device=device, dtype=dtype)
    k = torch.arange(n_c, device=device)
    P[2 * k, k] = 1.0
    odd = torch.arange(n_fine // 2, device=device)
    P[2 * odd + 1, odd] += 0.5
    P[2 * odd + 1, torch.clamp(odd + 1, max=n_c - 1)] += 0.5
    return P


def _apply_axes(x: torch.Tensor, mats: Sequence[torch.Tensor | None], transpose: bool) -> torch.Tensor:
    """Apply a 1-D matrix along each of the last three axes (``None`` = identity)."""
    for a, P in enumerate(mats):
        if P is None:
            continue
        dim = x.dim() - 3 + a
        mat = P if not transpose else P.transpose(0, 1)
        x = torch.matmul(x.movedim(dim, -1), mat.transpose(0, 1)).movedim(-1, dim)
    return x


def _inv3(A: torch.Tensor) -> torch.Tensor:
    """Inverse of 3x3 blocks ``(B, 3, 3, ...)`` by the adjugate (vectorised, any device)."""
    a, b, c = A[:, 0, 0], A[:, 0, 1], A[:, 0, 2]
    d, e, f = A[:, 1, 0], A[:, 1, 1], A[:, 1, 2]
    g, h, i = A[:, 2, 0], A[:, 2, 1], A[:, 2, 2]
    co = torch.stack([
        torch.stack([e * i - f * h, c * h - b * i, b * f - c * e], 1),
        torch.stack([f * g - d * i, a * i - c * g, c * d - a * f], 1),
        torch.stack([d * h - e * g, b * g - a * h, a * e - b * d], 1),
    ], 1)
    det = a * co[:, 0, 0] + b * co[:, 1, 0] + c * co[:, 2, 0]
    return co / det.unsqueeze(1).unsqueeze(1)


@dataclass
class _Level:
    op: BroxOperator                       # this level's operator (shift folded into M)
    dinv: torch.Tensor                     # inverse diagonal blocks (B, 3, 3, d, h, w)
    P: tuple = (None, None, None)          # per-axis prolongation from the next coarser level


@dataclass
class _Hierarchy:
    levels: list
    coarse_inv: torch.Tensor               # (B, n, n) inverse of the coarsest operator
    op: BroxOperator                       # the fine operator


@dataclass
class TorchMultigrid:
    """CG preconditioned by a symmetric geometric multigrid V-cycle, matrix-free, on device.

    Hierarchy: an axis with ``n >= 3`` voxels is coarsened to ``ceil(n/2)`` (coarse node ``k`` at
    fine node ``2k``); prolongation ``P`` is (tensor-product) linear interpolation, restriction
    ``P^T``. Coarse operators: data blocks by lumped Galerkin ``M_c = P^T M`` (exact on
    constants), Laplacian rediscretised for the coarser spacing (edge weight
    ``λ·h_d h_h h_w / h_a²`` along axis ``a``, i.e. ×2 per isotropic coarsening), the shift folded
    into the data blocks. Smoother: ``smooth`` damped block-Jacobi sweeps (``omega``) with the
    3x3 blocks ``M_v + λ·deg(v)·I`` before and after the coarse correction; the coarsest level
    (at most ``coarse_size`` voxels) is solved by a dense Cholesky inverse. Equal pre/post
    sweeps and ``R = P^T`` make the V-cycle symmetric positive definite, so CG stays valid.

    Convergence is checked every ``check_every`` iterations (one host sync per check); systems
    of a batch that have converged are frozen, so the result does not depend on it.

    ``cpu_threads``: at most this many intra-op threads while a CPU system is set up and
    solved (:func:`suits.threads.at_most`, restored afterwards). ``None`` (default): one thread
    for grids of at most ``SINGLE_THREAD_VOXELS`` voxels, else unchanged. A solve is about a
    thousand element-wise kernels on tensors of a few MB; at the paper's feature grid
    (35 x 47 x 48) waking a second OpenMP thread for each costs more than it saves with passive
    waiting (the ``suits`` default); for timings see docs/benchmarks.md. ``0`` leaves the
    count alone. The result does not depend on it beyond the float rounding of reductions.
    """

    smooth: int = 2
    omega: float = 0.8
    coarse_size: int = 128
    maxiter: int = 200
    check_every: int | None = None
    cpu_threads: int | None = None
    name: str = field(default="torch", init=False)

    SINGLE_THREAD_VOXELS = 2 ** 19

    def __post_init__(self) -> None:
        if self.cpu_threads is not None and int(self.cpu_threads) < 0:
            raise ValueError(f"cpu_threads must be None, 0 (unchanged) or >= 1, got {self.cpu_threads}")

    def _threads(self, x: torch.Tensor, grid: Sequence[int]):
        """Context: the thread limit for work on ``x``'s device over ``grid`` (see above)."""
        n = self.cpu_threads
        if n is None:
            n = 1 if int(np.prod(grid)) <= self.SINGLE_THREAD_VOXELS else 0
        if x.device.type != "cpu" or n == 0:
            return contextlib.nullcontext()
        return at_most(int(n))

    # -- set-up
    def setup(self, A: BroxOperator, reuse: _Hierarchy | None = None) -> _Hierarchy:
        """Build the multigrid hierarchy of ``A`` (``reuse`` returns a hierarchy of an equal operator)."""
        if reuse is not None:
            return reuse
        with self._threads(A.M, A.grid):
            return self._setup(A)

    def _setup(self, A: BroxOperator) -> _Hierarchy:
        dev, dt = A.M.device, A.M.dtype
        eye = torch.eye(3, device=dev, dtype=dt).view(1, 3, 3, 1, 1, 1)
        M = (A.M + A.shift * eye if A.shift else A.M).contiguous()
        op = BroxOperator(M, A.lam, 0.0, A.weights)
        spacing = [1.0, 1.0, 1.0]
        levels = []
        while True:
            grid = op.grid
            level = _Level(op=op, dinv=_inv3(op.diagonal_blocks()).contiguous())
            levels.append(level)
            coarsen = [n >= 3 for n in grid]
            if int(np.prod(grid)) <= self.coarse_size or not any(coarsen):
                break
            P = tuple(_prolongation_1d(n, dev, dt) if c else None for n, c in zip(grid, coarsen))
            level.P = P
            spacing = [h * (2.0 if c else 1.0) for h, c in zip(spacing, coarsen)]
            vol = spacing[0] * spacing[1] * spacing[2]
            weights = tuple(vol / h ** 2 for h in spacing)
            Mc = _apply_axes(op.M, P, transpose=True).contiguous()
            op = BroxOperator(Mc, A.lam, 0.0, weights)  # type: ignore[arg-type]
        return _Hierarchy(levels=levels, coarse_inv=self._coarse_inverse(levels[-1].op), op=A)

    @staticmethod
    def _coarse_inverse(op: BroxOperator) -> torch.Tensor:
        """Dense inverse ``(B, 3N, 3N)`` (component layout) of the coarsest operator."""
        dev, dt = op.M.device, op.M.dtype
        d, h, w = op.grid
        n = d * h * w
        lap = torch.zeros(n, n, device=dev, dtype=dt)
        weights = op.lap_weights()
        for a, size in enumerate((d, h, w)):
            mats = [torch.eye(s, device=dev, dtype=dt) for s in (d, h, w)]
            mats[a] = torch.as_tensor(path_laplacian(size), device=dev, dtype=dt)
            lap = lap + weights[a] * torch.kron(torch.kron(mats[0], mats[1]), mats[2])
        B = op.batch
        dense = torch.kron(torch.eye(3, device=dev, dtype=dt), lap).expand(B, 3 * n, 3 * n).clone()
        blocks = torch.diag_embed(op.M.reshape(B, 3, 3, n))          # (B, 3, 3, n, n)
        dense = dense + blocks.permute(0, 1, 3, 2, 4).reshape(B, 3 * n, 3 * n)
        chol, info = torch.linalg.cholesky_ex(dense)
        # numerically singular (A only semi-definite, e.g. M = 0 and no shift): pseudo-inverse,
        # which keeps the V-cycle symmetric and positive definite on the range of A
        tau = 10.0 * dense.shape[-1] * torch.finfo(dt).eps
        piv = torch.diagonal(chol, dim1=-2, dim2=-1) ** 2
        ratio = piv.min(-1).values / piv.max(-1).values.clamp_min(torch.finfo(dt).tiny)
        if bool(((info != 0) | ~(ratio > tau)).any()):
            return torch.linalg.pinv(dense, rtol=tau, hermitian=True)
        return torch.cholesky_inverse(chol)

    # -- the V-cycle
    def _vcycle(self, hier: _Hierarchy, r: torch.Tensor, lvl: int = 0) -> torch.Tensor:
        levels = hier.levels
        if lvl == len(levels) - 1:
            B = r.shape[0]
            flat = r.reshape(B, -1, 1)
            return torch.bmm(hier.coarse_inv, flat).reshape(r.shape)
        L = levels[lvl]
        x = block_apply(L.dinv, r).mul_(self.omega)
        for _ in range(self.smooth - 1):
            x = torch.add(x, block_apply(L.dinv, r - L.op.matvec(x)), alpha=self.omega)
        rc = _apply_axes(r - L.op.matvec(x), L.P, transpose=True)
        x = x + _apply_axes(self._vcycle(hier, rc, lvl + 1), L.P, transpose=False)
        for _ in range(self.smooth):
            x = torch.add(x, block_apply(L.dinv, r - L.op.matvec(x)), alpha=self.omega)
        return x

    def precondition(self, hier: _Hierarchy, r: torch.Tensor) -> torch.Tensor:
        """One V-cycle from zero: ``≈ A^{-1} r`` (a fixed SPD linear map)."""
        return self._vcycle(hier, r, 0)

    # -- PCG
    def solve(self, hier: _Hierarchy, b: torch.Tensor, tol: float = 1e-6,
              maxiter: int | None = None) -> tuple[torch.Tensor, SolveInfo]:
        """Preconditioned CG on ``A z = b`` from ``z = 0``, per batch element to ``||r|| <= tol ||b||``."""
        with self._threads(b, hier.op.grid):
            return self._pcg(hier, b, tol, maxiter)

    def _pcg(self, hier: _Hierarchy, b: torch.Tensor, tol: float,
             maxiter: int | None) -> tuple[torch.Tensor, SolveInfo]:
        maxiter = self.maxiter if maxiter is None else int(maxiter)
        check = self.check_every or (1 if b.device.type == "cpu" else 4)
        return pcg(hier.op, b, lambda r: self.precondition(hier, r), tol, maxiter, check, self.name)
