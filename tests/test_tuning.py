"""Process tuning is one explicit call (suits.tuning.tune_process) made by entry points: the
``suits`` program, every workflow job (suitsbench.job.start) and the benchmarks; importing the
packages changes nothing (the allocator side: tests/test_memory.py)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env_values: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_values)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1]


def test_import_changes_no_environment():
    out = _run("import os; before = dict(os.environ); import suits, suits.tuning, suitsbench.job; "
               "print(dict(os.environ) == before, os.environ.get('OMP_WAIT_POLICY'))")
    assert out == "True None"


def test_tune_process_sets_passive_wait_policy_before_torch_only():
    out = _run("import os, sys; from suits.tuning import tune_process; r = tune_process(); "
               "print(os.environ['OMP_WAIT_POLICY'], r['omp_wait_policy'], 'torch' in sys.modules)")
    assert out == "PASSIVE True False"
    # torch already loaded: the runtime has read its policy, so the call reports no effect
    out = _run("import os, torch; from suits.tuning import tune_process; "
               "print(tune_process(retain_memory=False)['omp_wait_policy'])")
    assert out == "False"
    # the user's own setting stays
    out = _run("import os; from suits.tuning import tune_process; r = tune_process(); "
               "print(os.environ['OMP_WAIT_POLICY'], r['omp_wait_policy'])", OMP_WAIT_POLICY="ACTIVE")
    assert out == "ACTIVE False"


def test_suits_program_tunes_its_process():
    out = _run("import os\nfrom suits.__main__ import main\ntry:\n    main(['--help'])\n"
               "except SystemExit:\n    pass\nprint(os.environ.get('OMP_WAIT_POLICY'))")
    assert out == "PASSIVE"


def test_job_start_logs_and_tunes(tmp_path):
    """suitsbench.job.start sends the job's output to its log and tunes the process, and
    importing suitsbench.job loads neither torch nor numpy (so it can come first)."""
    log = tmp_path / "job.log"
    code = ("import os, sys\nfrom suitsbench.job import start\n"
            "heavy = [m for m in ('torch', 'numpy') if m in sys.modules]\n"
            "from types import SimpleNamespace\n"
            f"applied = start(SimpleNamespace(log=[{str(log)!r}]))\n"
            "print('hello from the job')\n"
            "sys.__stdout__.write(f\"{heavy} {os.environ['OMP_WAIT_POLICY']} {applied['omp_wait_policy']}\\n\")\n")
    assert _run(code) == "[] PASSIVE True"
    text = log.read_text()
    assert "process tuning: omp_wait_policy=True" in text and "hello from the job" in text


SCRIPTS = sorted((ROOT / "workflow" / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_every_job_script_starts_with_the_job_start(script):
    """The first statements of every workflow script (after its docstring) are
    ``from suitsbench.job import start`` and ``start(snakemake)``: nothing is imported before
    the process is tuned, and every job is tuned."""
    body = ast.parse(script.read_text()).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    i = 0
    while isinstance(body[i], ast.Import) and all(a.name in ("csv", "io", "json", "os", "sys")
                                                  for a in body[i].names):
        i += 1                                  # a few stdlib modules that load no runtime
    first, second = body[i], body[i + 1]
    assert isinstance(first, ast.ImportFrom) and first.module == "suitsbench.job", script.name
    call = second.value if isinstance(second, (ast.Expr, ast.Assign)) else None
    assert (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "start"
            and getattr(call.args[0], "id", None) == "snakemake"), script.name


def test_job_start_truncates_the_log(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("old run\n")
    code = ("import sys\nfrom types import SimpleNamespace\nfrom suitsbench.job import start\n"
            f"start(SimpleNamespace(log=[{str(log)!r}]))\nprint('new run')\n"
            "sys.__stdout__.write('done\\n')\n")
    assert _run(code) == "done"
    assert "old run" not in log.read_text() and "new run" in log.read_text()
