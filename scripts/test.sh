#!/usr/bin/env bash
# The whole test suite: .venv (torch 2.13 CPU), then the torchvision subset in .venv-tv
# (torch 2.14.1 + torchvision 0.29.1, scripts/setup_torchvision.sh), one model per family.
# With arguments, only pytest in .venv with those arguments. PRUNEKIT_SKIP_TORCHVISION=1 skips .venv-tv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -gt 0 ] || [ "${PRUNEKIT_SKIP_TORCHVISION:-0}" = 1 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
status=0
.venv/bin/python -m pytest -q || status=$?
start=$SECONDS
bash scripts/setup_torchvision.sh
.venv-tv/bin/python -m pytest -q -p no:cacheprovider tests/dependency/test_zoo_torchvision.py || status=$?
echo "torchvision part (setup + tests): $((SECONDS - start)) s"
exit $status
