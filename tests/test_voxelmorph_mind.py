"""VoxelMorph-MIND baseline: field convention against voxelmorph's own SpatialTransformer,
padding/cropping, training loss, bitwise resume, model files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

vxm = pytest.importorskip("voxelmorph")

from baselines.voxelmorph_mind import (  # noqa: E402
    VxmMind, diffusion_loss, load_model, register, register_files, save_model, train,
)
from interrupt import Killed, kill_at  # noqa: E402
from suits.io import load_field, save_volume  # noqa: E402
from suits.warp import warp  # noqa: E402

TINY = {"nb_features": (8, 8, 8)}          # pads to multiples of 8


def _smooth_image(shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, *[max(2, s // 4) for s in shape], generator=g)
    return torch.nn.functional.interpolate(x, size=shape, mode="trilinear", align_corners=True)


def _smooth_field(shape, amplitude, seed=1) -> torch.Tensor:
    """A smooth random field that vanishes at the border (so no sample leaves the volume)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(1, 3, 3, 3, 3, generator=g)
    u = torch.nn.functional.interpolate(u, size=shape, mode="trilinear", align_corners=True)
    window = torch.ones(shape)
    for axis, n in enumerate(shape):
        w = torch.sin(torch.linspace(0, np.pi, n)) ** 2
        window = window * w.view([-1 if a == axis else 1 for a in range(3)])
    u = u * window
    return u * (amplitude / u.abs().max())


def test_suits_warp_equals_voxelmorph_spatial_transformer():
    shape = (20, 17, 14)
    img = _smooth_image(shape)
    u = _smooth_field(shape, 3.0)
    ours = warp(img, u)
    theirs = vxm.nn.modules.SpatialTransformer()(img, u)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    # a field along a single axis moves content along that tensor axis (channel 0 = D)
    for axis in range(3):
        shift = torch.zeros(1, 3, *shape)
        shift[:, axis] = 1.0
        ref = torch.roll(img, -1, dims=2 + axis)
        sl = [slice(None)] * 5
        sl[2 + axis] = slice(0, shape[axis] - 1)
        torch.testing.assert_close(vxm.nn.modules.SpatialTransformer()(img, shift)[tuple(sl)], ref[tuple(sl)])
        torch.testing.assert_close(warp(img, shift)[tuple(sl)], ref[tuple(sl)])


def test_nearest_label_warp_equals_voxelmorph():
    shape = (20, 17, 14)
    labels = (_smooth_image(shape, 3) > 0).float() + (_smooth_image(shape, 4) > 0.5).float()
    u = _smooth_field(shape, 3.0)
    ours = warp(labels, u, mode="nearest")
    theirs = vxm.nn.modules.SpatialTransformer(interpolation_mode="nearest")(labels, u)
    assert float((ours == theirs).float().mean()) > 0.999


def test_network_flow_is_the_contract_field():
    """VxmPairwise's own warped source equals suits.warp.warp with the returned flow (where the
    sample stays inside the volume; voxelmorph pads with zeros, suits with the border)."""
    torch.manual_seed(0)
    model = VxmMind({**TINY, "flow_initializer": 0.5})
    shape = (16, 16, 16)
    fixed, moving = _smooth_image(shape, 5), _smooth_image(shape, 6)
    with torch.no_grad():
        flow, warped = model.net(moving, fixed, return_warped_source=True)
    assert float(flow.abs().max()) > 0.5
    coords = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape],
                                        indexing="ij"))[None] + flow
    inside = torch.ones(shape, dtype=torch.bool)
    for c, n in enumerate(shape):
        inside &= (coords[0, c] >= 0) & (coords[0, c] <= n - 1)
    assert float(inside.float().mean()) > 0.5
    torch.testing.assert_close(warp(moving, flow)[0, 0][inside], warped[0, 0][inside], atol=1e-5, rtol=1e-5)


def test_register_pads_and_crops_any_shape():
    torch.manual_seed(0)
    model = VxmMind({**TINY, "flow_initializer": 0.05})
    shape = (13, 10, 9)
    fixed, moving = _smooth_image(shape, 1), _smooth_image(shape, 2)
    u = register(model, fixed, moving)
    assert u.shape == (1, 3, *shape) and u.dtype == torch.float32
    assert not u.requires_grad
    padded = [model._pad(x) for x in (moving, fixed)]
    assert padded[0].shape[-3:] == (16, 16, 16)
    with torch.no_grad():
        from baselines.voxelmorph_mind import _zscore
        full = model.net(*[model._pad(_zscore(x)) for x in (moving, fixed)])
    torch.testing.assert_close(u, full[..., :13, :10, :9])
    with pytest.raises(ValueError, match="one grid"):
        register(model, fixed, moving[..., :-1])


