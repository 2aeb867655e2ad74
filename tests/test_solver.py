"""suits.solver: the structured Brox operator, both solver backends and the autograd layer (Alg. 2)."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import scipy.sparse.linalg as sla
import torch

from suits.solver import (BroxOperator, PyAMG, TorchMultigrid, get_solver, grid_laplacian,
                       laplacian_degree, lse_solve, solve)

# a multigrid that really coarsens even the tiny test grids (default coarsest level: 128 voxels)
MG = TorchMultigrid(coarse_size=8)
BACKENDS = [MG, "pyamg"]


def dense_laplacian(shape) -> np.ndarray:
    """Graph Laplacian of the 6-neighbour grid, written independently from the module."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    n = idx.size
    L = np.zeros((n, n))
    for v in itertools.product(*(range(s) for s in shape)):
        for a in range(3):
            for step in (-1, 1):
                w = list(v)
                w[a] += step
                if 0 <= w[a] < shape[a]:
                    L[idx[v], idx[v]] += 1.0
                    L[idx[v], idx[tuple(w)]] -= 1.0
    return L


def random_blocks(B, grid, dtype=torch.float64, scale=1.0, generator=None):
    """Symmetric PSD 3x3 blocks ``Σ_c g g^T`` from 4 random gradient vectors per voxel."""
    g = torch.randn(B, 4, 3, *grid, dtype=dtype, generator=generator) * scale
    return (g.unsqueeze(3) * g.unsqueeze(2)).sum(1)


def dense_A(M: torch.Tensor, lam: float, shift: float = 0.0) -> torch.Tensor:
    """``(B, 3N, 3N)`` dense ``A`` (component layout) built differentiably from ``M``."""
    B = M.shape[0]
    grid = tuple(M.shape[-3:])
    n = int(np.prod(grid))
    L = torch.as_tensor(dense_laplacian(grid), dtype=M.dtype)
    A = torch.kron(torch.eye(3, dtype=M.dtype), lam * L + shift * torch.eye(n, dtype=M.dtype))
    rows = []
    for i in range(3):
        rows.append(torch.cat([torch.diag_embed(M[:, i, j].reshape(B, n)) for j in range(3)], dim=2))
    return A + torch.cat(rows, dim=1)


# ----------------------------------------------------------------------------- operator

def test_laplacian_matches_independent_graph_laplacian_and_is_neumann():
    grid = (4, 5, 3)
    x = torch.randn(2, 3, *grid, dtype=torch.float64)
    L = dense_laplacian(grid)
    ref = np.einsum("ij,bcj->bci", L, x.reshape(2, 3, -1).numpy()).reshape(x.shape)
    assert np.allclose(grid_laplacian(x).numpy(), ref, atol=1e-12)
    op = BroxOperator(torch.zeros(1, 3, 3, *grid, dtype=torch.float64), lam=1.0)
    S = op.to_scipy(0)
    assert abs(S - S.T).max() == 0                                   # symmetric
    assert np.allclose(np.asarray(S.sum(axis=1)).ravel(), 0.0)       # zero row sums
    assert np.allclose(S[: L.shape[0], : L.shape[0]].toarray(), L)
    assert torch.equal(laplacian_degree(grid, dtype=torch.float64).reshape(-1),
                       torch.as_tensor(np.diag(L).copy()))
    # the paper's interior stencil: 6 u(x) - Σ_{N6} u(l)
    u = torch.randn(1, 1, 5, 5, 5, dtype=torch.float64)
    c = u[0, 0]
    stencil = 6 * c[2, 2, 2] - (c[1, 2, 2] + c[3, 2, 2] + c[2, 1, 2] + c[2, 3, 2] + c[2, 2, 1] + c[2, 2, 3])
    assert torch.isclose(grid_laplacian(u)[0, 0, 2, 2, 2], stencil)


@pytest.mark.parametrize("layout", ["component", "voxel"])
def test_matvec_agrees_with_to_scipy(layout):
    grid = (3, 4, 5)
    M = torch.randn(2, 3, 3, *grid, dtype=torch.float64)       # any blocks, not only symmetric
    op = BroxOperator(M, lam=2.5, shift=0.1)
    z = torch.randn(2, 3, *grid, dtype=torch.float64)
    y = op.matvec(z)
    for b in range(2):
        S = op.to_scipy(b, layout=layout)
        zb = z[b].reshape(3, -1)
        vec = zb.reshape(-1) if layout == "component" else zb.T.reshape(-1)
        out = S @ vec.numpy()
        out = out.reshape(3, -1) if layout == "component" else out.reshape(-1, 3).T
        assert np.allclose(out, y[b].reshape(3, -1).numpy(), atol=1e-12)
    # transpose: <A^T y, z> = <y, A z>
    w = torch.randn_like(z)
    assert torch.allclose((op.T.matvec(w) * z).sum(), (w * op.matvec(z)).sum())
    assert torch.allclose(dense_A(M, 2.5, 0.1)[0] @ z[0].reshape(-1), y[0].reshape(-1))


