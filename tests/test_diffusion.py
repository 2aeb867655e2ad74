"""suits.diffusion: spatial gradients, the Brox system (Eq. 4-6) and the differentiable Gauss-Newton step."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from suits.solver import TorchMultigrid
from suits.diffusion import brox_system, gauss_newton_step, laplacian, spatial_gradient

MG = TorchMultigrid(coarse_size=8)        # coarsens even the tiny test grids
BACKENDS = [MG, "pyamg"]
GRID = (5, 6, 4)


def smooth_rep(B, C, grid, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(B, C, *grid, dtype=dtype, generator=g)
    return torch.nn.functional.avg_pool3d(r, 3, 1, 1, count_include_pad=False)


def linearised_energy(r_fix, r_mov, u, z, lam):
    """Eq. (4) linearised at u (written independently): 1/2 Σ_c (∇R_mov,c · z + R_mov,c - R_fix,c)^2
    + λ/2 Σ_edges |(u + z)(v) - (u + z)(n)|^2 over the 6-neighbour edges."""
    g = torch.stack(torch.gradient(r_mov, dim=(2, 3, 4), edge_order=1), 2)   # (B, C, 3, ...)
    data = 0.5 * (((g * z.unsqueeze(1)).sum(2) + r_mov - r_fix) ** 2).sum()
    w = u + z
    reg = sum((w.diff(dim=d) ** 2).sum() for d in (2, 3, 4))
    return data + 0.5 * lam * reg


def test_spatial_gradient_is_numpy_gradient():
    r = torch.randn(2, 3, 5, 2, 4, dtype=torch.float64)
    g = spatial_gradient(r)
    assert g.shape == (2, 3, 3, 5, 2, 4)
    for a in range(3):
        ref = np.gradient(r.numpy(), axis=2 + a, edge_order=1)
        assert np.allclose(g[:, :, a].numpy(), ref)
    ramp = torch.arange(6.0).view(1, 1, 1, 6, 1).expand(1, 1, 3, 6, 4)       # along H
    assert torch.equal(spatial_gradient(ramp)[0, 0], torch.stack([torch.zeros(3, 6, 4), torch.ones(3, 6, 4),
                                                                 torch.zeros(3, 6, 4)]))
    assert not spatial_gradient(torch.randn(1, 1, 1, 3, 3))[:, :, 0].any()   # one voxel thick: 0


def test_laplacian_is_minus_the_paper_stencil_with_neumann_rows():
    u = torch.randn(1, 3, 5, 6, 4, dtype=torch.float64)
    Lu = laplacian(u)
    v = u[0, 1]
    assert torch.isclose(Lu[0, 1, 2, 3, 1], 6 * v[2, 3, 1] - v[1, 3, 1] - v[3, 3, 1] - v[2, 2, 1]
                         - v[2, 4, 1] - v[2, 3, 0] - v[2, 3, 2])
    assert torch.isclose(Lu[0, 1, 0, 0, 0], 3 * v[0, 0, 0] - v[1, 0, 0] - v[0, 1, 0] - v[0, 0, 1])
    assert torch.allclose(laplacian(torch.full_like(u, 3.0)), torch.zeros_like(u))
    w = torch.randn_like(u)
    assert torch.isclose((laplacian(u) * w).sum(), (u * laplacian(w)).sum())


def test_brox_system_is_the_gauss_newton_system_of_eq4():
    """-b is the gradient of the linearised energy at z = 0 and A z its Hessian-vector product."""
    r_fix, r_mov = smooth_rep(2, 3, GRID, seed=1), smooth_rep(2, 3, GRID, seed=2)
    u = torch.randn(2, 3, *GRID, dtype=torch.float64)
    lam = 2.5
    M, b = brox_system(r_fix, r_mov, u, lam)
    assert M.shape == (2, 3, 3, *GRID) and b.shape == (2, 3, *GRID)
    assert torch.equal(M, M.transpose(1, 2))                                 # exactly symmetric
    z0 = torch.zeros_like(u, requires_grad=True)
    (grad0,) = torch.autograd.grad(linearised_energy(r_fix, r_mov, u, z0, lam), z0)
    assert torch.allclose(-grad0, b, atol=1e-12)
    y = torch.randn_like(u)
    z1 = y.clone().requires_grad_(True)
    (grad1,) = torch.autograd.grad(linearised_energy(r_fix, r_mov, u, z1, lam), z1)
    Az = (M * y.unsqueeze(1)).sum(2) + lam * laplacian(y)
    assert torch.allclose(grad1 - grad0, Az, atol=1e-12)


@pytest.mark.parametrize("backend", [None, MG, "pyamg"])
def test_step_minimises_the_linearised_energy(backend):
    r_fix, r_mov = smooth_rep(1, 4, (7, 6, 8), seed=3), smooth_rep(1, 4, (7, 6, 8), seed=4)
    u = 0.3 * torch.randn(1, 3, 7, 6, 8, dtype=torch.float64)
    du = gauss_newton_step(r_fix, r_mov, u, 1.0, solver=backend, tol=1e-10, eps=0.0)
    z = du.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(linearised_energy(r_fix, r_mov, u, z, 1.0), z)
    assert grad.abs().max() < 1e-8                                             # stationary point
    e_opt = linearised_energy(r_fix, r_mov, u, du, 1.0)
    assert e_opt < linearised_energy(r_fix, r_mov, u, du + 1e-3 * torch.randn_like(du), 1.0)


def test_step_recovers_a_known_shift():
    """moving(x) = fixed(x - s): warped(x) = moving(x + u) matches fixed for u = +s."""
    grid = (16, 16, 16)
    x = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in grid], indexing="ij"))
    s = torch.tensor([0.4, -0.3, 0.2], dtype=torch.float64).view(3, 1, 1, 1)

    def blobs(shift):
        c = torch.tensor([[7.5, 7.5, 7.5], [5.0, 10.0, 9.0]], dtype=torch.float64)
        return torch.stack([torch.exp(-(((x - shift - ci.view(3, 1, 1, 1)) ** 2).sum(0)) / 12.0) for ci in c])[None]

    r_fix, r_mov = blobs(torch.zeros_like(s)), blobs(s)
    u = torch.zeros(1, 3, *grid, dtype=torch.float64)
    for backend in BACKENDS:
        du = gauss_newton_step(r_fix, r_mov, u, 0.05, solver=backend, tol=1e-8)
        centre = du[0, :, 6:10, 6:10, 6:10].mean((1, 2, 3))
        assert torch.allclose(centre, s.view(3), atol=0.08), (backend, centre)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_step_keeps_dtype_and_device_and_backends_agree(dtype):
    r_fix, r_mov = smooth_rep(2, 12, (10, 9, 11), dtype), smooth_rep(2, 12, (10, 9, 11), dtype, seed=5)
    u = torch.randn(2, 3, 10, 9, 11, dtype=dtype)
    du = gauss_newton_step(r_fix, r_mov, u, 10.0)
    assert du.dtype == dtype and du.device == r_fix.device and du.shape == u.shape
    ref = gauss_newton_step(r_fix, r_mov, u, 10.0, solver="pyamg", tol=1e-10)
    err = ((du - ref).norm() / ref.norm()).item()
    assert err < (1e-4 if dtype == torch.float32 else 1e-5)
    # a batch of 1 representation broadcasts against a batch of fields
    du1 = gauss_newton_step(r_fix[:1], r_mov[:1], u, 10.0, tol=1e-10)
    assert du1.shape == u.shape


def test_constant_representations_only_smooth_the_field():
    """No image gradient: M = 0, A = λL (+ the tiny shift), so Δu removes u's non-constant part."""
    u = torch.randn(1, 3, *GRID, dtype=torch.float64)
    r = torch.ones(1, 2, *GRID, dtype=torch.float64)
    for backend in BACKENDS:
        for eps in (0.0, 1e-6):
            du = gauss_newton_step(r, r, u, 10.0, solver=backend, tol=1e-10, eps=eps)
            expected = -(u - u.mean((2, 3, 4), keepdim=True))
            assert torch.allclose(du - du.mean((2, 3, 4), keepdim=True), expected, atol=1e-4), (backend, eps)


