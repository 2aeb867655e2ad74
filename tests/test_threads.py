"""suits.threads.at_most: fewer OpenMP threads for a block, restored even on errors."""
from __future__ import annotations

import threading

import pytest
import torch

from suits import threads


def test_at_most_lowers_this_threads_count_and_restores_it():
    current = torch.get_num_threads()
    if current < 2 or threads._omp() is None:
        pytest.skip("needs at least 2 torch threads on an OpenMP runtime")
    other = []
    with threads.at_most(1) as lowered:
        assert lowered is True and torch.get_num_threads() == 1
        t = threading.Thread(target=lambda: other.append(torch.get_num_threads()))
        t.start()
        t.join()
    assert torch.get_num_threads() == current
    assert other == [current]                                          # per thread, not global
    with pytest.raises(RuntimeError, match="inside"):
        with threads.at_most(1):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == current
    with threads.at_most(current + 1) as lowered:                      # never raises the count
        assert lowered is False and torch.get_num_threads() == current
    with pytest.raises(ValueError):
        with threads.at_most(0):
            pass
