"""suits.checkpoint: resume gives bitwise the uninterrupted result (CPU)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from suits import checkpoint


def _model():
    torch.manual_seed(123)
    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.ReLU(), nn.Linear(8, 1))


def _train(model, opt, steps):
    for _ in range(steps):
        # every global RNG takes part: torch (randn, dropout), numpy, python
        x = torch.randn(16, 4) + float(np.random.normal()) + random.random()
        loss = (model(x) - x.sum(1, keepdim=True)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_resume_is_bitwise_identical(tmp_path):
    torch.manual_seed(0); np.random.seed(0); random.seed(0)
    ref = _model()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    torch.manual_seed(0); np.random.seed(0); random.seed(0)
    _train(ref, ref_opt, 10)

    torch.manual_seed(0); np.random.seed(0); random.seed(0)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0); np.random.seed(0); random.seed(0)
    _train(model, opt, 4)
    path = checkpoint.save(tmp_path / "ck.pt", 4, model, opt, note="hi", history=[1.0, 2.0])
    _train(model, opt, 3)  # keep training past the checkpoint (these steps are thrown away)

    torch.manual_seed(99); np.random.seed(99); random.seed(99)
    fresh = _model()
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    step, extra = checkpoint.load(path, fresh, fresh_opt)
    assert step == 4 and extra == {"note": "hi", "history": [1.0, 2.0]}
    _train(fresh, fresh_opt, 6)
    for a, b in zip(ref.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)
    # and the interrupted-then-continued model differs (the test can fail)
    assert not all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), model.state_dict().values()))


def test_rng_states_restored(tmp_path):
    m = nn.Linear(2, 2)
    checkpoint.save(tmp_path / "a.pt", 0, m)
    a = (torch.rand(3), np.random.rand(3), random.random())
    checkpoint.load(tmp_path / "a.pt", m)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_generator_state_in_extra(tmp_path):
    g = torch.Generator().manual_seed(5)
    m = nn.Linear(2, 2)
    checkpoint.save(tmp_path / "g.pt", 1, m, generator=g.get_state())
    a = torch.randint(0, 1000, (5,), generator=g)
    _, extra = checkpoint.load(tmp_path / "g.pt", m)
    g2 = torch.Generator()
    g2.set_state(extra["generator"])
    assert torch.equal(torch.randint(0, 1000, (5,), generator=g2), a)


def test_missing_optimizer_state_raises(tmp_path):
    m = nn.Linear(2, 2)
    checkpoint.save(tmp_path / "n.pt", 0, m)
    with pytest.raises(ValueError, match="no optimiser"):
        checkpoint.load(tmp_path / "n.pt", m, torch.optim.SGD(m.parameters(), lr=0.1))


def test_atomic_failed_save_leaves_nothing(tmp_path, monkeypatch):
    def boom(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path / "x.pt", 0, nn.Linear(2, 2))
    assert list(tmp_path.iterdir()) == []


def test_latest(tmp_path):
    assert checkpoint.latest(tmp_path) is None
    assert checkpoint.latest(tmp_path / "missing") is None
    m = nn.Linear(2, 2)
    for s in (5, 120, 40):
        checkpoint.save(checkpoint.step_path(tmp_path, s), s, m)
    (tmp_path / "checkpoint_999.pt.tmp").write_text("junk")
    assert checkpoint.latest(tmp_path) == tmp_path / "checkpoint_00000120.pt"


def test_rolling_history_per_step_and_records(tmp_path):
    """Per-step history lists are cut to the checkpoint's step on resume; lists marked
    ``False`` (e.g. validations at steps 0..4, five entries at step 4) come back whole."""
    from suits.validation import ValidationLog

    def rolling(losses, log):
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        gen = torch.Generator().manual_seed(0)
        return checkpoint.RollingCheckpoint(tmp_path / "ck.pt", model, opt, gen, 10, 2,
                                            {"losses": (losses, float), **log.history()},
                                            {"seed": 0}), model

    losses, log = [], ValidationLog({"val_x": lambda m: 0.5}, every=1, total=10)
    r, model = rolling(losses, log)
    log.resumed(model, 0)
    for step in range(4):
        losses.append(float(step))
        log(model, step + 1)
    losses.append(9.0)  # a stray entry beyond the checkpoint's step is cut
    r.save(4)
    losses2, log2 = [], ValidationLog({"val_x": lambda m: 0.5}, every=1, total=10)
    r2, model2 = rolling(losses2, log2)
    start, _ = r2.resume()
    assert start == 4 and losses2 == [0.0, 1.0, 2.0, 3.0]
    assert log2.steps == [0, 1, 2, 3, 4] and log2.values["val_x"] == [0.5] * 5
