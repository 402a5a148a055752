#!/usr/bin/env bash
# Set up everything the tests need, then run the whole suite: lint, types, layers, tests.
# The tests start their own PostgreSQL server (tests/pgserver.py) and real processes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"; ruff check src tests bench
echo "== ruff format"; ruff format --check src tests bench
echo "== mypy"; mypy
echo "== import layers"; lint-imports
# Two test processes (the machine has two cores; most tests wait on real processes and
# servers). A file's tests stay in one process: its module fixtures (a Slurm cluster, a second
# Unix account) are made once. Each process starts its own PostgreSQL server.
echo "== pytest"; exec python -m pytest -n 2 --dist loadfile "$@"
