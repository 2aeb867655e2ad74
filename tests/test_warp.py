"""suits.warp: warping convention, label warping, field resizing and upsampling."""
from __future__ import annotations

import pytest
import torch

from suits.warp import (box_filter, downsample_field, identity_grid, one_hot, resize_field,
                        upsample_field, upsample_field_strided, warp, warp_labels)


def test_identity_grid_values():
    g = identity_grid((3, 4, 5), device="cpu")
    assert g.shape == (1, 3, 3, 4, 5)
    assert g[0, :, 2, 1, 4].tolist() == [2.0, 1.0, 4.0]


def test_zero_field_is_identity():
    img = torch.randn(2, 3, 7, 6, 5)
    out = warp(img, torch.zeros(2, 3, 7, 6, 5))
    torch.testing.assert_close(out, img, rtol=0, atol=1e-5)


@pytest.mark.parametrize("axis,shift", [(0, 2), (1, -1), (2, 3)])
def test_integer_shift_equals_roll_in_interior(axis, shift):
    img = torch.randn(1, 1, 9, 10, 11)
    u = torch.zeros(1, 3, 9, 10, 11)
    u[:, axis] = shift
    out = warp(img, u)
    # warped(x) = img(x + s)  <=>  roll by -s
    ref = torch.roll(img, shifts=-shift, dims=2 + axis)
    n = img.shape[2 + axis]
    keep = slice(0, n - shift) if shift > 0 else slice(-shift, n)
    idx = [slice(None)] * 5
    idx[2 + axis] = keep
    torch.testing.assert_close(out[tuple(idx)], ref[tuple(idx)], rtol=0, atol=1e-5)


def test_subvoxel_shift_of_linear_ramp_is_exact():
    D, H, W = 8, 9, 10
    g = identity_grid((D, H, W))
    img = (0.5 * g[:, 0:1] - 2.0 * g[:, 1:2] + 1.5 * g[:, 2:3]).float()
    s = torch.tensor([0.3, -0.7, 0.45]).view(1, 3, 1, 1, 1)
    u = s.expand(1, 3, D, H, W).clone()
    out = warp(img, u)
    expected = img + (0.5 * 0.3 - 2.0 * -0.7 + 1.5 * 0.45)
    # interior only (the shifted position must stay inside for border padding not to act)
    torch.testing.assert_close(out[..., 1:-1, 1:-1, 1:-1], expected[..., 1:-1, 1:-1, 1:-1],
                               rtol=0, atol=1e-4)


def test_border_padding():
    img = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(1, 1, 5, 2, 2).contiguous()
    u = torch.zeros(1, 3, 5, 2, 2)
    u[:, 0] = 10.0
    assert torch.allclose(warp(img, u), torch.full_like(img, 4.0))


def test_batch_broadcast_of_image():
    img = torch.randn(1, 2, 5, 5, 5)
    u = torch.zeros(3, 3, 5, 5, 5)
    assert warp(img, u).shape == (3, 2, 5, 5, 5)


def test_gradients_flow_to_image_and_field():
    img = torch.randn(1, 1, 6, 6, 6, requires_grad=True)
    u = (0.3 * torch.randn(1, 3, 6, 6, 6)).requires_grad_()
    warp(img, u).square().sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    assert u.grad is not None and u.grad.abs().sum() > 0


def test_one_hot_and_warp_labels_zero_field():
    lab = torch.randint(0, 4, (2, 1, 5, 6, 7))
    oh = one_hot(lab, 4)
    assert oh.shape == (2, 4, 5, 6, 7) and oh.dtype == torch.float32
    assert torch.equal(oh.argmax(1), lab[:, 0])
    w = warp_labels(lab, torch.zeros(2, 3, 5, 6, 7), 4)
    torch.testing.assert_close(w, oh, rtol=0, atol=1e-6)
    w2 = warp_labels(lab[:, 0], torch.zeros(2, 3, 5, 6, 7), 4)  # (B, D, H, W) input
    torch.testing.assert_close(w2, oh, rtol=0, atol=1e-6)


def test_warp_labels_probabilities_sum_to_one():
    lab = torch.randint(0, 3, (1, 1, 6, 6, 6))
    w = warp_labels(lab, 0.7 * torch.randn(1, 3, 6, 6, 6), 3)
    torch.testing.assert_close(w.sum(1), torch.ones(1, 6, 6, 6))


def test_one_hot_rejects_out_of_range():
    with pytest.raises(ValueError):
        one_hot(torch.full((1, 1, 2, 2, 2), 5), 3)


def test_resize_field_constant_scales_by_ratio():
    u = torch.ones(1, 3, 5, 9, 17) * torch.tensor([1.0, 2.0, -3.0]).view(1, 3, 1, 1, 1)
    out = resize_field(u, (9, 17, 33))
    assert out.shape == (1, 3, 9, 17, 33)
    expected = torch.tensor([1.0 * 8 / 4, 2.0 * 16 / 8, -3.0 * 32 / 16]).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(out, expected.expand_as(out))