# ----------------------------------------------------------------------------- backends

@pytest.mark.parametrize("backend", [MG, None, "pyamg", "pyamg-rs"])
def test_backends_agree_with_spsolve(backend):
    grid = (6, 7, 5)
    M = random_blocks(2, grid, scale=0.5)
    b = torch.randn(2, 3, *grid, dtype=torch.float64)
    op = BroxOperator(M, lam=3.0)
    z, info = solve(op, b, solver=backend, tol=1e-10)
    for i in range(2):
        ref = sla.spsolve(op.to_scipy(i).tocsc(), b[i].reshape(-1).numpy())
        err = np.linalg.norm(z[i].reshape(-1).numpy() - ref) / np.linalg.norm(ref)
        assert err <= 1e-6, (backend, err)
    assert (info.residual <= 1e-9).all()


def test_fast_backend_really_uses_several_levels():
    hier = MG.setup(BroxOperator(random_blocks(1, (9, 10, 7)), 1.0))
    assert [lvl.op.grid for lvl in hier.levels] == [(9, 10, 7), (5, 5, 4), (3, 3, 2), (2, 2, 2)]
    # Laplacian rediscretised for the spacing h: edge weight h_d h_h h_w / h_a^2
    assert hier.levels[1].op.weights == (2.0, 2.0, 2.0)             # h = (2, 2, 2)
    assert hier.levels[2].op.weights == (4.0, 4.0, 4.0)             # h = (4, 4, 4)
    assert hier.levels[3].op.weights == (4.0, 4.0, 16.0)            # h = (8, 8, 4): 2 voxels stay
    # lumped Galerkin: total data mass is conserved by the restriction
    assert torch.allclose(hier.levels[1].op.M.sum((3, 4, 5)), hier.levels[0].op.M.sum((3, 4, 5)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_backend_keeps_dtype_device_and_stops_at_the_residual(dtype):
    grid = (12, 11, 10)
    M = random_blocks(2, grid, dtype=dtype, scale=0.3)
    b = torch.randn(2, 3, *grid, dtype=dtype)
    b[1] *= 1e3                                                      # relative, not absolute, tolerance
    op = BroxOperator(M, lam=10.0)
    tols = (1e-2, 1e-4) if dtype == torch.float32 else (1e-2, 1e-4, 1e-8)
    previous = 0
    for tol in tols:
        z, info = solve(op, b, solver=MG, tol=tol)
        assert z.dtype == dtype and z.device == b.device and z.shape == b.shape
        true = (b - op.matvec(z)).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)
        assert (true <= tol * 1.01).all(), (tol, true)
        its = int(info.iterations.max())
        assert its > previous                                        # tighter tol, more iterations
        previous = its
        # ...and it stopped as soon as it got there: one iteration less is not enough
        z1, _ = solve(op, b, solver=TorchMultigrid(coarse_size=8, maxiter=its - 1), tol=tol)
        true1 = (b - op.matvec(z1)).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)
        assert (true1 > tol).any()
    z0, info0 = solve(op, torch.zeros_like(b), solver=MG)            # b = 0: no iteration, z = 0
    assert not z0.any() and int(info0.iterations.max()) == 0


def test_cpu_solves_of_small_grids_run_on_one_thread_and_restore_the_count(monkeypatch):
    """The fast backend sets up and solves a small CPU system on one thread (cheaper than waking
    OpenMP threads for each of its small kernels), a larger one with the caller's count (or at
    most ``cpu_threads``), restores the count afterwards (also in the autograd backward), gives
    the same solution to float rounding, and never calls ``torch.set_num_threads`` (after which
    torch 2.13's batched ``linalg.solve`` fails for the rest of the process)."""
    from suits import threads
    from suits.solver import multigrid, operator

    current = torch.get_num_threads()
    if current < 2 or threads._omp() is None:
        pytest.skip("needs at least 2 torch threads on an OpenMP runtime")
    seen = []
    real = operator.block_apply

    def spy(M, z):
        seen.append(torch.get_num_threads())
        return real(M, z)

    def no_global_change(n):
        raise AssertionError("suits must not call torch.set_num_threads")

    monkeypatch.setattr(operator, "block_apply", spy)
    monkeypatch.setattr(multigrid, "block_apply", spy)
    monkeypatch.setattr(torch, "set_num_threads", no_global_change)
    grid = (6, 5, 7)
    M = random_blocks(1, grid)
    b = torch.randn(1, 3, *grid, dtype=torch.float64)
    results = {}
    for name, mg, expected in (("auto", TorchMultigrid(coarse_size=8), 1),
                               ("large", TorchMultigrid(coarse_size=8), current),
                               ("unchanged", TorchMultigrid(coarse_size=8, cpu_threads=0), current),
                               ("more", TorchMultigrid(coarse_size=8, cpu_threads=current + 1), current)):
        if name == "large":
            mg.SINGLE_THREAD_VOXELS = 100                               # the grid has 210 voxels
        seen.clear()
        bb = b.clone().requires_grad_(True)
        z = lse_solve(M, bb, lam=1.0, solver=mg, tol=1e-10)
        z.square().sum().backward()
        assert seen and set(seen) == {expected}, (name, set(seen))
        assert torch.get_num_threads() == current, name
        results[name] = (z.detach(), bb.grad)
    for name, (z, g) in results.items():
        assert torch.allclose(z, results["unchanged"][0], rtol=0, atol=1e-10), name
        assert torch.allclose(g, results["unchanged"][1], rtol=0, atol=1e-10), name
    with pytest.raises(ValueError, match="cpu_threads"):
        TorchMultigrid(cpu_threads=-1)


