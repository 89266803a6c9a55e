#!/usr/bin/env bash
# Create .venv-tv (once): torch 2.14.1 + torchvision 0.29.1 + prunekit, for the torchvision zoo tests.
# A second venv because torchvision from PyPI does not import beside the CPU torch 2.13 of .venv;
# this pair is the one that installs here (a CUDA build of torch, ~5.5 GB, it runs on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-tv/bin/python ]; then
  "$PY" -m venv .venv-tv
fi
stamp=.venv-tv/.prunekit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv-tv/bin/python -m pip install -q --upgrade pip
  .venv-tv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv-tv/bin/python -m pip install -q -e ".[test,torchvision]"
  touch "$stamp"
fi
