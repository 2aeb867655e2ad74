"""suits.memory: importing suits makes glibc keep freed memory for reuse (opt-out by env)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from suits import memory

CODE = r"""
import os
import suits, torch

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

x = torch.ones(64 * 2**20)            # 256 MB, far above glibc's mmap threshold
held = rss()
del x
print(held - rss())                   # bytes handed back to the kernel by free
"""


def _returned_bytes(env_value: str | None) -> int:
    import os

    env = {k: v for k, v in os.environ.items() if k != memory.ENV}
    if env_value is not None:
        env[memory.ENV] = env_value
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(memory._glibc() is None or not sys.platform.startswith("linux"),
                    reason="glibc on Linux only")
def test_import_keeps_freed_memory_unless_opted_out():
    """A freed 256 MB tensor stays mapped in the process after ``import suits`` (the next
    allocation reuses its pages) and goes back to the kernel with SUITS_RETAIN_FREED_MEMORY=0."""
    assert _returned_bytes(None) < 16 * 2**20
    assert _returned_bytes("0") > 200 * 2**20
    assert memory.retain_freed_memory() is True                      # idempotent, applied here too


def test_opt_out_values():
    import os

    old = os.environ.get(memory.ENV)
    try:
        for value, expected in (("0", False), ("off", False), ("False", False), ("1", True), ("", True)):
            os.environ[memory.ENV] = value
            assert memory.enabled_by_environment() is expected, value
        os.environ.pop(memory.ENV)
        assert memory.enabled_by_environment() is True
    finally:
        if old is None:
            os.environ.pop(memory.ENV, None)
        else:
            os.environ[memory.ENV] = old
