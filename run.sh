#!/usr/bin/env bash
# One command from clone to a running proxy: creates .venv, installs Interlock and its offline
# tokenizer data, applies migrations and serves on 127.0.0.1:8080 with SQLite (./interlock.db).
# Extra arguments go to `interlock serve` (e.g. ./run.sh --port 9000).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.interlock-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e .
  touch "$stamp"
fi
.venv/bin/interlock encodings install
.venv/bin/interlock db upgrade
exec .venv/bin/interlock serve "$@"
