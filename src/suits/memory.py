"""Keep freed heap memory in the process (glibc), so that large tensors reuse mapped pages.

PyTorch's CPU allocator takes every tensor from ``malloc`` and gives it back with ``free``. With
glibc's defaults a block of more than 32 MB (every full-resolution FeatCNN activation at the
paper's size is 100-320 MB) is a private ``mmap`` that ``free`` unmaps, so the next activation
of the same size faults in every page again. On a virtual machine a page fault can cost far more
than the kernel's own work (the host backs the page anew), and how much varies from day to day:
on this project's 2-vCPU VM a fresh 317 MB tensor took 21 ms to fill on one day and 550 ms
(almost all of it system time) on another, against 20 ms for a tensor already mapped
(``docs/benchmarks.md``).

:func:`retain_freed_memory` sets glibc's ``M_MMAP_MAX`` to 0 (every block comes from the heap)
and ``M_TRIM_THRESHOLD`` to -1 (``free`` never hands the heap's top back to the kernel; both as
documented in ``mallopt(3)``), which makes ``malloc`` a caching allocator: a freed activation's pages are reused by
the next one. The process keeps its peak heap until it exits, as PyTorch's CUDA caching
allocator keeps device memory. Tensors' values are unaffected.

``import suits`` calls it unless ``SUITS_RETAIN_FREED_MEMORY=0`` is set in the environment.
Where the C library is not glibc (macOS, Windows, musl) it does nothing and returns False.
"""
from __future__ import annotations

import ctypes
import os

__all__ = ["retain_freed_memory", "ENV"]

ENV = "SUITS_RETAIN_FREED_MEMORY"

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def _glibc():
    """The process's C library if it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    version.restype = ctypes.c_char_p
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return libc


def retain_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory for reuse (see the module docstring).

    Returns True if both settings were applied, False where the C library is not glibc or
    refused one of them. Idempotent."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))


def enabled_by_environment() -> bool:
    """False if ``SUITS_RETAIN_FREED_MEMORY`` is ``0`` (or ``false``/``no``/``off``)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")
