#!/usr/bin/env bash
# Create (or update) the project's pip environment in .venv: the CPU build of torch from
# its pin, then the exact pins of requirements.txt and requirements-nodeps.txt, then this
# project in editable mode.
# Usage: bash tools/setup.sh            (idempotent; re-running is quick)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first and alone: the pinned CPU build, so that nothing later pulls a CUDA build
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -r requirements.txt
# antspyx and convexadam without their declared dependencies (why: requirements-nodeps.txt)
.venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
# SimpleITK-SimpleElastix provides the module SimpleITK; plain SimpleITK beside it would shadow it
if .venv/bin/python -m pip show --quiet SimpleITK >/dev/null 2>&1; then
    echo "setup: plain SimpleITK is installed beside SimpleITK-SimpleElastix; remove it: .venv/bin/pip uninstall SimpleITK" >&2
    exit 1
fi
.venv/bin/python -c "import SimpleITK, torch, suits, ants, convexAdam; assert hasattr(SimpleITK, 'ElastixImageFilter'), 'SimpleITK lacks elastix'"
echo "setup: .venv ready (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)'))"
