"""PostgreSQL write rate: calls with content recorded per second by N processes, each writing
through its own `SqlSink` (the writer's sink) in the writer's batches, into one database.

    .venv/bin/python bench/pg_write.py                          # 4 processes, COPY (default)
    .venv/bin/python bench/pg_write.py --copy-min-rows 0        # the same with executemany INSERTs
    .venv/bin/python bench/pg_write.py --processes 1 --calls 40000

Each process builds its records first (as `bench/writer_micro.py` does: a call record with
`--request-bytes` / `--response-bytes` of content under policy `full`, then the agent's and
run's totals record), waits at a barrier, then writes batches of `Settings.writer_batch_size`
records back to back.  The rate is all calls / (last process done − barrier).  Workers of
`interlock serve` don't exist yet: this is the write path those workers would share, at its
maximum.  The tables live in a schema of their own in `--url`'s database, dropped afterwards.
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

from sqlalchemy import text  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from proxy.store import db  # noqa: E402
from proxy.store.rows import Record  # noqa: E402

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def build(n: int, worker: int, request_bytes: int, response_bytes: int, start: float = 1.7e9) -> list[Record]:
    import writer_micro  # bench/ is on sys.path when this file runs

    records = writer_micro.build_records(n, agents=8, runs=50, start=start + worker * 1e5)
    req, resp = "q" * request_bytes, "a" * response_bytes
    for record in records:
        for row in record.calls:
            row["id"] = f"w{worker}{row['id']}"[:26]
            row["request_content"], row["response_content"] = req, resp
        for row in record.guard_events:
            row["id"] = f"w{worker}{row['id']}"
        for row in (*record.agents, *record.runs):
            key = "name" if "name" in row else "id"
            row[key] = f"{row[key]}-w{worker}"
    return records


def worker(args: argparse.Namespace, schema: str, n: int, index: int, barrier: Any, out: Any) -> None:
    records = build(n, index, args.request_bytes, args.response_bytes)

    async def run() -> tuple[float, float]:
        engine = db.make_engine(args.url, connect_args={"server_settings": {"search_path": schema}})
        sink = db.SqlSink(engine, copy_min_rows=args.copy_min_rows)
        await sink.write(build(2, 100 + index, 10, 10))  # connect, warm the caches
        batches = [records[i : i + args.batch] for i in range(0, len(records), args.batch)]
        barrier.wait()
        cpu = time.process_time()
        for batch in batches:
            await sink.write(batch)
        done, cpu = time.perf_counter(), time.process_time() - cpu
        await engine.dispose()
        return done, cpu

    done, cpu = asyncio.run(run())
    out.put((done, cpu))


async def schema_admin(url: str, sql: str) -> None:
    admin = db.make_engine(url, poolclass=NullPool)
    async with admin.begin() as conn:
        await conn.execute(text(sql))
    await admin.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=PG)
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--calls", type=int, default=25_000, help="calls per process")
    p.add_argument("--batch", type=int, default=256, help="records per write (2 per call)")
    p.add_argument("--request-bytes", type=int, default=2048)
    p.add_argument("--response-bytes", type=int, default=1024)
    p.add_argument("--copy-min-rows", type=int, default=db.COPY_MIN_ROWS)
    args = p.parse_args()
    schema = f"bench_pgwrite_{uuid.uuid4().hex[:8]}"
    asyncio.run(schema_admin(args.url, f'CREATE SCHEMA "{schema}"'))
    try:
        engine = db.make_engine(args.url, connect_args={"server_settings": {"search_path": schema}})
        asyncio.run(db.upgrade_engine(engine))
        ctx = mp.get_context("fork")
        barrier, out = ctx.Barrier(args.processes + 1), ctx.Queue()
        procs = [ctx.Process(target=worker, args=(args, schema, args.calls, i, barrier, out))
                 for i in range(args.processes)]  # fmt: skip
        for proc in procs:
            proc.start()
        barrier.wait()
        start = time.perf_counter()
        results = [out.get() for _ in procs]
        for proc in procs:
            proc.join()
        wall = max(done for done, _ in results) - start
        total = args.calls * args.processes
        cpu = sum(c for _, c in results)
        mode = "COPY" if args.copy_min_rows else "executemany"
        print(f"{args.processes} processes × {args.calls} calls ({args.request_bytes}+{args.response_bytes} B content),"
              f" {mode}: {total / wall:,.0f} calls/s over {wall:.1f} s; client CPU {cpu * 1e6 / total:.1f} µs/call")
    finally:
        asyncio.run(schema_admin(args.url, f'DROP SCHEMA "{schema}" CASCADE'))


if __name__ == "__main__":
    main()