def test_shape_errors():
    with pytest.raises(ValueError, match="equal C and grid"):
        brox_system(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 3, 4, 4, 4), 1.0)
    with pytest.raises(ValueError, match="u must be"):
        brox_system(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 3, 4, 4, 5), 1.0)


# ----------------------------------------------------------------------------- gradients

def dense_step(r_fix, r_mov, u, lam, eps, grad_A):
    """Reference: the same system built densely in torch, solved by torch.linalg.solve."""
    B = r_fix.shape[0]
    grid = tuple(r_fix.shape[-3:])
    n = int(np.prod(grid))
    g = torch.stack(torch.gradient(r_mov, dim=(2, 3, 4), edge_order=1), 2)
    M = (g.unsqueeze(3) * g.unsqueeze(2)).sum(1)
    if not grad_A:
        M = M.detach()
    b = -((r_mov - r_fix).unsqueeze(2) * g).sum(1) - lam * laplacian(u)
    eye = torch.eye(n, dtype=u.dtype)
    L = torch.stack([laplacian(eye[i].view(1, 1, *grid)).reshape(-1) for i in range(n)], 1)
    A = torch.kron(torch.eye(3, dtype=u.dtype), lam * L + eps * lam * eye).expand(B, -1, -1)
    blocks = torch.cat([torch.cat([torch.diag_embed(M[:, i, j].reshape(B, n)) for j in range(3)], 2)
                        for i in range(3)], 1)
    return torch.linalg.solve(A + blocks, b.reshape(B, -1)).reshape(u.shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grad_A", [False, True])
def test_step_gradient_equals_dense_reference(backend, grad_A):
    lam, eps = 2.0, 1e-3
    r_fix = smooth_rep(2, 2, GRID, seed=6).requires_grad_(True)
    r_mov = smooth_rep(2, 2, GRID, seed=7).requires_grad_(True)
    u = torch.randn(2, 3, *GRID, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, *GRID, dtype=torch.float64)
    du = gauss_newton_step(r_fix, r_mov, u, lam, solver=backend, tol=1e-12, grad_A=grad_A, eps=eps)
    grads = torch.autograd.grad((du * w).sum(), (r_fix, r_mov, u))
    ref = dense_step(r_fix, r_mov, u, lam, eps, grad_A)
    ref_grads = torch.autograd.grad((ref * w).sum(), (r_fix, r_mov, u))
    assert torch.allclose(du, ref, atol=1e-9)
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, atol=1e-8)
    if not grad_A:   # the matrix path really is left out: it differs from the full gradient
        full = torch.autograd.grad((dense_step(r_fix, r_mov, u, lam, eps, True) * w).sum(), r_mov)[0]
        assert not torch.allclose(grads[1], full, atol=1e-4)


