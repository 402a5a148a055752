#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite: lint, types, layers, tests.
# The tests start their own PostgreSQL server (tests/pgserver.py) and real processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check src tests bench
echo "== mypy"; mypy
echo "== import layers"; lint-imports
echo "== pytest"; exec python -m pytest "$@"
