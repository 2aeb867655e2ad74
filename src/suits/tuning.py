"""Process tuning for programs that run SUITS: one explicit call, made by entry points.

``import suits`` changes nothing in the importing process. Programs whose time goes into SUITS'
kernels (the ``suits`` CLI, the workflow's job scripts, the benchmarks) call
:func:`tune_process` first, before ``torch`` is imported:

* ``OMP_WAIT_POLICY=PASSIVE`` (unless the variable is set): a Gauss-Newton step is about a
  thousand small kernels, each ending in an OpenMP barrier; threads that spin at those barriers
  take the CPU from other jobs on a shared machine and from the second thread of the same
  step. The OpenMP runtime reads the variable once, when torch loads it, so the setting only
  takes effect if torch is not imported yet.
* glibc keeps freed memory for reuse (:func:`suits.memory.retain_freed_memory`, with its
  costs): every full-resolution FeatCNN activation is an allocation of hundreds of MB, and
  without it each one faults all its pages in again. ``SUITS_RETAIN_FREED_MEMORY=0`` or the
  user's own glibc ``malloc`` tuning opts out.

The figures behind both are in ``docs/benchmarks.md``.
"""
from __future__ import annotations

import os
import sys

from suits import memory

__all__ = ["tune_process", "OMP_WAIT_POLICY"]

OMP_WAIT_POLICY = "PASSIVE"


def tune_process(retain_memory: bool | None = None) -> dict[str, bool]:
    """Tune this process for SUITS' CPU work; returns what took effect.

    ``retain_memory``: keep freed memory (None: unless the environment opts out, see
    :func:`suits.memory.enabled_by_environment`). The OpenMP wait policy is set only where the
    user has not set it; ``"omp_wait_policy"`` in the result is True when the process runs
    with the passive policy: set by the user, or set here before torch was imported. Safe to call more than once."""
    preset = "OMP_WAIT_POLICY" in os.environ
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    passive = (os.environ["OMP_WAIT_POLICY"].strip().upper() == OMP_WAIT_POLICY
               and (preset or "torch" not in sys.modules))
    if retain_memory is None:
        retain_memory = memory.enabled_by_environment()
    retained = memory.retain_freed_memory() if retain_memory else False
    return {"omp_wait_policy": passive, "retain_freed_memory": retained}
