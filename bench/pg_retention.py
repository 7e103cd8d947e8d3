"""Retention at volume: how fast a sweep clears content and deletes records in PostgreSQL, and
what the writer does meanwhile.

    .venv/bin/python bench/pg_retention.py                      # 1M old calls, 1 writer process
    .venv/bin/python bench/pg_retention.py --calls 200000 --batch-size 5000

In a schema of its own in `--url`'s database (dropped afterwards): `--calls` old calls with
their edges, guard events and runs are made with bench/pg_volume.py's generate_series fill.
A writer process (`SqlSink`, COPY, the writer's batches of 128 calls with 3 KB content) writes
back to back; after `--baseline` seconds alone, one sweep runs in this process with content
kept for 30 days (all old calls lose their content) and records for 30 days + half their span
(the older half is deleted).  Reported: the sweep's rows per second, and the writer's calls per
second and slowest batch alone and during the sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import pathlib
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import pg_volume  # noqa: E402
import pg_write  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from proxy.store import db  # noqa: E402
from proxy.store.retention import DAY_S, Retention, RetentionPolicy  # noqa: E402

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
T0 = 1_767_225_600.0  # pg_volume.T0 as epoch seconds
STEP_S = 0.05


def writer(url: str, schema: str, stop: Any, out: Any) -> None:
    records = pg_write.build(40_000, 7, 2048, 1024, start=time.time())

    async def run() -> list[tuple[float, float, int]]:
        engine = db.make_engine(url, connect_args={"server_settings": {"search_path": schema}})
        sink = db.SqlSink(engine)
        batches = [records[i : i + 256] for i in range(0, len(records), 256)]
        done: list[tuple[float, float, int]] = []  # (end, seconds, calls) per batch
        for n in range(1_000_000):  # passes over the same records, with new ids each pass
            for batch in batches:
                if stop.is_set():
                    await engine.dispose()
                    return done
                for record in batch:
                    for call in record.calls:
                        call["id"] = f"{n:04x}{call['id'][4:]}"
                        for k, event in enumerate(record.guard_events):
                            event["id"], event["call_id"] = f"{call['id']}:{k}", call["id"]
                start = time.time()
                await sink.write(batch)
                done.append((time.time(), time.time() - start, len(batch) // 2))
        await engine.dispose()
        return done

    out.put(asyncio.run(run()))


def window(done: list[tuple[float, float, int]], start: float, end: float) -> tuple[float, float]:
    """Calls per second and the slowest batch (ms) of batches that ended within [start, end]."""
    inside = [d for d in done if start <= d[0] <= end]
    calls = sum(n for _, _, n in inside)
    return calls / (end - start), max((s for _, s, _ in inside), default=0.0) * 1000


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=PG)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=2000, help="retention batch (calls per transaction)")
    ap.add_argument("--pause", type=float, default=0.05, help="seconds between retention batches")
    ap.add_argument("--baseline", type=float, default=5.0, help="seconds of writing alone first")
    args = ap.parse_args()
    schema = f"bench_retention_{uuid.uuid4().hex[:8]}"
    await pg_write.schema_admin(args.url, f'CREATE SCHEMA "{schema}"')
    try:
        url_engine = db.make_engine(args.url, connect_args={"server_settings": {"search_path": schema}})
        await db.upgrade_engine(url_engine)
        await url_engine.dispose()
        took = await fill(args.url, schema, args.calls)
        print(f"filled {args.calls:,} old calls in {took:.0f} s")
        span_days = args.calls * STEP_S / DAY_S
        now = T0 + args.calls * STEP_S + 30 * DAY_S
        policy = RetentionPolicy(metadata_days=30 + span_days / 2, content_days=30,
                                 batch_size=args.batch_size, pause_s=args.pause)  # fmt: skip
        engine = db.make_engine(args.url, connect_args={"server_settings": {"search_path": schema}})
        ctx = mp.get_context("fork")
        stop, out = ctx.Event(), ctx.Queue()
        proc = ctx.Process(target=writer, args=(args.url, schema, stop, out))
        proc.start()
        await asyncio.sleep(3.0)  # the writer builds its records
        base_start = time.time()
        await asyncio.sleep(args.baseline)
        sweep_start = time.time()
        swept = await Retention(engine, policy).sweep(now)
        sweep_end = time.time()
        stop.set()
        done = out.get()
        proc.join()
        await engine.dispose()
        seconds = sweep_end - sweep_start
        alone, alone_max = window(done, base_start, sweep_start)
        during, during_max = window(done, sweep_start, sweep_end)
        print(f"sweep: {swept.content_cleared:,} contents cleared, {swept.calls_deleted:,} calls "
              f"+ {swept.edges_deleted:,} edges + {swept.guard_events_deleted:,} guard events + "
              f"{swept.runs_deleted:,} runs deleted in {seconds:.1f} s, {swept.batches} batches of ≤ {args.batch_size}")
        print(f"       content: {swept.content_cleared / swept.content_s:,.0f} calls cleared/s ({swept.content_s:.1f} s); "
              f"records: {swept.calls_deleted / swept.records_s:,.0f} calls deleted/s with their edges and events "
              f"({swept.records_s:.1f} s); pause {args.pause * 1000:.0f} ms between batches included")
        print(f"writer alone:        {alone:7,.0f} calls/s, slowest batch {alone_max:6.0f} ms")
        print(f"writer during sweep: {during:7,.0f} calls/s, slowest batch {during_max:6.0f} ms")
    finally:
        await pg_write.schema_admin(args.url, f'DROP SCHEMA "{schema}" CASCADE')


async def fill(url: str, schema: str, n: int) -> float:
    engine = db.make_engine(url, poolclass=NullPool, connect_args={"server_settings": {"search_path": schema}})
    start = time.perf_counter()
    async with engine.begin() as conn:
        for _table, sql in pg_volume.FILL:
            params = {"n": n, "request": pg_volume.REQUEST, "response": pg_volume.RESPONSE}
            await conn.execute(text(sql), {k: v for k, v in params.items() if f":{k}" in sql})
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("calls", "edges", "guard_events", "runs"):
            await conn.execute(text(f"ANALYZE {table}"))
    await engine.dispose()
    return time.perf_counter() - start


if __name__ == "__main__":
    asyncio.run(main())
