"""SQL writer micro-benchmark: CPU per call and statements per batch of `SqlSink.write`.

    .venv/bin/python bench/writer_micro.py                       # SQLite temp file, 20,000 calls
    .venv/bin/python bench/writer_micro.py --legacy              # the pre-coalescing _apply (copy below)
    .venv/bin/python bench/writer_micro.py --compare --repeat 3  # both, alternating, medians
    .venv/bin/python bench/writer_micro.py --compare-fast --repeat 3  # SqlSink(fast=False) vs fast=True
    .venv/bin/python bench/writer_micro.py --url postgresql+asyncpg://postgres@127.0.0.1:5432/test

Records are built the way the pipeline builds them without a linker (Pipeline._process →
_count): per call, `call_record(call)` (the calls row and its guard events) and a totals
record holding the agent's and the run's absolute running totals (`Aggregates.add`), for
`--calls` synthetic calls spread round-robin over `--agents` agents and `--runs` runs.  The
records are then written through `SqlSink` in batches of the writer's default batch size
(`Settings.writer_batch_size`, 256 records = 128 calls), on a fresh migrated database.

Only the writes are timed.  CPU is `time.process_time()` (aiosqlite runs its connection in a
thread of this process, so SQLite's own work counts too; PostgreSQL's server side does not).
Statements are counted with a `before_cursor_execute` listener (an executemany counts once;
BEGIN/COMMIT are not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import pathlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from proxy.aggregates import Aggregates  # noqa: E402
from proxy.call import Call, Usage  # noqa: E402
from proxy.settings import Settings  # noqa: E402
from proxy.store import db  # noqa: E402
from proxy.store.rows import TABLE_ORDER, Record, Row, call_record  # noqa: E402

BATCH = Settings.model_fields["writer_batch_size"].default
REQUEST = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Summarise the ticket below."}]}'
RESPONSE = b'{"choices":[{"message":{"role":"assistant","content":"The customer asks for a refund."}}]}'


def build_records(calls: int, agents: int, runs: int, start: float = 1_700_000_000.0) -> list[Record]:
    """2 records per call, in the order the pipeline submits them: the call's, then its totals."""
    totals = Aggregates()
    records: list[Record] = []
    for i in range(calls):
        agent, run_id = f"agent-{i % agents}", f"run-{i % runs}"
        t = start + i * 0.0005
        call = Call(
            id=f"{i:012x}{uuid.uuid4().hex[:14]}", started_at=t, provider="openai", operation="chat",
            upstream="openai", method="POST", path="/v1/chat/completions", agent=agent,
            agent_source="header", run_id=run_id, api_key_hash="0123456789ab",
            model_requested="gpt-4o-mini", model_served="gpt-4o-mini-2024-07-18",
            request_bytes=REQUEST, response_bytes=RESPONSE, status=200, outcome="ok",
            finish_reason="stop", first_byte_at=t + 0.05, ended_at=t + 0.1,
            usage=Usage(input_tokens=40 + i % 7, output_tokens=12), input_tokens_counted=40,
            cost_usd=0.0000123,
        )  # fmt: skip
        if i % 10 == 0:
            call.guard_events.append(
                {"rule": "budget", "kind": "budget", "action": "flag", "reason": "80%", "data": {"spent": i}}
            )
        records.append(call_record(call, policy="redacted", max_bytes=256 * 1024))
        run_row, agent_row = totals.add(call, agent, None, run_id, [])
        record = Record(agents=[agent_row])
        if run_row is not None:
            record.runs.append(run_row)
        records.append(record)
    return records


class LegacySqlSink(db.SqlSink):
    """`SqlSink._apply` as it was before coalescing (one executemany per wave), for comparison."""

    async def _apply(self, conn: AsyncConnection, batch: Sequence[Record]) -> None:
        for table in TABLE_ORDER:
            rows = [row for record in batch for row in getattr(record, table)]
            if rows and table == "call_updates":
                await self._update_calls(conn, rows)
            elif rows and table == "run_merges":
                await self._merge_runs(conn, rows)
            elif rows:
                for wave in _legacy_waves(rows, db._CONFLICT_KEYS[table]):
                    for keys, group in _legacy_by_keys(wave):
                        await conn.execute(self._statement(table, keys), group)