def test_diffusion_loss():
    u = torch.zeros(1, 3, 6, 6, 6)
    assert float(diffusion_loss(u)) == 0.0
    u[:, 0] = torch.arange(6.0).view(6, 1, 1)           # unit slope along D only
    assert float(diffusion_loss(u)) == pytest.approx((1 / 3) / 3)
    assert float(diffusion_loss(u + 5.0)) == pytest.approx(float(diffusion_loss(u)))


def _pair(shape=(16, 16, 16)) -> tuple[torch.Tensor, torch.Tensor]:
    fixed = _smooth_image(shape, 7)
    moving = warp(fixed, _smooth_field(shape, 2.0, seed=8))
    return fixed, moving


def test_loss_decreases_on_tiny_pair():
    losses: list[float] = []
    model = train([_pair()], 25, lr=1e-3, config=TINY, progress=False,
                  log=lambda step, loss: losses.append(loss))
    assert len(losses) == 25 and model.losses == losses
    assert np.mean(losses[-5:]) < 0.9 * losses[0]
    assert not model.training


def test_resume_is_bitwise_identical(tmp_path):
    pairs = [_pair(), _pair((16, 16, 8))]
    full = train(pairs, 6, lr=1e-3, config=TINY, seed=3, progress=False)
    ck = tmp_path / "ck" / "vxm.pt"
    train(pairs, 3, lr=1e-3, config=TINY, seed=3, checkpoint=ck, checkpoint_every=2, progress=False)
    assert ck.exists()
    resumed = train(pairs, 6, lr=1e-3, config=TINY, seed=3, checkpoint=ck, checkpoint_every=2,
                    progress=False)
    assert resumed.losses == full.losses
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    # a different config cannot resume from this checkpoint
    with pytest.raises(ValueError, match="config"):
        train(pairs, 7, config={"nb_features": (4, 4, 4)}, seed=3, checkpoint=ck, progress=False)


