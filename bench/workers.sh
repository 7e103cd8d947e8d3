#!/usr/bin/env bash
# 1 worker vs 2 workers (`interlock serve --workers N`), same load, interleaved in one run of
# bench/run.py; not pinned, so the two workers can use both cores.  Needs PostgreSQL and Redis
# (more than one worker needs INTERLOCK_REDIS_URL; SQLite would serialise the two writers).
#   bench/workers.sh [run.py options]     e.g. --rounds 1 --scale 0.3 for a smoke run
# Environment: BENCH_PG (default postgresql://postgres@127.0.0.1:5432/workers, created if missing),
# BENCH_REDIS (default redis://127.0.0.1:6379/3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG="${BENCH_PG:-postgresql://postgres@127.0.0.1:5432/workers}"
REDIS="${BENCH_REDIS:-redis://127.0.0.1:6379/3}"
createdb -h 127.0.0.1 -U postgres "${PG##*/}" 2>/dev/null || true
exec "$ROOT/bench/run.sh" --no-pin --rules-dir "$ROOT/rules" --soak 0 \
  --scenarios ns_c16,ns_c64,stream_c16,big_c4 \
  --proxy 'w1={interlock} serve --host 127.0.0.1 --port {port} --workers 1' \
  --proxy 'w2={interlock} serve --host 127.0.0.1 --port {port} --workers 2' \
  --proxy-env "INTERLOCK_REDIS_URL=$REDIS" --proxy-env "INTERLOCK_DATABASE_URL=$PG" "$@"