def _legacy_waves(rows: list[Row], conflict: tuple[str, ...]) -> list[list[Row]]:
    waves: list[list[Row]] = []
    seen: dict[tuple[Any, ...], int] = {}
    for row in rows:
        key = tuple(row[k] for k in conflict)
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(row)
    return waves


def _legacy_by_keys(rows: Iterable[Row]) -> Iterable[tuple[tuple[str, ...], list[Row]]]:
    for keys, group in itertools.groupby(rows, key=lambda r: tuple(sorted(r))):
        yield keys, list(group)


class Counter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.n = 0
        event.listen(engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip()[:6].upper() not in ("BEGIN", "COMMIT"):
            self.n += 1


async def fresh_engine(url: str | None, directory: pathlib.Path) -> tuple[AsyncEngine, Any]:
    """A migrated engine and a cleanup coroutine function (PostgreSQL: a schema of its own)."""
    if url is None:
        engine = db.make_engine(f"sqlite:///{directory / f'bench-{uuid.uuid4().hex[:8]}.db'}")
        await db.upgrade_engine(engine)
        return engine, engine.dispose
    schema = f"bench_writer_{uuid.uuid4().hex[:10]}"
    admin = db.make_engine(url, poolclass=NullPool)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = db.make_engine(url, connect_args={"server_settings": {"search_path": schema}})
    await db.upgrade_engine(engine)

    async def cleanup() -> None:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()

    return engine, cleanup


async def measure(
    records: list[Record],
    calls: int,
    *,
    legacy: bool,
    url: str | None,
    directory: pathlib.Path,
    batch: int,
    fast: bool = True,
) -> dict[str, float]:
    engine, cleanup = await fresh_engine(url, directory)
    try:
        sink = (LegacySqlSink if legacy else db.SqlSink)(engine, fast=fast)
        await sink.write(build_records(2, 1, 1, start=1.0))  # warm the connection and statement caches
        counter = Counter(engine)
        batches = [records[i : i + batch] for i in range(0, len(records), batch)]
        cpu, wall = time.process_time(), time.perf_counter()
        for b in batches:
            await sink.write(b)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT count(*) FROM calls"))).scalar_one()
        assert stored == calls + 2, (stored, calls)
        return {
            "cpu_ms_per_call": cpu * 1000 / calls,
            "wall_ms_per_call": wall * 1000 / calls,
            "statements_per_batch": counter.n / len(batches),
            "batches": len(batches),
        }
    finally:
        await cleanup()


def _line(name: str, r: dict[str, float]) -> str:
    return (
        f"{name:8} cpu {r['cpu_ms_per_call'] * 1000:7.1f} µs/call   wall {r['wall_ms_per_call'] * 1000:7.1f}"
        f" µs/call   {r['statements_per_batch']:6.1f} statements/batch ({r['batches']:.0f} batches)"
    )


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch", type=int, default=BATCH, help=f"records per write (default {BATCH})")
    p.add_argument("--url", default=None, help="database URL (default: a SQLite temp file)")
    p.add_argument("--legacy", action="store_true", help="the old per-wave _apply only")
    p.add_argument("--compare", action="store_true", help="legacy and current, alternating")
    p.add_argument(
        "--generic", action="store_true", help="SqlSink(fast=False): Connection.execute per statement"
    )
    p.add_argument(
        "--compare-fast",
        action="store_true",
        help="generic (fast=False) and current (fast=True), alternating",
    )
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    records = build_records(args.calls, args.agents, args.runs)
    if args.compare or args.compare_fast:
        modes = ["legacy" if args.compare else "generic", "current"]
    else:
        modes = ["legacy" if args.legacy else "generic" if args.generic else "current"]
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    print(
        f"{args.calls} calls ({len(records)} records), {args.agents} agents, {args.runs} runs, "
        f"batches of {args.batch} records, {'SQLite temp file' if args.url is None else args.url}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for mode in modes:
                r = await measure(
                    records,
                    args.calls,
                    legacy=mode == "legacy",
                    url=args.url,
                    directory=pathlib.Path(tmp),
                    batch=args.batch,
                    fast=not (mode == "generic" or args.generic),
                )
                results[mode].append(r)
                print(_line(mode, r))
    if args.repeat > 1:
        print("medians:")
        for mode, rs in results.items():
            print(_line(mode, {k: statistics.median(r[k] for r in rs) for k in rs[0]}))


if __name__ == "__main__":
    asyncio.run(main())
