"""Retention on SQLite and PostgreSQL: content cleared, then records deleted, exactly those older
than each cutoff, in bounded batches."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.store.db import SqlSink
from proxy.store.retention import DAY_S, Retention, RetentionPolicy
from proxy.store.rows import Record
from tests.store.factories import make_record

NOW = 1_800_000_000.0
GUARD = {"rule": "budget", "kind": "budget", "action": "flag", "reason": "80%", "data": {}}


def aged(days: float, n: int = 0, run_id: str = "run-old") -> Record:
    """A call with content and a guard event, started `days` before NOW (n spreads them apart)."""
    return make_record(policy="full", started_at=NOW - days * DAY_S - n, run_id=run_id, guard_events=[GUARD])


async def store(engine: AsyncEngine, records: list[Record]) -> None:
    await SqlSink(engine).write(records)


async def rows(engine: AsyncEngine, sql: str) -> list[tuple]:
    async with engine.connect() as conn:
        return [tuple(r) for r in await conn.exec_driver_sql(sql)]


async def calls_by_content(engine: AsyncEngine) -> dict[str, bool]:
    found = await rows(engine, "SELECT id, request_content IS NOT NULL OR response_content IS NOT NULL FROM calls")
    return {id_: bool(has) for id_, has in found}


def run_row(run_id: str, last_days: float) -> dict:
    at = NOW - last_days * DAY_S
    return {"id": run_id, "started_at": at, "last_at": at, "status": "closed", "calls": 1, "agents": [],
            "tokens": 1, "cost_usd": None, "flags": []}  # fmt: skip


async def test_content_older_than_its_cutoff_is_cleared_and_the_rest_kept(engine: AsyncEngine) -> None:
    old = [aged(8, n) for n in range(7)]
    young = [aged(6, n) for n in range(3)]
    await store(engine, old + young)

    swept = await Retention(engine, RetentionPolicy(content_days=7, batch_size=3, pause_s=0)).sweep(NOW)

    content = await calls_by_content(engine)
    assert content == {r.calls[0]["id"]: r in young for r in old + young}
    assert swept.content_cleared == 7 and swept.batches == 3  # 3 + 3 + 1
    assert swept.calls_deleted == 0


async def test_records_older_than_the_cutoff_are_deleted_with_their_events_and_edges(engine: AsyncEngine) -> None:
    old = [aged(31, n) for n in range(5)]
    young = [aged(29, n, run_id="run-young") for n in range(2)]
    edges = [
        {"run_id": "run-old", "source_call_id": old[0].calls[0]["id"], "target_call_id": old[1].calls[0]["id"],
         "kind": "continuation", "evidence": {}, "created_at": NOW - 31 * DAY_S},
        {"run_id": "run-young", "source_call_id": young[0].calls[0]["id"],
         "target_call_id": young[1].calls[0]["id"], "kind": "continuation", "evidence": {}, "created_at": NOW},
    ]  # fmt: skip
    runs = [run_row("run-old", 31), run_row("run-young", 29)]
    await store(engine, [*old, *young, Record(edges=edges, runs=runs)])

    swept = await Retention(engine, RetentionPolicy(metadata_days=30, batch_size=2, pause_s=0)).sweep(NOW)

    assert set(await calls_by_content(engine)) == {r.calls[0]["id"] for r in young}
    assert {e for (e,) in await rows(engine, "SELECT call_id FROM guard_events")} == set(await calls_by_content(engine))
    assert await rows(engine, "SELECT target_call_id FROM edges") == [(young[1].calls[0]["id"],)]
    assert await rows(engine, "SELECT id FROM runs") == [("run-young",)]
    assert (swept.calls_deleted, swept.guard_events_deleted, swept.edges_deleted, swept.runs_deleted) == (5, 5, 1, 1)


async def test_a_call_exactly_at_the_cutoff_is_kept(engine: AsyncEngine) -> None:
    at_cutoff, older = aged(30), aged(30, 1)
    await store(engine, [at_cutoff, older])

    await Retention(engine, RetentionPolicy(metadata_days=30, pause_s=0)).sweep(NOW)

    assert set(await calls_by_content(engine)) == {at_cutoff.calls[0]["id"]}


async def test_no_batch_touches_more_calls_than_the_batch_size(engine: AsyncEngine) -> None:
    await store(engine, [aged(40, n) for n in range(10)])
    statements: list[str] = []

    def seen(_c: object, _cur: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().upper().startswith(("DELETE FROM CALLS", "UPDATE CALLS")):
            statements.append(str(parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    swept = await Retention(engine, RetentionPolicy(metadata_days=30, content_days=7, batch_size=4, pause_s=0)).sweep(NOW)
    event.remove(engine.sync_engine, "before_cursor_execute", seen)

    assert (swept.content_cleared, swept.calls_deleted) == (10, 10)
    assert len(statements) == 3 + 3  # content: 4 + 4 + 2, then records: 4 + 4 + 2
    assert await calls_by_content(engine) == {}


async def test_content_is_cleared_before_records_are_deleted(engine: AsyncEngine) -> None:
    await store(engine, [aged(40, n) for n in range(3)])
    order: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith(("DELETE FROM CALLS", "UPDATE CALLS")):
            order.append(statement.split()[0].upper())

    event.listen(engine.sync_engine, "before_cursor_execute", seen)
    await Retention(engine, RetentionPolicy(metadata_days=30, content_days=7, pause_s=0)).sweep(NOW)
    event.remove(engine.sync_engine, "before_cursor_execute", seen)

    assert order == ["UPDATE", "DELETE"]


async def test_the_writer_keeps_writing_while_a_sweep_runs(engine: AsyncEngine) -> None:
    await store(engine, [aged(40, n) for n in range(60)])
    sink, written = SqlSink(engine), []

    async def write() -> None:
        for n in range(20):
            record = make_record(started_at=NOW + n)
            await sink.write([record])
            written.append(record.calls[0]["id"])
            await asyncio.sleep(0)

    retention = Retention(engine, RetentionPolicy(metadata_days=30, content_days=7, batch_size=5, pause_s=0))
    swept, _ = await asyncio.gather(retention.sweep(NOW), write())

    assert swept.calls_deleted == 60
    assert set(await calls_by_content(engine)) == set(written)


@pytest.mark.parametrize("policy", [RetentionPolicy(), RetentionPolicy(metadata_days=None, content_days=None)])
async def test_without_a_retention_setting_nothing_is_swept_or_started(engine: AsyncEngine, policy: RetentionPolicy) -> None:
    await store(engine, [aged(4000)])
    retention = Retention(engine, policy)
    retention.start()
    assert retention._task is None
    assert (await retention.sweep(NOW)).batches == 0
    assert len(await calls_by_content(engine)) == 1
