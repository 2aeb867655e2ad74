"""Provenance record of a benchmark run.

``collect`` gathers what is needed to reproduce a run: the seed, the configuration, the
version of every installed distribution, Python, the platform, torch's device and thread
settings, and the git commit of the project. It contains no timestamp, so the same run on the
same machine gives a byte-identical ``provenance.json``; pass ``include_time=True`` to add a
separate ``run_time_utc`` field (which breaks byte-identity by design).
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from suits.atomic import write_text

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def distributions() -> dict[str, str]:
    """``{distribution name: version}`` of every installed distribution, sorted by name."""
    out: dict[str, str] = {}
    for dist in _md.distributions():
        name = dist.metadata["Name"]
        if name and name not in out:
            out[name] = dist.version
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))


def git_info(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit of ``repo`` (default: the project root) and whether tracked files differ from it.

    Returns ``{"commit": None, "dirty": None}`` when git or the repository is unavailable.
    """
    cwd = Path(repo) if repo is not None else PROJECT_ROOT

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)

    try:
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = run("diff", "--quiet", "HEAD", "--").returncode != 0
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def torch_info(device: str | None = None) -> dict[str, Any]:
    """torch version, resolved device (``auto`` -> cuda if available), threads, CUDA/cuDNN."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return {"available": False}
    cuda = bool(torch.cuda.is_available())
    requested = device or "cpu"
    resolved = ("cuda" if cuda else "cpu") if requested == "auto" else requested
    info: dict[str, Any] = {
        "version": torch.__version__,
        "device_requested": requested,
        "device": resolved,
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
    }
    if cuda:
        info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cudnn_version"] = torch.backends.cudnn.version()
    return info


def collect(
    config: Mapping[str, Any],
    seed: int | None,
    *,
    include_time: bool = False,
    repo: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Provenance record of a run: seed, config, package versions, python, platform, torch, git.

    No timestamp unless ``include_time`` (then ``run_time_utc``, ISO 8601, seconds).
    """
    record: dict[str, Any] = {
        "seed": seed,
        "config": dict(config),
        "python": {
            "version": sys.version,
            "implementation": platform.python_implementation(),
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
        },
        "torch": torch_info(config.get("device") if hasattr(config, "get") else None),
        "packages": distributions(),
        "git": git_info(repo),
    }
    if include_time:
        record["run_time_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return record


def dumps(record: Mapping[str, Any]) -> str:
    """Sorted, indented JSON (non-JSON values such as paths or tuples as ``str``/lists)."""
    return json.dumps(record, sort_keys=True, indent=2, default=str, ensure_ascii=False) + "\n"


def write_provenance(path: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``record`` (from ``collect``) to ``path`` as sorted, indented JSON, atomically."""
    return write_text(path, dumps(record))
