#!/usr/bin/env bash
# One command: direct vs Interlock, same load, one run.  Options: bench/run.sh --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
exec "$PY" "$ROOT/bench/run.py" "$@"
