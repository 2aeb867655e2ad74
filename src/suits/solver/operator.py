"""The Brox operator of one Gauss-Newton step (paper Sec. 3.2, Eq. 6), held structurally.

On a grid of ``N = d*h*w`` voxels with unknowns ``z = Δu`` ``(B, 3, d, h, w)`` the system is

    A = M + λ (L ⊗ I_3) + shift·I,

``M`` block diagonal (one symmetric 3x3 block ``M_v`` per voxel, stored ``(B, 3, 3, d, h, w)``),
``L`` the 6-neighbour graph Laplacian of the grid (degree on the diagonal, -1 per neighbour,
i.e. Neumann boundary) and ``shift`` an optional tiny diagonal shift for definiteness.
:class:`BroxOperator` holds ``A`` in this structured form (matrix-free ``matvec``; ``to_scipy``
for pyamg and tests).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "grid_laplacian",
    "laplacian_degree",
    "path_laplacian",
    "block_apply",
    "BroxOperator",
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


def path_laplacian(n: int) -> "np.ndarray":
    """Dense 1-D Laplacian of a path of ``n`` nodes (numpy, float64)."""
    lap = np.zeros((n, n))
    idx = np.arange(n - 1)
    lap[idx, idx + 1] = lap[idx + 1, idx] = -1.0
    lap[np.arange(n), np.arange(n)] = -lap.sum(1)
    return lap


# --------------------------------------------------------------------------- the operator

def block_apply(M: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
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
        y = block_apply(self.M, z) + grid_laplacian(z, self.lap_weights())
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
            mats[a] = sp.csr_matrix(path_laplacian(size))
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
