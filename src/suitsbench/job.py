"""The start of every workflow job script: its log, then the process tuning of SUITS.

Each script under ``workflow/scripts/`` begins with::

    from suitsbench.job import start
    start(snakemake)

before it imports anything else, so that :func:`suits.tuning.tune_process` runs before torch
is loaded (the OpenMP wait policy is read when torch loads its runtime). Importing this module
loads neither torch nor numpy.

The other helpers hold what several scripts share: the job's thread count (:func:`threads`),
its device (:func:`device`) and the name of its rolling checkpoint (:func:`checkpoint_path`).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from suits.tuning import tune_process

__all__ = ["start", "threads", "device", "checkpoint_path"]


def start(smk: Any) -> dict[str, bool]:
    """Send the job's stdout and stderr to its log (``smk.log[0]``, truncated) and tune the
    process (:func:`suits.tuning.tune_process`); returns what the tuning applied, which is
    also written to the log."""
    log = open(smk.log[0], "w", buffering=1)
    sys.stdout = sys.stderr = log
    applied = tune_process()
    print("process tuning: " + ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied


def threads(smk: Any, kind: str, torch_threads: bool = True) -> int:
    """The job's thread count: ``smk.threads`` or the config's ``resources.<kind>.threads``,
    whichever is larger (snakemake lowers a job's threads to ``--cores``, and the numbers
    depend on the thread count). With ``torch_threads`` also ``torch.set_num_threads``."""
    n = max(smk.threads, smk.config["resources"][kind]["threads"])
    if torch_threads:
        import torch

        torch.set_num_threads(n)
    return n


def device(name: str) -> str:
    """``"auto"``: ``"cuda"`` if CUDA is available, else ``"cpu"``; any other name unchanged."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def checkpoint_path(folder: str | os.PathLike, name: str, settings: Mapping[str, Any],
                    files: Iterable[str | os.PathLike]) -> Path:
    """``{folder}/{name}-{hash}.pt``, ``hash`` the first 16 hex digits of the SHA-256 of the
    settings (JSON, sorted keys) and the bytes of ``files``: a rerun with the same settings and
    inputs finds its rolling checkpoint, a changed one starts afresh. Creates ``folder``."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for f in files:
        h.update(Path(f).read_bytes())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{h.hexdigest()[:16]}.pt"
