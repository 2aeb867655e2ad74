"""suits.norm.instance_norm_relu: equal to relu(instance_norm(...)) in values and gradients."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from suits.norm import InstanceNormReLU3d, instance_norm_relu

FORMATS = [torch.contiguous_format, torch.channels_last_3d]


def _reference(x, w, b, eps=1e-5):
    return torch.relu(F.instance_norm(x, weight=w, bias=b, eps=eps))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("affine", [True, False])
def test_values_and_gradcheck(fmt, affine):
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 3, 4, 3, 3, dtype=torch.float64, generator=g) * 2 + 1)
    x = x.contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(3, dtype=torch.float64, generator=g).requires_grad_() if affine else None
    b = torch.randn(3, dtype=torch.float64, generator=g).requires_grad_() if affine else None
    y = instance_norm_relu(x, w, b)
    assert y.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(y, _reference(x, w, b), rtol=1e-12, atol=1e-12)
    assert (y == 0).any() and (y > 0).any()        # the ReLU mask is exercised
    inputs = (x, w, b) if affine else (x,)
    assert torch.autograd.gradcheck(lambda *t: instance_norm_relu(*t), inputs)


def test_gradients_equal_reference_in_float32_at_a_large_grid():
    """float32, 40k voxels per channel, a channel mean 20x its std: same values and gradients as
    torch's instance norm to float rounding (a one-pass E[x^2] - E[x]^2 variance fails this)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 40, 32, 32, generator=g)
    x[:, 0] = x[:, 0] * 0.5 + 10.0
    x = x.contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    w = torch.rand(4, generator=g).add_(0.5).requires_grad_()
    b = torch.randn(4, generator=g).requires_grad_()
    gy = torch.randn(x.shape, generator=g)
    y = instance_norm_relu(x, w, b)
    ref = _reference(x, w, b)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
    got = torch.autograd.grad((y * gy).sum(), (x, w, b))
    exp = torch.autograd.grad((ref * gy).sum(), (x, w, b))
    for a, e in zip(got, exp):
        torch.testing.assert_close(a, e, rtol=1e-3, atol=1e-4)


def test_inplace_only_without_autograd():
    x = torch.randn(1, 2, 4, 4, 4)
    keep = x.clone()
    y = instance_norm_relu(x)
    torch.testing.assert_close(x, keep, rtol=0, atol=0)       # not in place by default
    with torch.no_grad():
        y2 = instance_norm_relu(x, inplace=True)
    assert y2.data_ptr() == x.data_ptr()
    torch.testing.assert_close(y2, y)
    xr = keep.clone().requires_grad_()
    y3 = instance_norm_relu(xr, inplace=True)                  # recorded: never in place
    assert y3.data_ptr() != xr.data_ptr()
    torch.testing.assert_close(xr.detach(), keep, rtol=0, atol=0)


def test_module_matches_nn_instance_norm_state_dict():
    m = InstanceNormReLU3d(3)
    ref = torch.nn.InstanceNorm3d(3, affine=True)
    assert list(m.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    with torch.no_grad():
        m.weight.uniform_(0.5, 2)
        m.bias.normal_()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 6, 5, 4)
    torch.testing.assert_close(m(x), torch.relu(ref(x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected \(B, 3, D, H, W\)"):
        m(torch.randn(1, 2, 4, 4, 4))
