"""suits.fov.binary_fov: the one 0/1-or-None form of a field-of-view mask that the MIND
registration, SimpleElastix-MI and VoxelMorph-MIND share."""
import pytest
import torch

from suits.fov import binary_fov


def test_none_and_all_ones_mean_no_mask():
    assert binary_fov(None) is None
    assert binary_fov(torch.full((1, 1, 3, 4, 5), 0.9)) is None


def test_thresholds_at_a_half_in_the_requested_dtype():
    m = torch.tensor([0.0, 0.4, 0.6, 1.0]).reshape(1, 1, 1, 2, 2)
    out = binary_fov(m, dtype=torch.uint8)
    assert out.dtype == torch.uint8
    assert out.flatten().tolist() == [0, 0, 1, 1]


def test_a_mask_off_the_image_grid_is_named():
    with pytest.raises(ValueError, match=r"moving mask has shape \(3, 4, 5\) but its image "
                                         r"\(3, 4, 6\)"):
        binary_fov(torch.ones(3, 4, 5), "moving mask", shape=(3, 4, 6))


def test_every_item_of_a_batch_needs_a_voxel_inside():
    m = torch.ones(2, 1, 2, 2, 2)
    m[1] = 0
    with pytest.raises(ValueError, match="fixed mask has no voxel inside"):
        binary_fov(m, "fixed mask")
    m[1, 0, 0, 0, 0] = 1
    assert binary_fov(m, "fixed mask").sum() == 9


def test_an_empty_or_flat_array_is_not_a_mask():
    for bad in (torch.ones(0, 1, 2, 2, 2), torch.ones(4, 4)):
        with pytest.raises(ValueError, match="fixed mask must be a 3-D volume"):
            binary_fov(bad, "fixed mask")
