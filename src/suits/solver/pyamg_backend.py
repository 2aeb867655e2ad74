"""pyamg adapter: :class:`PyAMG`, algebraic multigrid on the host in float64.

The faithful reference backend of :func:`suits.solver.lse_solve` (``solver="pyamg"`` smoothed
aggregation, ``"pyamg-rs"`` Ruge-Stuben), CG-accelerated; the only solver code that leaves the
device.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from suits.solver.krylov import SolveInfo, true_residual
from suits.solver.operator import BroxOperator

__all__ = ["PyAMG"]


@dataclass
class PyAMG:
    """pyamg on the host (float64): ``method="sa"`` smoothed aggregation (3x3 voxel blocks,
    near-null space = the three constant fields) or ``"rs"`` Ruge-Stuben (classical AMG on the
    scalar matrix, as cited by the paper); ``accel="cg"`` (default) or ``None`` (plain V-cycles).
    Stops at the relative residual ``tol`` (pyamg's ``||r|| < tol ||b||``)."""

    method: str = "sa"
    accel: str | None = "cg"
    maxiter: int = 200
    name: str = field(default="pyamg", init=False)

    def setup(self, A: BroxOperator, reuse: list | None = None) -> tuple[BroxOperator, list]:
        """One pyamg hierarchy per batch element, from ``A.to_scipy(layout="voxel")``."""
        import pyamg

        if reuse is not None:
            return (A, reuse[1])
        mls = []
        n = A.size // 3
        for i in range(A.batch):
            csr = A.to_scipy(i, layout="voxel")
            if self.method == "sa":
                nullspace = np.kron(np.ones((n, 1)), np.eye(3))
                ml = pyamg.smoothed_aggregation_solver(csr.tobsr(blocksize=(3, 3)), B=nullspace,
                                                       symmetry="symmetric")
            elif self.method == "rs":
                ml = pyamg.ruge_stuben_solver(csr)
            else:
                raise ValueError(f"pyamg method must be 'sa' or 'rs', got {self.method!r}")
            mls.append(ml)
        return (A, mls)

    def solve(self, state, b: torch.Tensor, tol: float = 1e-6,
              maxiter: int | None = None) -> tuple[torch.Tensor, SolveInfo]:
        A, mls = state
        maxiter = self.maxiter if maxiter is None else int(maxiter)
        bh = b.detach().to("cpu", torch.float64)
        out = torch.empty_like(bh)
        iters = []
        for i, ml in enumerate(mls):
            vec = bh[i].reshape(3, -1).T.reshape(-1).numpy()          # voxel layout
            if not np.any(vec):
                out[i] = 0.0
                iters.append(0)
                continue
            residuals: list = []
            x = ml.solve(vec, tol=tol, maxiter=maxiter, accel=self.accel, residuals=residuals)
            out[i] = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, 3).T)).reshape(bh[i].shape)
            iters.append(max(len(residuals) - 1, 0))
        z = out.to(device=b.device, dtype=b.dtype)
        return z, SolveInfo(torch.tensor(iters), true_residual(A, z, b), self.name)
