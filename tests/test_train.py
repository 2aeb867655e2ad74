"""suits.train (Algorithm 1): finite loss, weights change, bitwise resume, k_back draws."""
from __future__ import annotations

import logging

import pytest
import torch

from interrupt import Killed, kill_at
from suits.featcnn import FeatCNN
from suits.train import (draw_step, guidance_loss, label_iterations, label_representation,
                         tracked_iteration, train_suits)
from suits.warp import one_hot

SHAPE = (16, 16, 16)


def _pair(seed: int, shift: int = 2) -> dict[str, torch.Tensor]:
    """Two boxes (labels 1, 2); the moving one shifted by ``shift`` voxels along D and with a
    different intensity mapping per modality (CT-like vs MR-like) plus noise."""
    g = torch.Generator().manual_seed(seed)

    def labels(off: int) -> torch.Tensor:
        lab = torch.zeros(1, 1, *SHAPE, dtype=torch.long)
        lab[..., 3 + off:9 + off, 3:10, 4:11] = 1
        lab[..., 9 + off:13 + off, 8:13, 5:12] = 2
        return lab

    fl, ml = labels(0), labels(shift)
    mr = torch.tensor([0.0, 1.0, 0.4])[fl] + 0.05 * torch.randn(fl.shape, generator=g)
    ct = torch.tensor([1.0, 0.2, 0.7])[ml] + 0.05 * torch.randn(ml.shape, generator=g)
    return {"fixed": mr.float(), "moving": ct.float(), "fixed_labels": fl, "moving_labels": ml}


def _pairs():
    return [_pair(1), _pair(2, shift=1), _pair(3, shift=-1)]


def _model():
    torch.manual_seed(0)
    return FeatCNN(downsample=4)


def _kw(**over):
    kw = dict(steps=6, batch=2, lr=1e-3, lam=1.0, k_max=3, seed=5, progress=False)
    kw.update(over)
    return kw


def test_draw_step_ranges():
    g = torch.Generator().manual_seed(0)
    draws = [draw_step(g, 5, 3, 1, 15) for _ in range(400)]
    ks = [k for _, k in draws]
    assert min(ks) == 1 and max(ks) == 15
    for idx, _ in draws:
        assert len(idx) == 3 and len(set(idx)) == 3 and all(0 <= i < 5 for i in idx)
    ks0 = [draw_step(g, 2, 4, 0, 3)[1] for _ in range(200)]
    assert set(ks0) == {0, 1, 2, 3}
    idx, _ = draw_step(g, 2, 4, 0, 3)  # batch larger than the pool: with replacement
    assert len(idx) == 4 and set(idx) <= {0, 1}
    with pytest.raises(ValueError):
        draw_step(g, 3, 1, 4, 3)
    # same seed, same draws
    a = [draw_step(torch.Generator().manual_seed(7), 9, 3, 1, 15) for _ in range(3)]
    b = [draw_step(torch.Generator().manual_seed(7), 9, 3, 1, 15) for _ in range(3)]
    assert a == b


def test_label_representation_grid():
    lab = torch.zeros(1, 1, 13, 9, 16, dtype=torch.long)
    lab[..., 4:, :, :] = 1
    r = label_representation(one_hot(lab, 2), 4)
    assert r.shape == (1, 2, 4, 3, 4)
    torch.testing.assert_close(r.sum(1), torch.ones(1, 4, 3, 4))
    # feature voxel 1 sits at image voxel 4: the box of size 5 there covers 2..6, 3 of 5 inside
    assert r[0, 1, 1, 0, 0] == pytest.approx(3 / 5)
    # the strided evaluation equals the full box filter sampled at every f-th voxel
    from suits.warp import box_filter
    x = torch.rand(1, 3, 17, 14, 21)
    for f, size in ((4, 5), (4, 3), (2, 3), (4, 7), (1, 3)):
        torch.testing.assert_close(label_representation(x, f, size), box_filter(x, size)[..., ::f, ::f, ::f])


