"""suits.memory through suits.tuning.tune_process: glibc keeps freed memory for reuse (opt-out
by env); importing suits alone leaves glibc's malloc as it is."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from suits import memory

CODE = r"""
import os, sys
import suits, suits.memory, suits.tuning
if sys.argv[1] == "tune":
    suits.tuning.tune_process()
import torch
from suits import memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

x = torch.ones(64 * 2**20)            # 256 MB, far above glibc's mmap threshold
held = rss()
del x
freed = rss()
memory.release()
print(held - freed, held - rss())     # bytes handed back to the kernel by free, by release()
"""


def _returned_bytes(prelude: str = "tune", **env_values: str) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if k != memory.ENV and not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    env.update(env_values)
    r = subprocess.run([sys.executable, "-c", CODE, prelude], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    on_free, on_release = r.stdout.strip().splitlines()[-1].split()
    return int(on_free), int(on_release)


@pytest.mark.skipif(memory._glibc() is None or not sys.platform.startswith("linux")
                    or "LD_PRELOAD" in os.environ, reason="glibc's malloc on Linux only")
def test_tuning_keeps_freed_memory_until_released_unless_opted_out():
    """A freed 256 MB tensor stays mapped in the process after ``tune_process()`` (the next
    allocation reuses its pages) until ``memory.release()``; it goes back to the kernel at once
    with SUITS_RETAIN_FREED_MEMORY=0, when the user set glibc's own malloc tuning, and when
    the process only imported suits."""
    on_free, on_release = _returned_bytes()
    assert on_free < 16 * 2**20 and on_release > 200 * 2**20, (on_free, on_release)
    for opt_out in ({memory.ENV: "0"}, {"MALLOC_TRIM_THRESHOLD_": str(2**27)}):
        on_free, _ = _returned_bytes(**opt_out)
        assert on_free > 200 * 2**20, (opt_out, on_free)
    on_free, _ = _returned_bytes("import-only")
    assert on_free > 200 * 2**20, on_free
    assert memory.retain_freed_memory() is True                      # idempotent, applied here too


def test_opt_out_values(monkeypatch):
    for key in (memory.ENV, "GLIBC_TUNABLES", *memory._USER_TUNING):
        monkeypatch.delenv(key, raising=False)
    assert memory.enabled_by_environment() is True
    for value, expected in (("0", False), ("off", False), ("False", False), ("1", True), ("", True)):
        monkeypatch.setenv(memory.ENV, value)
        assert memory.enabled_by_environment() is expected, value
    monkeypatch.delenv(memory.ENV)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=4")
    assert memory.enabled_by_environment() is False
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.pthread.rseq=0")
    assert memory.enabled_by_environment() is True
