"""suits.pretrain: MIND replication loss decreases; resume is bitwise identical (CPU)."""
from __future__ import annotations

import logging

import pytest
import torch

from interrupt import Killed, kill_at
from suits.featcnn import FeatCNN
from suits.mind import mind_ssc
from suits.pretrain import mind_target, pretrain


def _phantom(seed: int, shape=(12, 12, 12)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(1, 1, *shape)
    D, H, W = shape
    for _ in range(3):  # a few boxes of random intensity + noise
        a, b, c = (int(torch.randint(0, n - 4, (1,), generator=g)) for n in shape)
        x[..., a:a + 4 + int(torch.randint(0, 4, (1,), generator=g)), b:b + 5, c:c + 3] += float(torch.rand(1, generator=g)) * 3
    return x + 0.05 * torch.randn(x.shape, generator=g)


def _images():
    return {"ct": [_phantom(1), _phantom(2)], "mr": [-_phantom(3), 2 * _phantom(4)]}


def _model(factor=2):
    torch.manual_seed(0)
    return FeatCNN(downsample=factor)


def test_mind_target_on_feature_grid():
    x = _phantom(7, (13, 12, 9))
    t = mind_target(x, 4)
    assert t.shape == (1, 12, 4, 3, 3)
    torch.testing.assert_close(t[..., 2, 1, 2], mind_ssc(x)[..., 8, 4, 8])


def test_loss_decreases():
    model, losses = pretrain(_model(), _images(), iterations=40, lr=1e-2, progress=False)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_resume_is_bitwise_identical(tmp_path, caplog):
    ref, ref_losses = pretrain(_model(), _images(), iterations=6, seed=3, progress=False)

    path = tmp_path / "ck.pt"
    with pytest.raises(Killed):
        pretrain(_model(), _images(), iterations=6, seed=3, checkpoint=path,
                 checkpoint_every=2, log=kill_at(5), progress=False)
    assert path.exists()
    fresh = _model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.mul_(0.5)  # resumed weights must come from the checkpoint
    with caplog.at_level(logging.INFO, logger="suits.pretrain"):
        out, losses = pretrain(fresh, _images(), iterations=6, seed=3, checkpoint=path,
                               checkpoint_every=2, progress=False)
    assert "resuming from step 4" in caplog.text
    assert losses == ref_losses
    for a, b in zip(ref.state_dict().values(), out.state_dict().values()):
        assert torch.equal(a, b)
    # a finished checkpoint makes a further call a no-op
    again, l2 = pretrain(_model(), _images(), iterations=6, seed=3, checkpoint=path, progress=False)
    assert l2 == ref_losses
    for a, b in zip(ref.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_seed_changes_sampling():
    _, a = pretrain(_model(), _images(), iterations=4, seed=0, progress=False)
    _, b = pretrain(_model(), _images(), iterations=4, seed=1, progress=False)
    assert a != b


def test_bad_inputs():
    with pytest.raises(ValueError, match="no FeatCNN stream"):
        pretrain(_model(), {"us": [_phantom(1)]}, iterations=1, progress=False)
    with pytest.raises(ValueError, match="no images"):
        pretrain(_model(), {"ct": []}, iterations=1, progress=False)
    with pytest.raises(ValueError, match=r"\(1, 1, D, H, W\)"):
        pretrain(_model(), {"ct": [torch.zeros(8, 8, 8)]}, iterations=1, progress=False)


def test_crop_trains_on_windows_of_the_target():
    """With ``crop`` every step sees a factor-aligned window of the image and the same window
    of the whole image's MIND target; training still lowers the loss and resumes bitwise."""
    import suits.pretrain as sp

    torch.manual_seed(0)
    imgs = {"ct": [torch.rand(1, 1, 20, 24, 16)], "mr": [torch.rand(1, 1, 20, 24, 16)]}
    seen = []
    model = FeatCNN(device="cpu")
    real = sp.F.l1_loss

    def spy(out, target):
        seen.append((tuple(out.shape), tuple(target.shape)))
        return real(out, target)

    sp.F.l1_loss = spy
    try:
        _, losses = sp.pretrain(model, imgs, 4, crop=(8, 12, 64), progress=False)
    finally:
        sp.F.l1_loss = real
    # 8 and 12 voxels -> 2 and 3 feature voxels; 64 > 16 takes the whole axis (4 voxels)
    assert seen and all(o == t == (1, 12, 2, 3, 4) for o, t in seen), seen
    with pytest.raises(ValueError, match="crop"):
        sp.pretrain(FeatCNN(device="cpu"), imgs, 1, crop=(2, 8, 8), progress=False)


def test_crop_window_matches_the_whole_target():
    """The target window is the MIND-SSC of the whole image at the crop's feature voxels."""
    import suits.pretrain as sp

    torch.manual_seed(1)
    x = torch.rand(1, 1, 16, 16, 16)
    full = sp.mind_target(x, 4)
    captured = []
    real = sp.F.l1_loss

    def spy(out, target):
        captured.append(target.detach().clone())
        return real(out, target)

    sp.F.l1_loss = spy
    try:
        sp.pretrain(FeatCNN(modalities=("ct",), device="cpu"), {"ct": [x]}, 3, crop=8,
                    progress=False, seed=3)
    finally:
        sp.F.l1_loss = real
    for t in captured:
        hits = [(a, b, c) for a in range(3) for b in range(3) for c in range(3)
                if torch.equal(full[..., a:a + 2, b:b + 2, c:c + 2], t)]
        assert hits, "target window is not a factor-aligned window of the whole target"


def test_replication_loss_is_the_whole_volume_l1():
    from suits.pretrain import replication_loss

    model = _model()
    imgs = {"mr": [_phantom(5)], "ct": [_phantom(6), _phantom(7)]}
    with torch.no_grad():
        ct = [float((model(x, "ct") - mind_target(x, 2)).abs().mean()) for x in imgs["ct"]]
        mr = float((model(imgs["mr"][0], "mr") - mind_target(imgs["mr"][0], 2)).abs().mean())
    expected = ((ct[0] + ct[1]) / 2 + mr) / 2  # mean per modality, then over the modalities
    assert replication_loss(model, imgs) == pytest.approx(expected, rel=1e-6)
    assert model.training  # mode kept


def test_validation_curve_resumes_and_leaves_training_unchanged(tmp_path):
    """Validations run at step 0, every validate_every steps and after the last; they do not
    change the trained weights or losses; a run killed after its step-4 checkpoint and resumed
    writes the same curve; the curve TSV has the pre-training columns."""
    from suits.validation import write_curve

    plain, plain_losses = pretrain(_model(), _images(), iterations=7, seed=3, progress=False)
    calls = []

    def validate(model):  # a score that depends on the weights
        calls.append(1)
        return float(sum(p.detach().abs().sum() for p in model.parameters()))

    val = {"ct": [_phantom(8)], "mr": [_phantom(9)]}
    kw = dict(iterations=7, seed=3, progress=False, val_images=val, validate=validate,
              validate_every=2)
    curve = {}
    model, losses = pretrain(_model(), _images(), curve=curve, **kw)
    assert losses == plain_losses
    for a, b in zip(plain.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert [s for s, _ in curve["val_dice"]] == [0, 2, 4, 6, 7]
    assert [s for s, _ in curve["val_loss"]] == [0, 2, 4, 6, 7]
    assert len(calls) == 5
    assert curve["val_loss"][-1][1] < curve["val_loss"][0][1]  # training lowers the held-out loss

    ck = tmp_path / "ck.pt"
    with pytest.raises(Killed):
        pretrain(_model(), _images(), checkpoint=ck, checkpoint_every=4, log=kill_at(5), **kw)
    calls.clear()
    curve2 = {}
    _, losses2 = pretrain(_model(), _images(), checkpoint=ck, checkpoint_every=4, curve=curve2,
                          **kw)
    assert curve2 == curve and losses2 == losses
    assert len(calls) == 2  # steps 6 and 7 only

    write_curve(tmp_path / "c.tsv", losses, curve["val_dice"], 0.25,
                columns={"val_loss": curve["val_loss"]})
    rows = (tmp_path / "c.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "loss", "val_loss", "val_dice", "val_initial"]
    assert len(rows) == 1 + 8
    step2 = rows[3].split("\t")
    assert step2[0] == "2" and float(step2[2]) == pytest.approx(curve["val_loss"][1][1], rel=1e-5)
    assert rows[2].split("\t")[2:4] == ["", ""]  # step 1: not validated


def test_validation_without_measures_records_nothing():
    curve = {"stale": [(0, 1.0)]}
    _, losses = pretrain(_model(), _images(), iterations=3, validate_every=1, curve=curve,
                         progress=False)
    assert curve == {} and len(losses) == 3
    with pytest.raises(ValueError, match="validation images"):
        pretrain(_model(), _images(), iterations=1, val_images={"us": [_phantom(1)]},
                 progress=False)


def test_snapshots_are_the_weights_of_the_validated_steps_and_survive_a_resume(tmp_path):
    """snapshots holds (step, weights) of every due validation step, also without measures;
    scoring a snapshot gives the score the in-loop validation gives at that step; a killed and
    resumed run keeps the snapshots taken before the kill; the snapshot file round-trips."""
    from suits.modelfile import load_snapshots, save_snapshots

    def score(model):
        return float(sum(p.detach().abs().sum() for p in model.parameters()))

    kw = dict(iterations=7, seed=3, progress=False, validate_every=3)
    curve, snaps = {}, []
    model, losses = pretrain(_model(), _images(), curve=curve, snapshots=snaps, validate=score, **kw)
    assert [s for s, _ in snaps] == [0, 3, 6, 7]
    for (step, state), (vstep, value) in zip(snaps, curve["val_dice"]):
        scored = _model()
        scored.load_state_dict(state)
        assert step == vstep and score(scored) == value
    for a, b in zip(snaps[-1][1].values(), model.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(torch.equal(snaps[0][1][k], snaps[-1][1][k]) for k in snaps[0][1])

    bare = []
    pretrain(_model(), _images(), snapshots=bare, **kw)  # no measures: weights still kept
    assert [s for s, _ in bare] == [0, 3, 6, 7]

    ck = tmp_path / "ck.pt"
    with pytest.raises(Killed):
        pretrain(_model(), _images(), checkpoint=ck, checkpoint_every=4, log=kill_at(5),
                 snapshots=[], **kw)
    resumed = []
    pretrain(_model(), _images(), checkpoint=ck, checkpoint_every=4, snapshots=resumed, **kw)
    assert [s for s, _ in resumed] == [0, 3, 6, 7]
    for (_, a), (_, b) in zip(resumed, snaps):
        assert all(torch.equal(a[k], b[k]) for k in a)

    save_snapshots(tmp_path / "s.pt", snaps)
    back = load_snapshots(tmp_path / "s.pt")
    assert [s for s, _ in back] == [0, 3, 6, 7]
    assert all(torch.equal(back[-1][1][k], snaps[-1][1][k]) for k in snaps[-1][1])


def test_read_curve_inverts_write_curve(tmp_path):
    from suits.validation import read_curve, write_curve

    write_curve(tmp_path / "c.tsv", [0.5, 0.25, 0.125], [(0, 0.4), (3, 0.5)], 0.3,
                columns={"val_loss": [(0, 1.0), (3, 0.75)]})
    losses, columns = read_curve(tmp_path / "c.tsv")
    assert losses == [0.5, 0.25, 0.125]
    assert columns == {"val_loss": [(0, 1.0), (3, 0.75)], "val_dice": [(0, 0.4), (3, 0.5)]}
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="bad.tsv"):
        read_curve(tmp_path / "bad.tsv")