@pytest.mark.parametrize("warp_space", ["image", "features"])
def test_label_iterations_align_labels(warp_space):
    p = _pair(0, shift=2)
    K = 3
    u0 = torch.zeros(1, 3, *SHAPE)
    u = label_iterations(one_hot(p["fixed_labels"], K), one_hot(p["moving_labels"], K), 5,
                         lam=1.0, factor=4, warp_space=warp_space)
    assert u.shape == (1, 3, *SHAPE) and not u.requires_grad
    before = guidance_loss(p["moving_labels"], p["fixed_labels"], u0, K)
    after = guidance_loss(p["moving_labels"], p["fixed_labels"], u, K)
    assert after < 0.8 * before
    assert label_iterations(one_hot(p["fixed_labels"], K), one_hot(p["moving_labels"], K), 0,
                            lam=1.0, factor=4).abs().max() == 0


def test_feature_label_iterations_equal_the_image_grid_field_loop():
    """label_iterations(warp_space="features") keeps the field on the feature grid; it equals
    iterating iterate() on the pooled label maps with the field on the image grid."""
    from suits.register import iterate

    p = _pair(1, shift=2)
    K, f, lam = 3, 4, 1.0
    fix, mov = one_hot(p["fixed_labels"], K), one_hot(p["moving_labels"], K)
    u = label_iterations(fix, mov, 4, lam=lam, factor=f, warp_space="features")
    ref = torch.zeros(1, 3, *SHAPE)
    r_fix, r_mov = label_representation(fix, f), label_representation(mov, f)
    for _ in range(4):
        ref, _ = iterate(r_fix, None, r_mov, ref, lam, factor=f, warp_space="features")
    torch.testing.assert_close(u, ref, rtol=1e-4, atol=1e-5)
    assert u.abs().max() > 0.5


