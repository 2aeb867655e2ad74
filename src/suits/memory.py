"""Keep freed heap memory in the process (glibc), so that large tensors reuse mapped pages.

PyTorch's CPU allocator takes every tensor from ``malloc`` and gives it back with ``free``. With
glibc's defaults a block of more than 32 MB (every full-resolution FeatCNN activation at the
paper's size is 100-320 MB) is a private ``mmap`` that ``free`` unmaps, so the next activation
of the same size faults in every page again. On a virtual machine a page fault can cost far more
than the kernel's own work; the figures are in ``docs/benchmarks.md``.

:func:`retain_freed_memory` sets glibc's ``M_MMAP_MAX`` to 0 (blocks come from the heap) and
``M_TRIM_THRESHOLD`` to -1 (``free`` never hands the heap's top back to the kernel; both as
documented in ``mallopt(3)``), which makes ``malloc`` a caching allocator: a freed activation's
pages are reused by the next one. Tensors' values are unaffected. The price:

* the process keeps its peak heap until it exits or calls :func:`release`, and the heap
  fragments somewhat (a higher peak of a training step at the paper's size:
  ``docs/benchmarks.md``);
* it applies to everything in the process that uses ``malloc`` (numpy too), and to processes
  forked from it;
* it covers the main thread and blocks up to 64 MB on other threads: glibc gives every other
  thread its own arena of at most 64 MB, and a larger block there is still mapped and unmapped
  (the CLI, the workflow's scripts and the benchmarks compute on the main thread).

Nothing calls it on import: :func:`suits.tuning.tune_process`, the explicit tuning call of the
CLI, the workflow's scripts and the benchmarks, calls it unless ``SUITS_RETAIN_FREED_MEMORY=0``
is set, or the user has tuned glibc's ``malloc`` already (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_
THRESHOLD_`` or ``glibc.malloc`` in ``GLIBC_TUNABLES``). Where the C library is not glibc
(macOS, Windows, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import os

__all__ = ["retain_freed_memory", "release", "enabled_by_environment", "ENV"]

ENV = "SUITS_RETAIN_FREED_MEMORY"
_USER_TUNING = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def _glibc():
    """The process's C library if it is glibc (it has ``gnu_get_libc_version``), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only)
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return libc


def retain_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse (see the module docstring).

    Returns True if both settings were applied, False where the C library is not glibc or
    refused one of them. Idempotent."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))


def release() -> bool:
    """Give the kept free memory back to the kernel now (``malloc_trim(0)``); the setting stays.
    Returns whether any memory was released (False where the C library is not glibc)."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def enabled_by_environment() -> bool:
    """False if ``SUITS_RETAIN_FREED_MEMORY`` is ``0`` (or ``false``/``no``/``off``) or the
    user tuned glibc's ``malloc`` through its own environment variables."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(k in os.environ for k in _USER_TUNING):
        return False
    return "glibc.malloc." not in os.environ.get("GLIBC_TUNABLES", "")
