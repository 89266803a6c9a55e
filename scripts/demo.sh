#!/usr/bin/env bash
# The main job: train a small CNN on scikit-learn's bundled digits, compress it, measure, report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/prunekit demo "$@"
