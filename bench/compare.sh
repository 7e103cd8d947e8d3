#!/usr/bin/env bash
# Interlock slotted into the shared harness (../shared/bench/compare.py) as a third target, beside
# direct, LiteLLM (when its venv exists: bash ../shared/bench/setup.sh) and the thin aiohttp floor.
# Extra arguments go to compare.py, e.g.:  bench/compare.sh --rounds 5 --scenarios all
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared/bench}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
INTERLOCK_BIN="${INTERLOCK_BIN:-$ROOT/.venv/bin/interlock}"
WORK="${BENCH_DIR:-/tmp/bench}/interlock"
PORT="${INTERLOCK_BENCH_PORT:-4200}"

rm -rf "$WORK" && mkdir -p "$WORK/rules" "$WORK/spool"
ENV="INTERLOCK_UPSTREAM_OPENAI={upstream} INTERLOCK_UPSTREAM_ANTHROPIC={upstream}"
ENV="$ENV INTERLOCK_DATABASE_URL=sqlite+aiosqlite:///$WORK/bench.db INTERLOCK_RULES_DIR=$WORK/rules"
ENV="$ENV INTERLOCK_SPOOL_DIR=$WORK/spool INTERLOCK_LOG_LEVEL=warning"
INTERLOCK_DATABASE_URL="sqlite+aiosqlite:///$WORK/bench.db" "$INTERLOCK_BIN" db upgrade >/dev/null \
  || echo "warning: interlock db upgrade failed; serving anyway" >&2

ARGS=(
  --target "interlock=http://127.0.0.1:$PORT"
  --target-cmd "interlock=exec env $ENV $INTERLOCK_BIN serve --host 127.0.0.1 --port {port}"
  --target "thin=http://127.0.0.1:4100"
  --target-cmd "thin=exec $PY {bench}/passthrough_proxy.py --port {port} --upstream {upstream}"
)
if [ ! -x "${BENCH_DIR:-/tmp/bench}/venv-litellm/bin/litellm" ]; then
  echo "LiteLLM venv absent (bash $SHARED/setup.sh creates it): running without LiteLLM" >&2
  ARGS+=(--no-litellm)
fi
exec "$PY" "$SHARED/compare.py" "${ARGS[@]}" "$@"