def test_resize_field_of_an_affine_map_is_consistent():
    # u(x) = 0.1 * x (voxels of the small grid): resized, it must still describe the same
    # physical map, i.e. 0.1 * x' in voxels of the large grid (align_corners)
    small = identity_grid((5, 5, 5)) * 0.1
    big = resize_field(small, (9, 9, 9))
    torch.testing.assert_close(big, identity_grid((9, 9, 9)) * 0.1, rtol=0, atol=1e-5)


def test_downsample_then_upsample_with_factor_is_exact_on_strided_voxels():
    D, H, W = 13, 12, 9
    u = identity_grid((D, H, W)) * 0.05 + 0.2  # affine field: trilinear reproduces it
    f = 4
    du = downsample_field(u, f)
    assert du.shape[-3:] == (4, 3, 3)  # ceil(n / 4)
    up = upsample_field(du, (D, H, W), smooth=0, factor=f)
    torch.testing.assert_close(up[..., ::f, ::f, ::f], u[..., ::f, ::f, ::f], rtol=0, atol=1e-5)
    # inside the span of the feature grid the affine field is reproduced everywhere
    torch.testing.assert_close(up[..., :13, :9, :9], u[..., :13, :9, :9], rtol=0, atol=1e-5)


def test_upsample_field_constant_and_smoothing():
    du = torch.ones(1, 3, 4, 4, 4)
    up = upsample_field(du, (16, 16, 16), smooth=5, factor=4)
    torch.testing.assert_close(up, torch.full((1, 3, 16, 16, 16), 4.0))
    rough = torch.zeros(1, 3, 4, 4, 4)
    rough[..., 2, 2, 2] = 1.0
    a = upsample_field(rough, (16, 16, 16), smooth=1, factor=4)
    b = upsample_field(rough, (16, 16, 16), smooth=5, factor=4)
    assert b.max() < a.max()                        # the box filter smooths
    torch.testing.assert_close(a.sum(), b.sum(), rtol=0.05, atol=0)  # ~mass preserving inside
    c = upsample_field(rough, (7, 7, 7), smooth=0)  # align_corners variant
    assert c.shape == (1, 3, 7, 7, 7)


def _upsample_reference(du, shape, smooth, factor):
    """The straightforward form: grid_sample (trilinear, border) at x/f or the align_corners
    resize, then a replicate-padded smooth**3 average pool."""
    import torch.nn.functional as F

    from suits.warp import _normalised_grid

    if factor is None:
        up = resize_field(du, shape)
    else:
        coords = identity_grid(shape, dtype=du.dtype) / factor
        grid = _normalised_grid(coords.expand(du.shape[0], -1, -1, -1, -1), du.shape[-3:])
        up = F.grid_sample(du, grid, mode="bilinear", padding_mode="border", align_corners=True) * factor
    if smooth > 1:
        r = smooth // 2
        up = F.avg_pool3d(F.pad(up, (r,) * 6, mode="replicate"), smooth, stride=1)
    return up