def test_guidance_loss_is_cross_entropy_of_warped_one_hot():
    """Eq. (3) through the target-channel shortcut equals the K-channel formulation."""
    import torch.nn.functional as F

    from suits.warp import warp_labels
    p = _pair(0, shift=2)
    u = (0.7 * torch.randn(1, 3, *SHAPE, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    direct = F.nll_loss(torch.log(warp_labels(p["moving_labels"], u, 3) + 1e-8), p["fixed_labels"][:, 0])
    loss = guidance_loss(p["moving_labels"], p["fixed_labels"], u, 3)
    torch.testing.assert_close(loss, direct, rtol=1e-5, atol=1e-6)
    assert float(loss.detach()) > 0.1  # a misaligned pair, not the trivial zero


def test_guidance_loss_zero_for_perfect_alignment():
    p = _pair(0, shift=0)
    loss = guidance_loss(p["moving_labels"], p["fixed_labels"], torch.zeros(1, 3, *SHAPE), 3)
    assert 0 <= float(loss) < 1e-6


@pytest.mark.parametrize("warp_space", ["image", "features"])
def test_tracked_iteration_reaches_both_streams(warp_space):
    model = _model()
    p = _pair(1)
    u = tracked_iteration(model, p["fixed"], p["moving"], torch.zeros(1, 3, *SHAPE), lam=1.0,
                          warp_space=warp_space)
    loss = guidance_loss(p["moving_labels"], p["fixed_labels"], u, 3)
    loss.backward()
    for m in ("ct", "mr"):
        g = model.stems[m][0][0].weight.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("warp_space, label_warp_space",
                         [("image", "features"), ("features", "features"), ("image", "image")])
def test_train_loss_finite_weights_change(tmp_path, warp_space, label_warp_space, monkeypatch):
    import suits.train as train_mod

    spaces = []
    real = train_mod.label_iterations
    monkeypatch.setattr(train_mod, "label_iterations",
                        lambda *a, **kw: spaces.append(kw["warp_space"]) or real(*a, **kw))
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logged = []
    model, losses = train_suits(model, _pairs(), log=lambda s, l: logged.append((s, l)),
                                checkpoint=tmp_path / "ck.pt", warp_space=warp_space,
                                label_warp_space=label_warp_space, **_kw(steps=3))
    assert spaces and set(spaces) == {label_warp_space}  # the label iterations' own setting
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert all(l > 0 for l in losses)
    assert [s for s, _ in logged] == [1, 2, 3]
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("stems.ct") for k in changed) and any(k.startswith("stems.mr") for k in changed)
    assert any(k.startswith("shared") for k in changed)
    extra = torch.load(tmp_path / "ck.pt", weights_only=False)["extra"]
    assert len(extra["k_backs"]) == 3 and all(1 <= k <= 3 for k in extra["k_backs"])
    assert (extra["warp_space"], extra["label_warp_space"]) == (warp_space, label_warp_space)


def test_resume_is_bitwise_identical(tmp_path, caplog):
    ref, ref_losses = train_suits(_model(), _pairs(), **_kw())

    ck = tmp_path / "ck.pt"
    with pytest.raises(Killed):
        train_suits(_model(), _pairs(), checkpoint=ck, checkpoint_every=2, log=kill_at(5), **_kw())
    assert torch.load(ck, weights_only=False)["step"] == 4
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint must restore it
    with caplog.at_level(logging.INFO, logger="suits.train"):
        res, res_losses = train_suits(_model(), _pairs(), checkpoint=ck, checkpoint_every=2, **_kw())
    assert "resuming from step 4" in caplog.text
    assert res_losses == ref_losses
    for k, v in ref.state_dict().items():
        assert torch.equal(v, res.state_dict()[k]), k
    # a finished run resumed again does nothing
    again, again_losses = train_suits(_model(), _pairs(), checkpoint=ck, **_kw())
    assert again_losses == ref_losses
    # a checkpoint of one warp_space is not resumed by the other
    with pytest.raises(ValueError, match="warp_space='image'"):
        train_suits(_model(), _pairs(), checkpoint=ck, warp_space="features", **_kw())
    with pytest.raises(ValueError, match="label_warp_space='features'"):
        train_suits(_model(), _pairs(), checkpoint=ck, label_warp_space="image", **_kw())
    # a checkpoint from before label_warp_space: its warp_space was used for both
    payload = torch.load(ck, weights_only=False)
    del payload["extra"]["label_warp_space"]
    torch.save(payload, ck)
    with pytest.raises(ValueError, match="label_warp_space='image'"):
        train_suits(_model(), _pairs(), checkpoint=ck, **_kw())
    old, old_losses = train_suits(_model(), _pairs(), checkpoint=ck, label_warp_space="image", **_kw())
    assert old_losses == ref_losses


def test_bad_pairs():
    with pytest.raises(ValueError, match="no training pairs"):
        train_suits(_model(), [], progress=False)
    with pytest.raises(ValueError, match="warp_space"):
        train_suits(_model(), _pairs(), warp_space="labels", **_kw(steps=1))
    with pytest.raises(ValueError, match="warp_space"):
        train_suits(_model(), _pairs(), label_warp_space="labels", **_kw(steps=1))
    p = _pair(0)
    p["moving"] = p["moving"][..., :-1]
    with pytest.raises(ValueError, match="one grid"):
        train_suits(_model(), [p], progress=False)


def test_validation_curve_and_best_selection(tmp_path):
    """validate() runs before the first step, every validate_every steps and after the last;
    select='best' returns the weights of the best score (here a scripted score sequence), and
    a resumed run keeps the curve and the best weights of before the interruption."""
    scripted = iter([0.1, 0.5, 0.3, 0.2])  # steps 0, 2, 4, 6: the best is step 2
    snapshots = {}

    def validate(model):
        score = next(scripted)
        snapshots[score] = {k: v.clone() for k, v in model.state_dict().items()}
        return score

    curve = []
    model, _ = train_suits(_model(), _pairs(), validate=validate, validate_every=2,
                           select="best", curve=curve, **_kw())
    assert [s for s, _ in curve] == [0, 2, 4, 6]
    assert [v for _, v in curve] == [0.1, 0.5, 0.3, 0.2]
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[0.5][k]), k
    last, _ = train_suits(_model(), _pairs(), **_kw())
    assert any(not torch.equal(v, last.state_dict()[k]) for k, v in model.state_dict().items())

    # interrupted after step 4 (checkpoint at 4), resumed: same curve, same best weights
    scripted = iter([0.1, 0.5, 0.3, 0.2])
    ck = tmp_path / "ck.pt"

    with pytest.raises(Killed):
        train_suits(_model(), _pairs(), validate=validate, validate_every=2, select="best",
                    checkpoint=ck, checkpoint_every=2, log=kill_at(5), **_kw())
    curve2 = []
    resumed, _ = train_suits(_model(), _pairs(), validate=validate, validate_every=2,
                             select="best", checkpoint=ck, checkpoint_every=2, curve=curve2, **_kw())
    assert curve2 == curve
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_known_initial_score_replaces_the_first_validation(tmp_path):
    """initial_score stands for the validation before the first step: validate() runs only
    at the later steps, the curve starts with the given score, and select='best' keeps the
    weights as passed in when no later score beats it."""
    from suits.validation import final_score, write_curve

    calls = []

    def validate(model):
        calls.append(1)
        return 0.4

    start = _model()
    before = {k: v.clone() for k, v in start.state_dict().items()}
    curve = []
    model, _ = train_suits(start, _pairs(), validate=validate, validate_every=2, select="best",
                           curve=curve, initial_score=0.45, **_kw())
    assert [s for s, _ in curve] == [0, 2, 4, 6] and len(calls) == 3
    assert curve[0] == (0, 0.45)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the score comes from a pre-training curve's last row; an unvalidated last step gives None
    path = tmp_path / "curve.tsv"
    write_curve(path, [0.3, 0.2, 0.1], [(0, 0.41), (3, 0.45)], 0.3)
    assert final_score(path) == pytest.approx(0.45)
    write_curve(path, [0.3, 0.2, 0.1], [(0, 0.41)], 0.3)
    assert final_score(path) is None
    path.write_text("step\tloss\n0\t\n")
    with pytest.raises(ValueError, match="val_dice"):
        final_score(path)


