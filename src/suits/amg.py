"""The Brox linear system and its solve as an autograd layer (paper Sec. 3.2, Eq. 6-9, Algorithm 2).

The system of one Gauss-Newton step on a grid of ``N = d*h*w`` voxels with unknowns
``z = Δu`` ``(B, 3, d, h, w)`` is

    A = M + λ (L ⊗ I_3) + shift·I,

``M`` block diagonal (one symmetric 3x3 block ``M_v`` per voxel, stored ``(B, 3, 3, d, h, w)``),
``L`` the 6-neighbour graph Laplacian of the grid (degree on the diagonal, -1 per neighbour,
i.e. Neumann boundary) and ``shift`` an optional tiny diagonal shift for definiteness.
:class:`BroxOperator` holds ``A`` in this structured form (matrix-free ``matvec``; ``to_scipy``
for pyamg and tests). :func:`lse_solve` is Algorithm 2: the forward pass solves ``A z = b``, the
backward pass solves ``A^T grad@b = grad@z`` with the same solver (Eq. 8) and, on request, gives
``grad@M = -(grad@b ⊗ z)`` on the pattern of the 3x3 data blocks (Eq. 9).

Backends (``solver=``):

- ``None`` / ``"torch"``: :class:`TorchMultigrid`, conjugate gradients preconditioned by a
  matrix-free geometric multigrid V-cycle, on the tensors' own device, vectorised over the batch.
- ``"pyamg"`` (smoothed aggregation) / ``"pyamg-rs"`` (Ruge-Stuben): :class:`PyAMG`, pyamg on
  the host in float64, CG-accelerated. The faithful reference; the only code that leaves the device.

Any instance of those classes can be passed as ``solver`` to configure it. Both stop at the
relative residual ``||b - A z|| <= tol ||b||`` (CG's recursive residual) per batch element.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from suits.threads import at_most

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

Weights = tuple[float, float, float]


# --------------------------------------------------------------------------- grid Laplacian

def grid_laplacian(x: torch.Tensor, weights: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Matrix-free weighted 6-neighbour graph Laplacian over the last three axes (Neumann).

    ``(L x)(v) = Σ_a w_a Σ_{n ∈ N_a(v)} (x(v) - x(n))`` with ``N_a(v)`` the (one or two) grid
    neighbours of ``v`` along axis ``a``; neighbours outside the grid are absent, so the rows
    sum to zero. ``x``: ``(..., d, h, w)``.

    Computed as ``Σ_a w_a (2 x(v) - x(v-e_a) - x(v+e_a))`` on a replicate-padded copy (a missing
    neighbour reads ``x(v)`` and contributes 0): a handful of kernels whatever the grid, which
    matters for the many small kernels of a multigrid solve.
    """
    if x.dim() < 3:
        raise ValueError(f"grid_laplacian needs (..., d, h, w), got {tuple(x.shape)}")
    d, h, w = x.shape[-3:]
    xp = F.pad(x.reshape(-1, 1, d, h, w), (1, 1, 1, 1, 1, 1), mode="replicate")[:, 0]
    acc = None
    total = 0.0
    for a, wa in enumerate(weights):
        wa = float(wa)
        if wa == 0.0 or x.shape[-3 + a] < 2:
            continue
        total += 2.0 * wa
        lo = [slice(None), slice(1, d + 1), slice(1, h + 1), slice(1, w + 1)]
        hi = list(lo)
        lo[1 + a] = slice(0, x.shape[-3 + a])
        hi[1 + a] = slice(2, x.shape[-3 + a] + 2)
        pair = torch.add(xp[tuple(lo)], xp[tuple(hi)])
        acc = pair.mul_(wa) if acc is None else acc.add_(pair, alpha=wa)
    if acc is None:
        return torch.zeros_like(x)
    return torch.sub(x.reshape(acc.shape) * total, acc).reshape(x.shape)


