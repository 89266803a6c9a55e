#!/usr/bin/env bash
# The whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A plain `pip install .` (no extras) in a fresh venv must give a working CLI. It takes minutes, so it
# reruns only when pyproject.toml or the set of imports in src/ changed since it last passed.
key=$( { cat pyproject.toml; grep -rhoE "^\s*(import|from) [A-Za-z_.]+" src/prunekit | sort -u; } | sha256sum | cut -c1-16)
if [ ! -f ".venv/.plain-install-$key" ] && [ "${PRUNEKIT_SKIP_PLAIN_INSTALL:-0}" != 1 ]; then
  bash scripts/check_plain_install.sh
  rm -f .venv/.plain-install-*
  touch ".venv/.plain-install-$key"
fi
exec .venv/bin/python -m pytest -q "$@"
