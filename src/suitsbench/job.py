"""The start of every workflow job script: its log, then the process tuning of SUITS.

Each script under ``workflow/scripts/`` begins with::

    from suitsbench.job import start
    start(snakemake)

before it imports anything else, so that :func:`suits.tuning.tune_process` runs before torch
is loaded (the OpenMP wait policy is read when torch loads its runtime). Importing this module
loads neither torch nor numpy.
"""
from __future__ import annotations

import sys
from typing import Any

from suits.tuning import tune_process

__all__ = ["start"]


def start(smk: Any) -> dict[str, bool]:
    """Send the job's stdout and stderr to its log (``smk.log[0]``, truncated) and tune the
    process (:func:`suits.tuning.tune_process`); returns what the tuning applied, which is
    also written to the log."""
    log = open(smk.log[0], "w", buffering=1)
    sys.stdout = sys.stderr = log
    applied = tune_process()
    print("process tuning: " + ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied
