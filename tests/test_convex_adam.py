"""ConvexAdam (MIND-SSC) behind the field contract: a known translation comes back in voxels
along i, j, k with the contract's sign, and warping the moving image with the field matches
the fixed one; settings and grids are checked before any work."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, shift

pytest.importorskip("convexAdam")

from baselines.convex_adam import DEFAULTS, register  # noqa: E402
from suits.warp import warp  # noqa: E402

SHAPE = (48, 40, 40)
INNER = (slice(10, 38), slice(10, 30), slice(10, 30))


def texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = gaussian_filter(rng.standard_normal(SHAPE), 2.5)
    return ((f - f.mean()) / f.std()).astype(np.float32)


@pytest.mark.parametrize("t", [(3.0, -2.0, 1.5),
                               pytest.param((-1.0, 2.5, -3.0), marks=pytest.mark.slow)])
def test_known_translation_is_recovered_in_voxels_ijk(t):
    """moving(y) = -fixed(y - t) (inverted contrast), so u = +t along i, j, k: the mean in the
    interior within 0.3 voxels (the Adam stage's diffusion penalty and 2-voxel grid), and the
    moving image warped by u matches the fixed one."""
    f = texture()
    m = -shift(f, t, order=3, mode="nearest").astype(np.float32)
    u = register(torch.from_numpy(f)[None, None], torch.from_numpy(m)[None, None])
    assert u.shape == (1, 3, *SHAPE) and u.dtype == torch.float32
    inner = u[0][(slice(None), *INNER)].reshape(3, -1)
    np.testing.assert_allclose(inner.mean(1).numpy(), t, atol=0.3)
    assert float(inner.std(1).max()) < 0.3
    warped = warp(torch.from_numpy(-m)[None, None], u)[0, 0].numpy()
    before = np.abs(-m - f)[INNER].mean()
    after = np.abs(warped - f)[INNER].mean()
    assert after < 0.15 * before, (before, after)


@pytest.mark.slow
def test_identical_images_give_a_near_zero_field():
    f = texture(1)
    u = register(f, f)
    assert float(u[0][(slice(None), *INNER)].abs().mean()) < 0.05


def test_the_import_leaves_the_warning_filters_alone():
    import sys

    sys.modules.pop("convexAdam.convex_adam_MIND", None)
    before = list(warnings.filters)
    from baselines.convex_adam import _convex_adam_pt

    _convex_adam_pt()
    assert list(warnings.filters) == before


def test_bad_settings_and_grids_fail_before_the_work():
    f = texture()
    with pytest.raises(ValueError, match="unknown ConvexAdam setting"):
        register(f, f, grid_spacing=4)
    with pytest.raises(ValueError, match="one grid"):
        register(f, f[:-2])
    with pytest.raises(ValueError, match="grid_sp"):
        register(f[:8, :8, :8], f[:8, :8, :8], grid_sp=6)


def test_defaults_are_the_packages_own():
    import inspect

    from convexAdam.convex_adam_MIND import convex_adam_pt

    params = inspect.signature(convex_adam_pt).parameters
    for key, value in DEFAULTS.items():
        assert params[key].default == value, key
