#!/usr/bin/env bash
# The whole test suite: .venv (torch 2.13 CPU), a plain `pip install .` check, then the torchvision
# subset in .venv-tv (torch 2.14.1 + torchvision 0.29.1, scripts/setup_torchvision.sh), one model per family.
# With arguments, only pytest in .venv with those arguments.
# PRUNEKIT_SKIP_TORCHVISION=1 skips .venv-tv; PRUNEKIT_SKIP_PLAIN_INSTALL=1 skips the plain install.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
status=0
# A plain `pip install .` (no extras) in a fresh venv must give a working CLI. It takes minutes, so it
# reruns only when pyproject.toml or the set of imports in src/ changed since it last passed.
key=$( { cat pyproject.toml; grep -rhoE "^\s*(import|from) [A-Za-z_.]+" src/prunekit | sort -u; } | sha256sum | cut -c1-16)
if [ ! -f ".venv/.plain-install-$key" ] && [ "${PRUNEKIT_SKIP_PLAIN_INSTALL:-0}" != 1 ]; then
  start=$SECONDS
  if bash scripts/check_plain_install.sh; then
    rm -f .venv/.plain-install-*
    touch ".venv/.plain-install-$key"
  else
    status=1
  fi
  echo "plain install check: $((SECONDS - start)) s"
fi
.venv/bin/python -m pytest -q || status=$?
if [ "${PRUNEKIT_SKIP_TORCHVISION:-0}" != 1 ]; then
  start=$SECONDS
  bash scripts/setup_torchvision.sh
  .venv-tv/bin/python -m pytest -q -p no:cacheprovider tests/dependency/test_zoo_torchvision.py || status=$?
  echo "torchvision part (setup + tests): $((SECONDS - start)) s"
fi
exit $status
