#!/usr/bin/env bash
# One command from clone to a running proxy: creates .venv, installs Interlock (its tokenizer data
# ships with it), applies migrations and serves on 127.0.0.1:8080 with SQLite (./interlock.db).
# Extra arguments go to `interlock serve` (e.g. ./run.sh --port 9000).
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
step() { printf 'run.sh: %s\n' "$*" >&2; }
if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
stamp=.venv/.interlock-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  step "installing Interlock and its dependencies into .venv (about a minute the first time; log in .venv/install.log)"
  if ! { .venv/bin/python -m pip install -q --upgrade pip && .venv/bin/python -m pip install -q -e .; } \
      >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    step "pip install failed (output above, also in .venv/install.log)"
    exit 1
  fi
  touch "$stamp"
else
  step "Interlock already installed in .venv"
fi
step "migrating the database (interlock db upgrade)"
.venv/bin/interlock db upgrade >&2
step "starting the proxy (interlock serve${*:+ $*}); \`.venv/bin/interlock doctor\` checks the set-up"
exec .venv/bin/interlock serve "$@"
