"""Tests for suitsbench.provenance."""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path

from suitsbench import provenance

CONFIG = {"dataset": "phantom", "seed": 3, "device": "cpu", "preprocess": {"shape": (8, 8, 8)}}


def test_collect_contents():
    rec = provenance.collect(CONFIG, seed=3)
    assert rec["seed"] == 3
    assert rec["config"]["dataset"] == "phantom"
    assert rec["packages"]["numpy"] == importlib.metadata.version("numpy")
    assert "torch" in rec["packages"] and rec["torch"]["device"] == "cpu"
    assert rec["torch"]["num_threads"] >= 1
    assert rec["python"]["version"]
    assert "run_time_utc" not in rec
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=provenance.PROJECT_ROOT, capture_output=True, text=True
    )
    if head.returncode == 0:
        assert rec["git"]["commit"] == head.stdout.strip()
        assert isinstance(rec["git"]["dirty"], bool)


def test_auto_device_resolves():
    rec = provenance.collect({"device": "auto"}, seed=0)
    assert rec["torch"]["device"] in ("cpu", "cuda")
    assert rec["torch"]["device_requested"] == "auto"


def test_git_info_outside_repo(tmp_path: Path):
    assert provenance.git_info(tmp_path) == {"commit": None, "dirty": None}


def test_write_is_sorted_and_byte_identical(tmp_path: Path):
    a, b = tmp_path / "a.json", tmp_path / "sub" / "b.json"
    provenance.write_provenance(a, provenance.collect(CONFIG, seed=3))
    provenance.write_provenance(b, provenance.collect(CONFIG, seed=3))
    assert a.read_bytes() == b.read_bytes()
    text = a.read_text()
    assert text.endswith("\n") and text.startswith("{\n  ")
    loaded = json.loads(text)
    assert list(loaded) == sorted(loaded)
    assert loaded["config"]["preprocess"]["shape"] == [8, 8, 8]
    assert list(tmp_path.glob("**/*.tmp")) == []


def test_include_time_is_opt_in():
    rec = provenance.collect(CONFIG, seed=1, include_time=True)
    assert rec["run_time_utc"].endswith("+00:00")
