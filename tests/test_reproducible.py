"""Reproducibility: two complete runs of the smoke-size workflow (.test/config/smoke.yaml) with the
same seed, under two data set names (results/test-repro-a/, results/test-repro-b/), give a
byte-identical table2.csv on the CPU (and byte-identical per-method metrics, which pinpoint a
method if the table differs); provenance.json records the seed, the version of every installed
package and the config.

The second run uses ``--cores 1``: snakemake then lowers the training jobs' threads, but the
jobs compute with the configured thread count (resources.*.threads), so the numbers must not
change (torch and elastix results depend on the number of threads).

Two smoke-size runs: about 5-10 minutes on 2 cores. Select with ``-m slow``.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snakemake_run import ROOT, SNAKEMAKE, SMOKE_CONFIG, venv_env, output_of

RUNS = {"test-repro-a": "2", "test-repro-b": "1"}   # data set name: --cores
# the packages whose versions decide the numbers (all installed ones are recorded)
PACKAGES = ("torch", "numpy", "scipy", "SimpleITK-SimpleElastix", "voxelmorph", "neurite",
            "snakemake", "pyamg", "nibabel", "pandas", "scikit-image", "matplotlib", "PyYAML")

pytestmark = [pytest.mark.workflow, pytest.mark.slow]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """Both runs from scratch: ``{dataset: (config, results folder)}``."""
    tmp = tmp_path_factory.mktemp("repro")
    env = venv_env()
    out = {}
    for name, cores in RUNS.items():
        cfg = yaml.safe_load(SMOKE_CONFIG.read_text())
        cfg["dataset"] = name
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        res = ROOT / "results" / name
        shutil.rmtree(res, ignore_errors=True)
        proc = subprocess.run([SNAKEMAKE, "--cores", cores, "--nolock", "--configfile", str(path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=3600, env=env)
        assert proc.returncode == 0, output_of(proc)
        out[name] = (cfg, res)
    yield out
    for _, res in out.values():
        shutil.rmtree(res, ignore_errors=True)


def _holds(recorded, given) -> bool:
    """``recorded`` has every value of ``given``, nested mappings compared key by key (the
    schema may add defaults at any depth, e.g. ``data.phantom.deform_scale``)."""
    if isinstance(given, dict):
        return isinstance(recorded, dict) and all(
            k in recorded and _holds(recorded[k], v) for k, v in given.items())
    return recorded == given


def test_same_seed_gives_byte_identical_table(runs):
    (_, a), (_, b) = runs.values()
    metrics = sorted(p.relative_to(a) for p in (a / "metrics").glob("*.tsv"))
    assert metrics, f"no metrics in {a}"
    differ = [str(m) for m in metrics if (a / m).read_bytes() != (b / m).read_bytes()]
    assert not differ, f"per-method metrics differ between the runs: {differ}"
    table_a, table_b = (a / "table2.csv").read_bytes(), (b / "table2.csv").read_bytes()
    assert table_a == table_b
    assert len(table_a.splitlines()) > 2


def test_provenance_records_seed_versions_and_config(runs):
    for name, (cfg, res) in runs.items():
        record = json.loads((res / "provenance.json").read_text())
        assert record["seed"] == cfg["seed"]
        given = json.loads(json.dumps(cfg, default=str))     # as JSON stores it (str keys)
        for key, value in given.items():             # schema defaults may be added, not changed
            assert _holds(record["config"][key], value), f"{name}: config key {key} recorded wrongly"
        packages = record["packages"]
        for dist in PACKAGES:
            assert packages.get(dist) == md.version(dist), f"{name}: version of {dist}"
        installed = {d.metadata["Name"] for d in md.distributions() if d.metadata["Name"]}
        assert installed <= set(packages), f"unrecorded: {sorted(installed - set(packages))}"
        assert record["torch"]["version"] == md.version("torch")
        assert record["python"]["version"] == sys.version
