"""What the workflow tests share: the project root, the venv's snakemake, the test configs,
an environment that finds the venv's tools, and the tail of a failed run for messages."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake") if (BIN / "snakemake").exists() else "snakemake"
CI_CONFIG = ROOT / ".test" / "config" / "ci.yaml"        # the run whose table is checked
SMOKE_CONFIG = ROOT / ".test" / "config" / "smoke.yaml"  # the mechanics tests start from it


def venv_env(**extra: str) -> dict[str, str]:
    """os.environ with the venv's bin/ first on PATH (snakemake's jobs call its python)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def output_of(proc: subprocess.CompletedProcess, n: int = 6000) -> str:
    return (f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-n:]}\n"
            f"--- stderr\n{proc.stderr[-n:]}")
