"""API latency at volume: 5 million calls in PostgreSQL, p99 of GET /api/runs and
GET /api/runs/{id}/graph over real HTTP against `interlock serve`.

    .venv/bin/python bench/pg_volume.py                       # create, fill, measure, drop
    .venv/bin/python bench/pg_volume.py --calls 500000 --samples 200
    .venv/bin/python bench/pg_volume.py --keep                # leave interlock_bench for psql
    .venv/bin/python bench/pg_volume.py --reuse --keep        # measure an existing interlock_bench

The database `--database` (default interlock_bench) is created on the server of `--url`,
migrated with the project's Alembic migrations, filled in SQL with generate_series (the
secondary indexes are dropped during the fill and rebuilt after, as a bulk load would), then
ANALYZEd, and dropped at the end unless --keep.  Shape of the data:

    calls         --calls, 50 ms apart (5M ≈ 2.9 days), ~300 B content each, one per agent
                  of 200 round-robin; runs of 50 calls, 10 runs interleaved at any time
    edges         one continuation per call but the first of its run (≈ 4.9M)
    guard_events  one per 20 calls
    runs, agents  one row per run (100k at 5M) and per agent

Then each endpoint is requested `--samples` times in turn, one request at a time (the graph
of a different random run each time) and its p50/p99/max reported, with the EXPLAIN of every
query it runs and whether any does a sequential scan.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from proxy.store import db, queries  # noqa: E402

PER_RUN, INTERLEAVE, AGENTS = 50, 10, 200
T0 = "2026-01-01 00:00:00+00"
RUN_OF = f"(g / {PER_RUN * INTERLEAVE}) * {INTERLEAVE} + g % {INTERLEAVE}"  # run number of call g
REQUEST = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + "Summarise the ticket. " * 8 + '"}]}'
RESPONSE = '{"choices":[{"message":{"role":"assistant","content":"' + "The customer asks. " * 5 + '"}}]}'

FILL = [
    ("calls", f"""
INSERT INTO calls (id, started_at, first_byte_at, ended_at, latency_ms, ttfb_ms, provider, operation,
    upstream, method, path, agent, agent_source, run_id, run_hint, api_key_hash, model_requested,
    model_served, stream, status, outcome, finish_reason, input_tokens, output_tokens, cached_tokens,
    reasoning_tokens, input_tokens_counted, cost_usd, error, request_content, response_content,
    content_truncated, flags, tainted_by, depth)
SELECT lpad(to_hex(g), 26, '0'), t, t + interval '50 ms', t + interval '400 ms', 400, 50, 'openai',
    'chat', 'openai', 'POST', '/v1/chat/completions', 'agent-' || (g % {AGENTS}), 'header',
    'run-' || lpad(to_hex({RUN_OF}), 12, '0'), NULL, '0123456789ab', 'gpt-4o-mini',
    'gpt-4o-mini-2024-07-18', false, 200, 'ok', 'stop', 40 + g % 7, 12, 0, 0, 40, 0.0000123, NULL,
    :request, :response, false, '[]', NULL, g % {PER_RUN}
FROM (SELECT g, timestamptz '{T0}' + g * interval '50 ms' AS t FROM generate_series(0, :n - 1) AS g) AS s
"""),
    ("edges", f"""
INSERT INTO edges (run_id, source_call_id, target_call_id, kind, evidence, created_at)
SELECT 'run-' || lpad(to_hex({RUN_OF}), 12, '0'), lpad(to_hex(g - {INTERLEAVE}), 26, '0'),
    lpad(to_hex(g), 26, '0'), 'continuation', '{{"shared_prefix": 3}}', timestamptz '{T0}' + g * interval '50 ms'
FROM generate_series(0, :n - 1) AS g WHERE g % {PER_RUN * INTERLEAVE} >= {INTERLEAVE}
"""),
    ("guard_events", f"""
INSERT INTO guard_events (id, call_id, at, rule, kind, action, reason, data, agent, run_id)
SELECT lpad(to_hex(g), 26, '0') || ':' || '0', lpad(to_hex(g), 26, '0'), timestamptz '{T0}' + g * interval '50 ms',
    'budget', 'budget', 'flag', '80% of the run budget', '{{"spent": 8, "limit": 10}}',
    'agent-' || (g % {AGENTS}), 'run-' || lpad(to_hex({RUN_OF}), 12, '0')
FROM generate_series(0, :n - 1, 20) AS g
"""),
    ("runs", f"""
INSERT INTO runs (id, started_at, last_at, status, calls, agents, tokens, cost_usd, flags)
SELECT 'run-' || lpad(to_hex(r), 12, '0'), min(t), max(t), 'closed', count(*), '["agent-1", "agent-2"]',
    count(*) * 52, count(*) * 0.0000123, '[]'
FROM (SELECT {RUN_OF} AS r, timestamptz '{T0}' + g * interval '50 ms' AS t
      FROM generate_series(0, :n - 1) AS g) AS s GROUP BY r
"""),
    ("agents", f"""
INSERT INTO agents (name, fingerprint, display_name, first_seen, last_seen, calls, tokens)
SELECT 'agent-' || a, NULL, NULL, timestamptz '{T0}', timestamptz '{T0}' + :n * interval '50 ms',
    :n / {AGENTS}, :n / {AGENTS} * 52