@pytest.mark.parametrize("small, shape, factor", [
    ((4, 3, 3), (13, 12, 9), 4),        # n = (m-1)f+1 .. m f: replicate past the last voxel
    ((9, 12, 12), (34, 47, 48), 4),     # three different remainders n - (m-1)f - 1
    ((5, 4, 1), (10, 7, 2), 2),         # a 1-voxel axis
    ((6, 5, 4), (6, 5, 4), 1),
    ((4, 5, 3), (9, 13, 7), None),      # align_corners resize
    ((7, 1, 4), (7, 3, 10), None),
])
@pytest.mark.parametrize("smooth", [0, 3, 5])
def test_upsample_field_equals_direct_form(small, shape, factor, smooth):
    g = torch.Generator().manual_seed(1)
    du = torch.randn(2, 3, *small, generator=g, dtype=torch.float64).requires_grad_()
    fast = upsample_field(du, shape, smooth=smooth, factor=factor)
    ref = _upsample_reference(du, shape, smooth, factor)
    assert fast.shape == (2, 3, *shape) and fast.dtype == torch.float64
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad((fast * w).sum(), du)
    (gb,) = torch.autograd.grad((ref * w).sum(), du)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10)
    # float32 agrees to float tolerance as well
    f32 = upsample_field(du.detach().float(), shape, smooth=smooth, factor=factor)
    torch.testing.assert_close(f32, ref.detach().float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, factor", [((9, 13, 7), 1), ((18, 23, 13), 2), ((33, 48, 25), 4)])
@pytest.mark.parametrize("smooth", [1, 5])
def test_upsample_field_strided_is_the_round_trip_on_the_feature_grid(shape, factor, smooth):
    """The feature-grid update after its round trip through the image grid, evaluated only on
    the feature grid, equals the round trip itself (values and gradient)."""
    g = torch.Generator().manual_seed(2)
    small = tuple(-(-n // factor) for n in shape)
    du = torch.randn(2, 3, *small, generator=g, dtype=torch.float64).requires_grad_()
    fast = upsample_field_strided(du, shape, factor, smooth=smooth)
    ref = downsample_field(upsample_field(du, shape, smooth=smooth, factor=factor), factor)
    assert fast.shape == du.shape
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad((fast * w).sum(), du)
    (gb,) = torch.autograd.grad((ref * w).sum(), du)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="feature grid"):
        upsample_field_strided(du, tuple(n + factor for n in shape), factor, smooth=smooth)


@pytest.mark.parametrize("size", [3, 5])
def test_separable_box_filter_equals_cubic_average(size):
    import torch.nn.functional as F

    x = torch.randn(2, 3, 9, 6, 11, dtype=torch.float64)
    r = size // 2
    ref = F.avg_pool3d(F.pad(x, (r,) * 6, mode="replicate"), size, stride=1)
    torch.testing.assert_close(box_filter(x, size), ref, rtol=1e-12, atol=1e-12)
    assert box_filter(x, 1) is x


def test_box_filter_rejects_even():
    with pytest.raises(ValueError):
        box_filter(torch.zeros(1, 1, 4, 4, 4), 4)


def test_rejects_bad_field():
    with pytest.raises(ValueError):
        warp(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 2, 4, 4, 4))


@pytest.mark.parametrize("shape", [(17, 14, 21), (4, 1, 9), (13, 12, 16)])
@pytest.mark.parametrize("size, f", [(5, 4), (3, 4), (3, 2), (7, 4), (1, 4), (5, 1)])
def test_box_filter_strided_equals_cubic_average_sampled(shape, size, f):
    import torch.nn.functional as F

    from suits.warp import box_filter_strided

    x = torch.rand(2, 3, *shape, dtype=torch.float64, requires_grad=True)
    r = size // 2
    ref = F.avg_pool3d(F.pad(x, (r,) * 6, mode="replicate"), size, stride=1)[..., ::f, ::f, ::f]
    out = box_filter_strided(x, size, f)
    assert out.shape == ref.shape == (2, 3, *(-(-n // f) for n in shape))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(out.shape, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad((out * w).sum(), x)[0],
                               torch.autograd.grad((ref * w).sum(), x)[0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        box_filter_strided(x, 4, f)


@pytest.mark.parametrize("shape", [(7, 9, 11), (1, 6, 5), (5, 1, 4)])
def test_warped_label_probability_equals_target_channel_of_warp_labels(shape):
    """The guidance loss's probability: the target channel of the trilinearly warped one-hot
    map, values and gradient (float64), including points beyond the border (clamped)."""
    from suits.warp import warped_label_probability

    g = torch.Generator().manual_seed(3)
    lab = torch.randint(0, 4, (1, 1, *shape), generator=g)
    tgt = torch.randint(0, 4, (1, 1, *shape), generator=g)
    u = (torch.randn(1, 3, *shape, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    full = warp_labels(lab, u, 4).gather(1, tgt).squeeze(1)
    fast = warped_label_probability(lab, u, tgt)
    assert fast.shape == (1, *shape)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-12)
    ga, = torch.autograd.grad(torch.log(full + 1e-3).sum(), u)
    gb, = torch.autograd.grad(torch.log(fast + 1e-3).sum(), u)
    torch.testing.assert_close(gb, ga, rtol=1e-9, atol=1e-9)
    assert ga.abs().max() > 1  # the comparison is not between two zero gradients
    # a batch of fields against one label map (broadcast), and a 4-D target
    u2 = torch.randn(2, 3, *shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(warped_label_probability(lab, u2, tgt[:, 0]),
                               warp_labels(lab, u2, 4).gather(1, tgt.expand(2, -1, -1, -1, -1)).squeeze(1))
    # one field against a batch of two label maps (the other broadcast)
    lab2 = torch.cat([lab, torch.randint(0, 4, (1, 1, *shape), generator=g)])
    full2 = warp_labels(lab2, u.detach(), 4).gather(1, tgt.expand(2, -1, -1, -1, -1)).squeeze(1)
    torch.testing.assert_close(warped_label_probability(lab2, u.detach(), tgt), full2)
    # float index maps are rounded like one_hot does
    torch.testing.assert_close(warped_label_probability(lab.double() - 1e-7, u.detach(), tgt),
                               fast.detach())
    with pytest.raises(ValueError, match="one grid"):
        warped_label_probability(lab, u, tgt[..., :-1])
    with pytest.raises(ValueError, match="index map"):
        warped_label_probability(one_hot(lab, 4), u, tgt)
    with pytest.raises(ValueError, match="batch sizes"):
        warped_label_probability(lab2, u2.detach(), torch.cat([tgt] * 3))