def test_untracked_feature_iterations(tmp_path):
    """untracked='features': the k_back - 1 iterations without gradients use the model's own
    features (feature_iterations == feature_grid_iterations of its features; none for n = 0),
    training then differs from training with the label iterations, and a checkpoint of one
    kind is not resumed as the other."""
    from suits.register import feature_grid_iterations
    from suits.train import feature_iterations

    model, p = _model(), _pair(2)
    fixed, moving = p["fixed"], p["moving"]
    assert torch.equal(feature_iterations(model, fixed, moving, 0, 1.0), torch.zeros(1, 3, *fixed.shape[-3:]))
    with torch.no_grad():
        ref = feature_grid_iterations(model(fixed, "mr"), model(moving, "ct"), fixed.shape[-3:], 3, 1.0,
                                      factor=model.factor)
    assert torch.allclose(feature_iterations(model, fixed, moving, 3, 1.0), ref)
    _, by_labels = train_suits(_model(), _pairs(), **_kw())
    _, by_features = train_suits(_model(), _pairs(), untracked="features", **_kw())
    assert by_features != by_labels and len(by_features) == len(by_labels)
    ck = tmp_path / "ck.pt"
    train_suits(_model(), _pairs(), checkpoint=ck, untracked="features", **_kw(steps=2))
    with pytest.raises(ValueError, match="untracked='features'"):
        train_suits(_model(), _pairs(), checkpoint=ck, **_kw())
    with pytest.raises(ValueError, match="untracked"):
        train_suits(_model(), _pairs(), untracked="none", **_kw())


def test_select_best_needs_validation():
    with pytest.raises(ValueError, match="validate"):
        train_suits(_model(), _pairs(), select="best", **_kw())
    with pytest.raises(ValueError, match="select"):
        train_suits(_model(), _pairs(), select="first", **_kw())


def test_validator_scores_registration_against_identity():
    """The Validator registers each pair with the test-time scheme: on shifted boxes a
    hand-crafted representation that sees the labels beats the identity field."""
    from suits.validation import Validator, mean_dice

    fl = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long)
    fl[..., :2, :, :] = 1
    wl = fl.clone()
    wl[..., 1, :, :] = 0  # label 1: 32 vs 16 voxels, overlap 16 -> 2*16/48
    assert mean_dice(fl, wl) == pytest.approx(2 * 16 / 48)

    class LabelFeatures(torch.nn.Module):
        factor = 1

        def forward(self, x, modality):
            return torch.cat([x, x.round()], 1)

    pairs = [{**_pair(1), "fixed": _pair(1)["fixed_labels"].float(),
              "moving": _pair(1)["moving_labels"].float()}]
    v = Validator(pairs, dict(iterations=10, lam=0.5))
    assert v(LabelFeatures()) > v.initial() + 0.05


