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
