"""Fewer OpenMP threads for a block of torch CPU work, without ``torch.set_num_threads``.

:func:`at_most` lowers the OpenMP thread count of the calling thread (``omp_set_num_threads`` of
the OpenMP runtime torch's CPU kernels run on, which ``torch.get_num_threads`` reports) for a
block and restores it afterwards. Used by :class:`suits.solver.TorchMultigrid` for solves made of
many small kernels, where waking a second thread for each costs more than it saves.

Why not ``torch.set_num_threads``: besides OpenMP it sets MKL's thread count and turns MKL's
dynamic threading off, and with torch 2.13.0+cpu (MKL 2024.2) any later call of
``torch.set_num_threads(n >= 2)`` makes batched ``torch.linalg.lu_factor`` /
``torch.linalg.solve`` return invalid pivots ("Intel oneMKL ERROR: Parameter 6 was incorrect on
entry to DLASWP"). A library must not leave that behind in its caller's process.

Where the process has no OpenMP runtime in its global symbol scope, or the one found is not the
one torch reports (another backend or a second runtime; its count is restored at once), the
block runs unchanged. The ``suits`` CLI's ``--threads`` and the workflow's scripts do call
``torch.set_num_threads``, as the user's explicit choice of a process's thread count; they use
no batched LU.
"""
from __future__ import annotations

import contextlib
import ctypes
from typing import Iterator

import torch

__all__ = ["at_most"]

_state: dict[str, object] = {}


def _omp():
    """``(omp_set_num_threads, omp_get_max_threads)`` from the process, or None."""
    if "omp" not in _state:
        try:
            lib = ctypes.CDLL(None)
            set_threads, get_threads = lib.omp_set_num_threads, lib.omp_get_max_threads
        except (OSError, AttributeError, TypeError):
            _state["omp"] = None
        else:
            set_threads.argtypes, set_threads.restype = (ctypes.c_int,), None
            get_threads.argtypes, get_threads.restype = (), ctypes.c_int
            _state["omp"] = (set_threads, get_threads)
    return _state["omp"]


@contextlib.contextmanager
def at_most(n: int) -> Iterator[bool]:
    """Run the block with at most ``n`` (>= 1) intra-op threads for this thread's torch CPU
    kernels; yields whether the count was lowered. Values are unaffected beyond the float
    rounding of parallel reductions."""
    if int(n) < 1:
        raise ValueError(f"need n >= 1 threads, got {n}")
    current = torch.get_num_threads()
    omp = _omp()
    if omp is None or int(n) >= current:
        yield False
        return
    set_threads, get_threads = omp
    previous = get_threads()
    set_threads(int(n))
    if torch.get_num_threads() != int(n):       # not the runtime torch's kernels use
        set_threads(previous)
        _state["omp"] = None
        yield False
        return
    try:
        yield True
    finally:
        set_threads(previous)