def test_validator_for_rows_and_no_rows(tmp_path):
    """validator_for: None without validation rows; with rows, a Validator over the loaded
    pairs that passes the modalities on to the registration."""
    from suits.io import save_labels, save_volume
    from suits.pairs import read_pairs
    from suits.validation import Validator, validator_for

    assert validator_for([], tmp_path / "none.tsv", {}, "mr", "ct") is None
    p = _pair(1)
    eye = torch.eye(4).double().numpy()
    for name in ("fixed", "moving"):
        save_volume(tmp_path / f"{name}.nii.gz", p[name], eye)
        save_labels(tmp_path / f"{name}_l.nii.gz", p[f"{name}_labels"], eye)
    tsv = tmp_path / "val.tsv"
    tsv.write_text("fixed_image\tmoving_image\tfixed_labels\tmoving_labels\n"
                   "fixed.nii.gz\tmoving.nii.gz\tfixed_l.nii.gz\tmoving_l.nii.gz\n")
    v = validator_for(read_pairs(tsv), tsv, {"iterations": 2}, "mr", "ct")
    assert isinstance(v, Validator) and len(v.pairs) == 1
    assert v.register_kwargs == {"iterations": 2, "fixed_modality": "mr", "moving_modality": "ct"}


def test_fov_masks_weight_training_and_validation(tmp_path, monkeypatch):
    """Field-of-view masks in the pairs: all ones train exactly as without masks; a moving mask
    with padding changes the losses; the pairs file carries the masks to the Validator, which
    passes them to the registration."""
    from suits.io import save_labels, save_volume
    from suits.pairs import PairsError, load_pairs, read_pairs
    from suits.validation import Validator

    def with_masks(pairs, moving_fov):
        return [{**p, "fixed_fov": torch.ones_like(p["fixed"]), "moving_fov": moving_fov.clone()}
                for p in pairs]

    _, ref = train_suits(_model(), _pairs(), **_kw(steps=2))
    _, ones = train_suits(_model(), with_masks(_pairs(), torch.ones(1, 1, *SHAPE)), **_kw(steps=2))
    assert ones == ref
    padded = torch.ones(1, 1, *SHAPE)
    padded[..., 10:, :, :] = 0
    _, masked = train_suits(_model(), with_masks(_pairs(), padded), **_kw(steps=2))
    assert all(torch.isfinite(torch.tensor(masked))) and masked != ref

    p = _pair(1)
    eye = torch.eye(4).double().numpy()
    for name in ("fixed", "moving"):
        save_volume(tmp_path / f"{name}.nii.gz", p[name], eye)
        save_labels(tmp_path / f"{name}_l.nii.gz", p[f"{name}_labels"], eye)
    save_volume(tmp_path / "fov.nii.gz", padded, eye)
    tsv = tmp_path / "val.tsv"
    tsv.write_text("fixed_image\tmoving_image\tfixed_labels\tmoving_labels\tfixed_fov\tmoving_fov\n"
                   "fixed.nii.gz\tmoving.nii.gz\tfixed_l.nii.gz\tmoving_l.nii.gz\tfov.nii.gz\tfov.nii.gz\n")
    pairs = load_pairs(read_pairs(tsv), tsv)
    assert torch.equal(pairs[0]["moving_fov"], padded)
    seen = []
    import suits.validation as validation_mod
    real = validation_mod.register
    monkeypatch.setattr(validation_mod, "register", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    Validator(pairs, {"iterations": 1, "lam": 1.0})(_model())
    assert torch.equal(seen[0]["moving_mask"], padded) and torch.equal(seen[0]["fixed_mask"], padded)

    half = tmp_path / "half.tsv"
    half.write_text("fixed_image\tmoving_image\tfixed_labels\tmoving_labels\tfixed_fov\n"
                    "fixed.nii.gz\tmoving.nii.gz\tfixed_l.nii.gz\tmoving_l.nii.gz\tfov.nii.gz\n")
    with pytest.raises(PairsError, match="fixed_fov without moving_fov"):
        read_pairs(half)
