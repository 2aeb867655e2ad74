"""ANTs SyN (mutual information) behind the field contract: a known translation comes back in
fixed-grid voxels along i, j, k with the contract's sign, also for an affine with permuted,
flipped and anisotropic axes (the LPS/direction conversion) and for a moving image on another
grid; the result repeats exactly with one thread."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, shift

pytest.importorskip("ants")

from baselines.ants_syn import register  # noqa: E402
from baselines.itk_space import itk_geometry  # noqa: E402
from suits.warp import warp  # noqa: E402

SHAPE = (40, 36, 32)
INNER = (slice(8, 32), slice(8, 28), slice(8, 24))
# i -> A, j -> S, k -> L: permuted axes, a flip, anisotropic voxels (2, 2, 2.5 mm)
OBLIQUE = np.array([[0.0, 0.0, -2.5, 30.0], [2.0, 0.0, 0.0, -10.0], [0.0, 2.0, 0.0, 5.0],
                    [0.0, 0.0, 0.0, 1.0]])
CANONICAL = np.diag([2.0, 2.0, 2.0, 1.0])


def texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = gaussian_filter(rng.standard_normal(SHAPE), 2.5)
    return ((f - f.mean()) / f.std()).astype(np.float32)


def inner_mean(u: torch.Tensor) -> np.ndarray:
    return u[0][(slice(None), *INNER)].reshape(3, -1).mean(1).numpy()


@pytest.mark.parametrize("affine", [CANONICAL, OBLIQUE], ids=["canonical", "oblique"])
def test_known_translation_is_recovered_in_voxels_ijk(affine):
    f = texture()
    t = np.array([2.0, -1.5, 1.0])
    m = -shift(f, t, order=3, mode="nearest").astype(np.float32)   # inverted contrast
    u = register(f, m, affine, affine, threads=1)
    assert u.shape == (1, 3, *SHAPE) and u.dtype == torch.float32
    np.testing.assert_allclose(inner_mean(u), t, atol=0.2)
    warped = warp(torch.from_numpy(-m)[None, None], u)[0, 0].numpy()
    assert np.abs(warped - f)[INNER].mean() < 0.25 * np.abs(-m - f)[INNER].mean()


def test_moving_image_on_another_grid():
    """The moving array is the fixed one, its grid moved by s voxels: resampled onto the fixed
    grid it is the fixed image translated by s, so u = s."""
    f = texture(2)
    s = np.array([1.0, 2.0, -1.0])
    moved = OBLIQUE.copy()
    moved[:3, 3] += OBLIQUE[:3, :3] @ s
    u = register(f, f, OBLIQUE, moved, threads=1)
    np.testing.assert_allclose(inner_mean(u), s, atol=0.2)


def test_one_thread_repeats_exactly():
    f = texture(3)
    m = shift(f, (1.0, 0.0, -1.0), order=3, mode="nearest").astype(np.float32)
    a = register(f, m, CANONICAL, threads=1, reg_iterations=[10, 5])
    b = register(f, m, CANONICAL, threads=1, reg_iterations=[10, 5])
    assert torch.equal(a, b)


def test_itk_geometry_of_the_oblique_affine():
    origin, spacing, direction = itk_geometry(OBLIQUE)
    assert spacing == (2.0, 2.0, 2.5)
    np.testing.assert_allclose(direction, [[0, 0, 1], [-1, 0, 0], [0, 1, 0]])
    assert origin == (-30.0, 10.0, 5.0)


def test_bad_settings_fail_before_the_work():
    f = texture()
    with pytest.raises(ValueError, match="unknown ANTs setting"):
        register(f, f, CANONICAL, iterations=[10])
    with pytest.raises(ValueError, match="reg_iterations"):
        register(f, f, CANONICAL, reg_iterations=[0, 0])