def laplacian_degree(shape: Sequence[int], weights: Sequence[float] = (1.0, 1.0, 1.0),
                     device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Diagonal of the weighted grid Laplacian: ``(d, h, w)``, ``Σ_a w_a · #neighbours_a(v)``."""
    deg = torch.zeros(tuple(int(s) for s in shape), device=device, dtype=dtype)
    for a, w in enumerate(weights):
        n = int(shape[a])
        cnt = torch.full((n,), 2.0, device=device, dtype=dtype)
        if n == 1:
            cnt.zero_()
        else:
            cnt[0] = cnt[-1] = 1.0
        view = [1, 1, 1]
        view[a] = n
        deg = deg + float(w) * cnt.view(view)
    return deg


def _path_laplacian(n: int) -> "np.ndarray":
    """Dense 1-D Laplacian of a path of ``n`` nodes (numpy, float64)."""
    lap = np.zeros((n, n))
    idx = np.arange(n - 1)
    lap[idx, idx + 1] = lap[idx + 1, idx] = -1.0
    lap[np.arange(n), np.arange(n)] = -lap.sum(1)
    return lap


# --------------------------------------------------------------------------- the operator

def _block_apply(M: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``y_v = M_v z_v`` for ``M`` ``(B, 3, 3, ...)`` and ``z`` ``(B, 3, ...)``: three kernels,
    each over all three rows (column ``j`` of ``M`` times ``z_j``)."""
    return torch.addcmul(torch.addcmul(M[:, :, 0] * z[:, 0:1], M[:, :, 1], z[:, 1:2]), M[:, :, 2], z[:, 2:3])


class BroxOperator(NamedTuple):
    """``A = M + lam·(L ⊗ I_3) + shift·I`` on a ``(d, h, w)`` grid, structurally.

    Attributes:
        M: ``(B, 3, 3, d, h, w)`` per-voxel 3x3 data blocks (symmetric for the Brox system).
        lam: diffusion weight λ (a constant: it receives no gradient).
        shift: diagonal shift (0 for the plain system).
        weights: per-axis edge weights of ``L`` in units of λ (1 on the fine grid).
    """

    M: torch.Tensor
    lam: float
    shift: float = 0.0
    weights: Weights = (1.0, 1.0, 1.0)

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.M.shape[-3:])  # type: ignore[return-value]

    @property
    def batch(self) -> int:
        return int(self.M.shape[0])

    @property
    def size(self) -> int:
        """Number of unknowns per batch element, ``3·d·h·w``."""
        d, h, w = self.grid
        return 3 * d * h * w

    def lap_weights(self) -> Weights:
        """Edge weights of the λ-scaled Laplacian per axis."""
        return tuple(float(self.lam) * float(w) for w in self.weights)  # type: ignore[return-value]

    def matvec(self, z: torch.Tensor) -> torch.Tensor:
        """``A z`` for ``z`` ``(B, 3, d, h, w)``."""
        y = _block_apply(self.M, z) + grid_laplacian(z, self.lap_weights())
        if self.shift:
            y = y + self.shift * z
        return y

    def transpose(self) -> "BroxOperator":
        """``A^T``: transposed data blocks, same (symmetric) Laplacian part."""
        return self._replace(M=self.M.transpose(1, 2))

    @property
    def T(self) -> "BroxOperator":  # noqa: N802 (matrix notation)
        return self.transpose()

    def diagonal_blocks(self) -> torch.Tensor:
        """``(B, 3, 3, d, h, w)``: the 3x3 diagonal blocks of ``A``, ``M_v + (λ·deg(v) + shift) I``."""
        deg = laplacian_degree(self.grid, self.lap_weights(), device=self.M.device, dtype=self.M.dtype)
        eye = torch.eye(3, device=self.M.device, dtype=self.M.dtype).view(1, 3, 3, 1, 1, 1)
        return self.M + (deg + self.shift) * eye

    def to_scipy(self, batch: int = 0, layout: str = "component"):
        """The whole block system of batch element ``batch`` as ``scipy.sparse`` CSR (float64).

        ``layout="component"``: unknown ``c·N + v`` (``z[b].reshape(-1)``, the paper's
        ``[u_x; u_y; u_z]`` block order); ``"voxel"``: unknown ``3·v + c`` (3x3 blocks per voxel).
        Moves data to the host.
        """
        import scipy.sparse as sp

        d, h, w = self.grid
        n = d * h * w
        lap = sp.csr_matrix((n, n))
        weights = self.lap_weights()
        for a, size in enumerate((d, h, w)):
            mats = [sp.identity(s, format="csr") for s in (d, h, w)]
            mats[a] = sp.csr_matrix(_path_laplacian(size))
            lap = lap + weights[a] * sp.kron(sp.kron(mats[0], mats[1]), mats[2], format="csr")
        blocks = self.M[batch].detach().to("cpu", torch.float64).reshape(3, 3, n).numpy()
        rows, cols, vals = [], [], []
        ar = np.arange(n)
        for i in range(3):
            for j in range(3):
                if layout == "component":
                    rows.append(i * n + ar)
                    cols.append(j * n + ar)
                else:
                    rows.append(3 * ar + i)
                    cols.append(3 * ar + j)
                vals.append(blocks[i, j])
        data = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(3 * n, 3 * n))
        if layout == "component":
            lap3 = sp.kron(sp.identity(3), lap, format="csr")
        elif layout == "voxel":
            lap3 = sp.kron(lap, sp.identity(3), format="csr")
        else:
            raise ValueError(f"layout must be 'component' or 'voxel', got {layout!r}")
        out = data + lap3
        if self.shift:
            out = out + self.shift * sp.identity(3 * n, format="csr")
        return out.tocsr()


class SolveInfo(NamedTuple):
    """Outcome of a solve: per batch element iterations and final relative residual.

    ``residual`` is the *true* relative residual ``||b - A z|| / ||b||`` recomputed after the
    solve (0 where ``b = 0``), in the working precision.
    """

    iterations: torch.Tensor
    residual: torch.Tensor
    backend: str


def _true_residual(A: BroxOperator, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r = (b - A.matvec(z)).flatten(1).norm(dim=1)
    bn = b.flatten(1).norm(dim=1)
    return torch.where(bn > 0, r / torch.where(bn > 0, bn, torch.ones_like(bn)), r)


# --------------------------------------------------------------------------- torch backend

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
    waiting (the ``suits`` default): set-up + solve 0.24-0.28 s with the limit against
    0.34-0.38 s on two threads (``bench_solver.py --solver-threads``, 2026-12-03,
    ``docs/benchmarks.md``). At 8x the voxels one and two threads were even. ``0`` leaves the
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
            mats[a] = torch.as_tensor(_path_laplacian(size), device=dev, dtype=dt)
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
        x = _block_apply(L.dinv, r).mul_(self.omega)
        for _ in range(self.smooth - 1):
            x = torch.add(x, _block_apply(L.dinv, r - L.op.matvec(x)), alpha=self.omega)
        rc = _apply_axes(r - L.op.matvec(x), L.P, transpose=True)
        x = x + _apply_axes(self._vcycle(hier, rc, lvl + 1), L.P, transpose=False)
        for _ in range(self.smooth):
            x = torch.add(x, _block_apply(L.dinv, r - L.op.matvec(x)), alpha=self.omega)
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
        A = hier.op
        maxiter = self.maxiter if maxiter is None else int(maxiter)
        check = self.check_every or (1 if b.device.type == "cpu" else 4)
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
        s = self.precondition(hier, r)
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
            s = self.precondition(hier, r)
            rs_new = dot(r, s)
            beta = torch.where(rs != 0, rs_new / torch.where(rs != 0, rs, torch.ones_like(rs)),
                               torch.zeros_like(rs))
            p = s + bc(beta) * p
            rs = torch.where(active, rs_new, rs)
        return z, SolveInfo(iters, _true_residual(A, z, b), self.name)


# --------------------------------------------------------------------------- pyamg backend

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
        return z, SolveInfo(torch.tensor(iters), _true_residual(A, z, b), self.name)


# --------------------------------------------------------------------------- public entry points

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