FROM generate_series(0, {AGENTS} - 1) AS a
"""),
]


def admin_url(url: str) -> str:
    return make_url(db.async_url(url)).set(database="postgres").render_as_string(hide_password=False)


def bench_url(url: str, database: str) -> str:
    return make_url(db.async_url(url)).set(database=database).render_as_string(hide_password=False)


async def admin(url: str, sql: str) -> None:
    engine = db.make_engine(admin_url(url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(sql))
    await engine.dispose()


async def fill(url: str, n: int) -> dict[str, float]:
    """The tables filled with `n` calls; seconds per step."""
    engine = db.make_engine(url, poolclass=NullPool)
    took: dict[str, float] = {}
    async with engine.begin() as conn:
        indexes = [tuple(r) for r in await conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename IN ('calls', 'edges', 'guard_events') AND indexname LIKE 'ix_%'"))]  # fmt: skip
        for name, _ in indexes:
            await conn.execute(text(f'DROP INDEX "{name}"'))
        await conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        for table, sql in FILL:
            start = time.perf_counter()
            params = {"n": n, "request": REQUEST, "response": RESPONSE}
            await conn.execute(text(sql), {k: v for k, v in params.items() if f":{k}" in sql})
            took[table] = time.perf_counter() - start
        start = time.perf_counter()
        for _, definition in indexes:
            await conn.execute(text(definition))
        took["indexes"] = time.perf_counter() - start
    start = time.perf_counter()
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))
    took["vacuum analyze"] = time.perf_counter() - start
    await engine.dispose()
    return took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(url: str, port: int, scratch: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INTERLOCK_DATABASE_URL": url, "INTERLOCK_PORT": str(port), "INTERLOCK_WAL": "false",
           "INTERLOCK_SPOOL_DIR": scratch, "INTERLOCK_RULES_DIR": scratch, "INTERLOCK_LOG_LEVEL": "warning"}  # fmt: skip
    exe = pathlib.Path(sys.executable).parent / "interlock"
    return subprocess.Popen([str(exe), "serve"], env=env, cwd=scratch)


async def ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"interlock serve exited with {proc.returncode}")
        try:
            if (await client.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("interlock serve did not become ready in 30 s")


async def sample(client: httpx.AsyncClient, paths: list[str]) -> list[float]:
    out = []
    for path in paths:
        start = time.perf_counter()
        response = await client.get(path)
        out.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:200]}")
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


async def explain(url: str, run_id: str) -> dict[str, str]:
    """EXPLAIN of the statements behind the two endpoints, as the app compiles them."""
    engine = db.make_engine(url, poolclass=NullPool)
    captured: list[tuple[str, Any]] = []
    from sqlalchemy import event

    def keep(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "(SELECT")):
            captured.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", keep)
    await queries.list_runs(engine, limit=50)
    await queries.list_runs(engine, status="closed", limit=50)
    await queries.list_runs(engine, agent="agent-7", limit=50)
    await queries.resolve_id(engine, "run", run_id)
    await queries.run_calls(engine, run_id)
    await queries.get_run(engine, run_id)
    await queries.run_edges(engine, run_id)
    event.remove(engine.sync_engine, "before_cursor_execute", keep)
    plans = {}
    async with engine.connect() as conn:
        for statement, parameters in captured:
            rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            plans[" ".join(statement.split())[:160]] = "\n".join(r[0] for r in rows)
    await engine.dispose()
    return plans


async def measure(url: str, n: int, samples: int) -> None:
    rng = random.Random(1)
    runs = (n - 1) // PER_RUN + 1
    run_ids = [f"run-{rng.randrange(runs):012x}" for _ in range(samples)]
    plans = await explain(url, run_ids[0])
    for statement, plan in plans.items():
        flag = "SEQ SCAN " if "Seq Scan" in plan else ""
        print(f"\n{flag}{statement}\n{plan}")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pgvolume-") as scratch:
        proc = serve(url, port, scratch)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                await ready(client, proc)
                await sample(client, ["/api/runs"] * 20 + [f"/api/runs/{r}/graph" for r in run_ids[:20]])  # warm
                endpoints = {
                    "GET /api/runs": ["/api/runs"] * samples,
                    "GET /api/runs?status=closed": ["/api/runs?status=closed"] * samples,
                    "GET /api/runs?agent=agent-N": [f"/api/runs?agent=agent-{rng.randrange(AGENTS)}"
                                                    for _ in range(samples)],
                    "GET /api/runs/{id}/graph (50 calls, 49 edges)": [f"/api/runs/{r}/graph" for r in run_ids],
                }  # fmt: skip
                print(f"\n{n:,} calls, {samples} sequential requests per endpoint, real HTTP to interlock serve")
                for name, paths in endpoints.items():
                    ms = await sample(client, paths)
                    print(f"{name:48} p50 {p(ms, 0.5):6.1f} ms  p99 {p(ms, 0.99):6.1f} ms  max {max(ms):6.1f} ms")
        finally:
            proc.terminate()
            proc.wait(timeout=15)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--database", default="interlock_bench")
    ap.add_argument("--calls", type=int, default=5_000_000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    ap.add_argument("--reuse", action="store_true", help="measure the existing database, do not fill")
    args = ap.parse_args()
    if args.database in ("test", "postgres"):
        raise SystemExit(f"--database {args.database!r}: use a database of its own; it is dropped at the end")
    url = bench_url(args.url, args.database)
    try:
        if not args.reuse:
            await admin(args.url, f'DROP DATABASE IF EXISTS "{args.database}"')
            await admin(args.url, f'CREATE DATABASE "{args.database}"')
            await asyncio.to_thread(db.upgrade, url)
            start = time.perf_counter()
            took = await fill(url, args.calls)
            steps = ", ".join(f"{k} {v:.0f} s" for k, v in took.items())
            print(f"filled {args.calls:,} calls in {time.perf_counter() - start:.0f} s ({steps})")
        await measure(url, args.calls, args.samples)
    finally:
        if not args.keep:
            await admin(args.url, f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
