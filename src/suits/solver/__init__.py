"""The Brox linear system of one Gauss-Newton step and its solve (paper Sec. 3.2, Eq. 6-9, Alg. 2).

One job per module:

- :mod:`suits.solver.operator`: the structured operator ``A = M + λ (L ⊗ I_3) + shift·I``
  (:class:`BroxOperator`, :func:`grid_laplacian`, :func:`laplacian_degree`).
- :mod:`suits.solver.krylov`: preconditioned conjugate gradients and :class:`SolveInfo`.
- :mod:`suits.solver.multigrid`: the geometric multigrid hierarchy and V-cycle;
  :class:`TorchMultigrid`, the default backend (multigrid-preconditioned CG on the device).
- :mod:`suits.solver.pyamg_backend`: :class:`PyAMG`, the pyamg (AMG) reference backend on the
  host in float64.
- :mod:`suits.solver.layer`: :func:`get_solver`, :func:`solve` and :func:`lse_solve`, the
  autograd layer (forward ``A z = b``, backward with ``A^T``, optional gradient on ``M``).
"""
from suits.solver.krylov import SolveInfo
from suits.solver.layer import get_solver, lse_solve, solve
from suits.solver.multigrid import TorchMultigrid
from suits.solver.operator import BroxOperator, grid_laplacian, laplacian_degree
from suits.solver.pyamg_backend import PyAMG

__all__ = [
    "grid_laplacian",
    "laplacian_degree",
    "BroxOperator",
    "SolveInfo",
    "TorchMultigrid",
    "PyAMG",
    "get_solver",
    "solve",
    "lse_solve",
]