@pytest.mark.parametrize("backend, fast", [(None, False), (MG, True), ("pyamg", False)],
                         ids=["torch-direct", "torch-multigrid-fast", "pyamg"])
@pytest.mark.parametrize("grad_A", [False, True])
def test_gradcheck_gauss_newton_step(backend, fast, grad_A):
    """Float64 gradcheck. The default torch solver treats this tiny grid with its coarsest-level
    direct solve; ``MG`` forces several multigrid levels and CG iterations (checked on random
    Jacobian projections, ``fast_mode``, to keep the time down)."""
    r_fix = smooth_rep(1, 2, GRID, seed=8).requires_grad_(True)
    r_mov = smooth_rep(1, 2, GRID, seed=9).requires_grad_(True)
    u = 0.5 * torch.randn(1, 3, *GRID, dtype=torch.float64)

    if grad_A:   # the full derivative w.r.t. both representations
        inputs = (r_fix, r_mov)
        fn = lambda rf, rm: gauss_newton_step(rf, rm, u, 2.0, solver=backend, tol=1e-13, grad_A=True)  # noqa: E731
    else:        # only the b path: exact w.r.t. r_fix (M does not depend on it)
        inputs = (r_fix,)
        fn = lambda rf: gauss_newton_step(rf, r_mov.detach(), u, 2.0, solver=backend, tol=1e-13)  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-6, rtol=1e-5, fast_mode=fast)


def test_weight_scales_the_data_term_per_voxel():
    """A weight of ones is the unweighted system bit for bit; a weight w gives w·M and
    w·(data part of b); where w = 0 only the diffusion term is left; the step of ones is
    the unweighted step."""
    r_fix, r_mov = smooth_rep(2, 3, GRID, seed=5), smooth_rep(2, 3, GRID, seed=6)
    u = torch.randn(2, 3, *GRID, dtype=torch.float64)
    lam = 1.5
    M, b = brox_system(r_fix, r_mov, u, lam)
    M1, b1 = brox_system(r_fix, r_mov, u, lam, weight=torch.ones(1, 1, *GRID, dtype=torch.float64))
    assert torch.equal(M1, M) and torch.equal(b1, b)
    w = torch.rand(2, 1, *GRID, dtype=torch.float64)
    w[:, :, :2] = 0
    Mw, bw = brox_system(r_fix, r_mov, u, lam, weight=w)
    reg = -lam * laplacian(u)
    assert torch.allclose(Mw, M * w.unsqueeze(1), atol=1e-14)
    assert torch.allclose(bw - reg, (b - reg) * w, atol=1e-14)
    assert not Mw[..., :2, :, :].any()
    assert torch.equal(bw[..., :2, :, :], reg[..., :2, :, :])
    ones = torch.ones(2, 1, *GRID, dtype=torch.float64)
    assert torch.equal(gauss_newton_step(r_fix, r_mov, u, lam, solver=MG, tol=1e-10, weight=ones),
                       gauss_newton_step(r_fix, r_mov, u, lam, solver=MG, tol=1e-10))
    with pytest.raises(ValueError, match="weight must be"):
        brox_system(r_fix, r_mov, u, lam, weight=torch.ones(2, 3, *GRID, dtype=torch.float64))
