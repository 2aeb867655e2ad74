"""Shared fixtures. Real data lives beside the project root in ../shared/data; tests that need it
skip with a clear message where it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
PROSTATE = SHARED_DATA / "prostate-mr-us"


@pytest.fixture
def prostate_dir() -> Path:
    if not PROSTATE.is_dir():
        pytest.skip(f"real data not found at {PROSTATE} (place ../shared/data beside the project)")
    return PROSTATE


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