def test_save_load_and_register_files(tmp_path):
    torch.manual_seed(1)
    model = VxmMind({**TINY, "flow_initializer": 0.05})
    save_model(tmp_path / "m.pt", model, iterations=0)
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.config == model.config and not loaded.training
    fixed, moving = _pair((12, 10, 8))
    torch.testing.assert_close(register(loaded, fixed, moving), register(model, fixed, moving))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    save_volume(tmp_path / "f.nii.gz", fixed, affine)
    save_volume(tmp_path / "mv.nii.gz", moving, affine)
    register_files(tmp_path / "m.pt", tmp_path / "f.nii.gz", tmp_path / "mv.nii.gz", tmp_path / "u.nii.gz")
    u, a = load_field(tmp_path / "u.nii.gz")
    np.testing.assert_allclose(a, affine)
    torch.testing.assert_close(u, register(model, fixed, moving), atol=1e-5, rtol=1e-5)
    torch.save({"something": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a VoxelMorph-MIND"):
        load_model(tmp_path / "bad.pt")


def _val_pair(shape=(16, 16, 16)) -> dict[str, torch.Tensor]:
    fixed, moving = _pair(shape)
    return {"fixed": fixed, "moving": moving, "fixed_labels": (fixed > 0).long(),
            "moving_labels": (moving > 0).long()}


def test_validation_measures_hand_checked():
    """val_loss is the training loss of the pair; val_dice the Dice of the moving labels
    warped by the predicted field (here a near-zero one: the identity's Dice)."""
    from baselines.voxelmorph_mind import pair_loss, validation_measures
    from suits.validation import mean_dice

    torch.manual_seed(2)
    model = VxmMind(TINY)
    p = _val_pair()
    m = validation_measures([p], reg_weight=0.5)
    with torch.no_grad():
        expected = float(pair_loss(model, p["fixed"], p["moving"], 0.5))
    assert m["val_loss"](model) == pytest.approx(expected, rel=1e-6)
    assert m["val_dice"](model) == pytest.approx(float(mean_dice(p["fixed_labels"],
                                                                 p["moving_labels"])), abs=1e-3)
    with pytest.raises(ValueError, match="missing"):
        validation_measures([{"fixed": p["fixed"], "moving": p["moving"]}], 0.5)


def test_validation_curve_resumes_and_leaves_training_unchanged(tmp_path):
    pairs = [_pair(), _pair((16, 16, 8))]
    kw = dict(lr=1e-3, config=TINY, seed=3, progress=False)
    plain = train(pairs, 5, **kw)
    val = dict(val_pairs=[_val_pair()], validate_every=2)
    curve = {}
    full = train(pairs, 5, curve=curve, **val, **kw)
    assert full.losses == plain.losses
    for (k, a), (_, b) in zip(plain.state_dict().items(), full.state_dict().items()):
        assert torch.equal(a, b), k
    assert sorted(curve) == ["val_dice", "val_loss"]
    assert [s for s, _ in curve["val_loss"]] == [s for s, _ in curve["val_dice"]] == [0, 2, 4, 5]
    assert all(0.0 <= v <= 1.0 for _, v in curve["val_dice"])
    # killed in step 3 (checkpoint at 2), resumed: the same curve
    ck = tmp_path / "vxm.pt"

    with pytest.raises(Killed):
        train(pairs, 5, checkpoint=ck, checkpoint_every=2, log=kill_at(3), **val, **kw)
    curve2 = {}
    resumed = train(pairs, 5, checkpoint=ck, checkpoint_every=2, curve=curve2, **val, **kw)
    assert resumed.losses == full.losses
    assert curve2 == curve
    # a finished 3-step run extended to 5: its step-3 validation (its last) is off the schedule
    ck.unlink()
    short = {}
    train(pairs, 3, checkpoint=ck, checkpoint_every=2, curve=short, **val, **kw)
    assert [s for s, _ in short["val_dice"]] == [0, 2, 3]
    curve3 = {}
    train(pairs, 5, checkpoint=ck, checkpoint_every=2, curve=curve3, **val, **kw)
    assert curve3 == curve


def test_masked_mind_loss_hand_checked_and_ones_unmasked():
    """mind_loss with a voxel weight is the weighted mean of the squared MIND differences;
    masks without padding give no weight (the unmasked loss); padding in the moving mask
    is warped with the field, and differences in the padding no longer count."""
    from baselines.voxelmorph_mind import loss_weight, mind_loss
    from suits.mind import mind_ssc

    fixed, moving = _pair()
    fm = mind_ssc(fixed)
    d = (mind_ssc(moving) - fm) ** 2
    w = torch.zeros(1, 1, 16, 16, 16)
    w[..., :8, :, :] = 1.0
    w[..., 8:10, :, :] = 0.5
    expect = float((d * w).sum() / (w.sum() * d.shape[1]))
    assert float(mind_loss(moving, fm, weight=w)) == pytest.approx(expect, rel=1e-5)
    assert float(mind_loss(moving, fm, weight=torch.ones_like(w))) == pytest.approx(
        float(mind_loss(moving, fm)), rel=1e-6)

    u = torch.zeros(1, 3, 16, 16, 16)
    u[:, 0] = 2.0                                   # sample the moving mask 2 voxels further along D
    ones = torch.ones(1, 1, 16, 16, 16)
    assert loss_weight(ones, ones, u) is None and loss_weight(None, None, u) is None
    padded = ones.clone()
    padded[..., 12:, :, :] = 0
    weight = loss_weight(None, padded, u)
    assert torch.equal(weight[..., :10, :, :], torch.ones(1, 1, 10, 16, 16))
    assert float(weight[..., 10:, :, :].max()) == 0.0
    # content changed only deep in the padding (beyond MIND's reach): the masked loss ignores it
    changed = moving.clone()
    changed[..., 14:, :, :] = 5.0
    w2 = loss_weight(ones, padded, torch.zeros_like(u)) * (torch.arange(16) < 8).view(1, 1, 16, 1, 1)
    assert float(mind_loss(changed, fm, weight=w2)) == pytest.approx(float(mind_loss(moving, fm, weight=w2)))
    assert float(mind_loss(changed, fm)) > float(mind_loss(moving, fm)) * 1.05


def test_train_with_masks_ones_equal_unmasked_padding_differs():
    pair = _pair()
    ones = torch.ones_like(pair[0])
    padded = ones.clone()
    padded[..., 11:, :, :] = 0
    ref = train([pair], 3, lr=1e-3, config=TINY, progress=False).losses
    assert train([pair], 3, lr=1e-3, config=TINY, progress=False, masks=[(ones, ones)]).losses == ref
    masked = train([pair], 3, lr=1e-3, config=TINY, progress=False, masks=[(None, padded)]).losses
    assert masked != ref and all(np.isfinite(masked))
    with pytest.raises(ValueError, match="not on the image grid"):
        train([pair], 1, config=TINY, progress=False, masks=[(padded[..., :8], None)])
    with pytest.raises(ValueError, match="pair 1: moving mask has no voxel inside"):
        train([pair, pair], 1, config=TINY, progress=False,
              masks=[(None, padded), (None, torch.zeros_like(padded))])