def test_batch_elements_are_independent_systems():
    grid = (8, 6, 7)
    M = random_blocks(3, grid)
    b = torch.randn(3, 3, *grid, dtype=torch.float64)
    z, _ = solve(M, b, lam=1.0, solver=MG, tol=1e-10)
    for i in range(3):
        zi, _ = solve(M[i:i + 1], b[i:i + 1], lam=1.0, solver=MG, tol=1e-10)
        assert torch.allclose(z[i:i + 1], zi, atol=1e-8)


def test_semidefinite_system_without_shift_is_still_solved():
    """M = 0 and shift 0: A = λL is singular; a consistent b (zero mean) is still solved."""
    grid = (7, 6, 5)
    u = torch.randn(1, 3, *grid, dtype=torch.float64)
    b = -2.0 * grid_laplacian(u)
    z, info = solve(torch.zeros(1, 3, 3, *grid, dtype=torch.float64), b, lam=2.0, solver=MG, tol=1e-10)
    expected = -(u - u.mean((2, 3, 4), keepdim=True))
    assert torch.allclose(z - z.mean((2, 3, 4), keepdim=True), expected, atol=1e-7)


def test_unknown_solver_and_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="unknown solver"):
        get_solver("umfpack")
    with pytest.raises(ValueError, match=r"b must be"):
        lse_solve(torch.zeros(1, 3, 3, 2, 2, 2), torch.zeros(1, 3, 2, 2, 3), 1.0)
    with pytest.raises(TypeError, match="lam"):
        lse_solve(torch.zeros(1, 3, 3, 2, 2, 2), torch.zeros(1, 3, 2, 2, 2))


def test_maxiter_hit_warns():
    grid = (8, 8, 8)
    M = random_blocks(1, grid)
    b = torch.randn(1, 3, *grid, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="maxiter=1"):
        lse_solve(M, b, 1.0, solver=MG, tol=1e-12, maxiter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lse_solve(M, b, 1.0, solver=MG, tol=1e-6)


# ----------------------------------------------------------------------------- autograd layer

def _sym(S: torch.Tensor) -> torch.Tensor:
    return 0.5 * (S + S.transpose(1, 2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grad_A", [False, True])
def test_layer_gradient_equals_dense_solve(backend, grad_A):
    grid = (4, 3, 5)
    lam, shift = 1.5, 1e-3
    M0 = random_blocks(2, grid, scale=0.7)
    b0 = torch.randn(2, 3, *grid, dtype=torch.float64)
    w = torch.randn(2, 3, *grid, dtype=torch.float64)

    M = M0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    z = lse_solve(M, b, lam, solver=backend, tol=1e-12, grad_A=grad_A, shift=shift)
    (z * w).sum().backward()

    Md = M0.clone().requires_grad_(True)
    bd = b0.clone().requires_grad_(True)
    A = dense_A(Md if grad_A else Md.detach(), lam, shift)
    zd = torch.linalg.solve(A, bd.reshape(2, -1)).reshape(b0.shape)
    (zd * w).sum().backward()

    assert torch.allclose(z, zd, atol=1e-9)
    assert torch.allclose(b.grad, bd.grad, atol=1e-9)
    if grad_A:
        assert torch.allclose(M.grad, Md.grad, atol=1e-9)
        assert M.grad.abs().max() > 1e-3
    else:
        assert M.grad is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_lse_solve(backend):
    grid = (3, 4, 2)
    S = random_blocks(1, grid, scale=0.5).requires_grad_(True)
    b = torch.randn(1, 3, *grid, dtype=torch.float64, requires_grad=True)
    # perturb M only symmetrically (the solver's contract), through S -> (S + S^T)/2
    assert torch.autograd.gradcheck(
        lambda S, b: lse_solve(_sym(S), b, 2.0, solver=backend, tol=1e-13, grad_A=True),
        (S, b), atol=1e-6, rtol=1e-5)
