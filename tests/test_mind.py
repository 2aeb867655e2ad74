"""suits.mind.mind_ssc against a direct per-voxel implementation, and its invariances."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from suits.mind import mind_ssc, ssc_pairs


def _direct_mind(vol: np.ndarray, radius: int, dilation: int) -> np.ndarray:
    """Slow reference: per voxel, per pair, average the squared difference over the box, with
    replicate padding as index clamping (box positions clamped, then the shifted positions)."""
    D, H, W = vol.shape
    hi = np.array([D - 1, H - 1, W - 1])
    box = np.array(list(itertools.product(range(-radius, radius + 1), repeat=3)))
    pairs = [(np.array(p) * dilation, np.array(q) * dilation) for p, q in ssc_pairs()]
    ssd = np.zeros((12, D, H, W))
    for x in itertools.product(range(D), range(H), range(W)):
        y = np.clip(np.array(x) + box, 0, hi)
        for c, (p, q) in enumerate(pairs):
            a = np.clip(y + p, 0, hi)
            b = np.clip(y + q, 0, hi)
            ssd[(c, *x)] = np.mean((vol[tuple(a.T)] - vol[tuple(b.T)]) ** 2)
    ssd -= ssd.min(axis=0, keepdims=True)
    var = ssd.mean(axis=0, keepdims=True)
    m = var.mean()
    var = np.clip(var, 0.001 * m, 1000 * m)
    return np.exp(-ssd / var)


def test_pairs_are_the_twelve_cross_axis_pairs():
    pairs = ssc_pairs()
    assert len(pairs) == 12
    seen = {frozenset((p, q)) for p, q in pairs}
    assert len(seen) == 12
    for p, q in pairs:
        assert sum((a - b) ** 2 for a, b in zip(p, q)) == 2


@pytest.mark.parametrize("radius,dilation", [(1, 2), (2, 2)])
def test_matches_direct_loop(radius, dilation):
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(10, 9, 8))
    vol[3:7, 2:6, 2:5] += 3.0
    ref = _direct_mind(vol, radius, dilation)
    out = mind_ssc(torch.from_numpy(vol)[None, None].float(), radius, dilation)
    assert out.shape == (1, 12, 10, 9, 8)
    np.testing.assert_allclose(out[0].double().numpy(), ref, rtol=1e-4, atol=1e-5)


def test_range_and_channel_max_is_one():
    img = torch.randn(2, 1, 8, 7, 6)
    out = mind_ssc(img)
    assert out.shape == (2, 12, 8, 7, 6)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    torch.testing.assert_close(out.max(dim=1).values, torch.ones(2, 8, 7, 6))
    assert float(out.min()) < 0.9  # not trivially constant


def test_affine_intensity_invariance():
    img = torch.randn(1, 1, 9, 9, 9, dtype=torch.float64)
    a = mind_ssc(img)
    b = mind_ssc(3.7 * img - 12.0)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
    c = mind_ssc(-img)  # a < 0 is not promised, but squared differences make it invariant too
    torch.testing.assert_close(a, c)


def test_batch_elements_independent():
    x = torch.randn(1, 1, 8, 8, 8)
    y = 10 * torch.randn(1, 1, 8, 8, 8)
    both = mind_ssc(torch.cat([x, y]))
    torch.testing.assert_close(both[:1], mind_ssc(x))
    torch.testing.assert_close(both[1:], mind_ssc(y))


def test_constant_image_is_finite():
    out = mind_ssc(torch.ones(1, 1, 6, 6, 6))
    assert torch.isfinite(out).all()


def test_rejects_bad_shape():
    with pytest.raises(ValueError):
        mind_ssc(torch.zeros(6, 6, 6))
