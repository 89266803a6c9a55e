#!/usr/bin/env bash
# A plain `pip install .` (no extras) in a fresh venv must give a working CLI: catches an import
# that is used but not declared (click was, once). torch is installed first, pinned like setup.sh,
# so the CPU wheel already in pip's cache is reused instead of a CUDA build being downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q "torch==2.13.0" || "$tmp/venv/bin/python" -m pip install -q "torch>=2.4"
"$tmp/venv/bin/python" -m pip install -q "$repo"
cd "$tmp"  # outside the checkout: the installed package runs, not src/
"$tmp/venv/bin/prunekit" --help >/dev/null
shipped=$("$tmp/venv/bin/python" -c "from prunekit.recipes.loader import builtin_recipe_path; print(builtin_recipe_path('digits_demo'))")
"$tmp/venv/bin/prunekit" validate --quiet "$shipped"
"$tmp/venv/bin/prunekit" validate --quiet "$repo/examples/mlp_2to4.yaml"
echo "plain install: ok"
