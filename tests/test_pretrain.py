"""suits.pretrain: MIND replication loss decreases; resume is bitwise identical (CPU)."""
from __future__ import annotations

import logging

import pytest
import torch

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

    class Killed(Exception):
        pass

    def kill_at_5(step, loss):
        if step == 5:
            raise Killed

    path = tmp_path / "ck.pt"
    with pytest.raises(Killed):
        pretrain(_model(), _images(), iterations=6, seed=3, checkpoint=path,
                 checkpoint_every=2, log=kill_at_5, progress=False)
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
