"""Comparison methods behind the field contract (``docs/architecture.md``).

- :mod:`baselines.elastix_mi`: SimpleElastix-MI (B-spline, Mattes MI, 4 levels), parameter
  map in :mod:`baselines.elastix_params`; needs ``SimpleITK-SimpleElastix``.
- :mod:`baselines.voxelmorph_mind`: VoxelMorph (voxelmorph 0.3.4 ``VxmPairwise``, dense
  displacement) trained with a MIND-SSC MSE loss; needs ``voxelmorph`` and ``neurite``.

Submodules are imported on demand so that either method works without the other's package.
Every method returns ``u`` ``(1, 3, D, H, W)`` in voxels of the fixed grid (channels
``D, H, W``; ``warped(x) = moving(x + u(x))``) and writes it with ``suits.io.save_field``.
"""

__all__ = ["elastix_mi", "elastix_params", "voxelmorph_mind"]
