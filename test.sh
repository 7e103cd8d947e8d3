#!/usr/bin/env bash
# One command to a green suite: installs test extras into .venv, then ruff, mypy and pytest.
# Tests that need PostgreSQL (127.0.0.1:5432, db `test`) or Redis (127.0.0.1:6379) skip when those
# are absent, unless CI=true, where they are mandatory.  The end-to-end relay suite runs twice:
# on SQLite and on PostgreSQL.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.interlock-test-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
.venv/bin/interlock encodings install >/dev/null  # verifies the encodings shipped in proxy/data/
.venv/bin/ruff check proxy tests bench
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
if [ $# -eq 0 ]; then
  INTERLOCK_TEST_DATABASE=postgres .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_relay.py
fi
