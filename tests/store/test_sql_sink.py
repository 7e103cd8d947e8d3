"""SqlSink: idempotent inserts, monotonic upserts, bad records set aside (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.store.db import SqlSink
from proxy.store.models import TABLES
from proxy.store.rows import Record
from proxy.store.writer import RecordRejected
from tests.store.factories import make_record

GUARD = [{"rule": "budget", "kind": "budget", "action": "flag", "reason": "80%", "data": {"spent": 8}}]


async def rows(engine: AsyncEngine, table: str, order_by: str | None = None) -> list[dict[str, Any]]:
    t = TABLES[table]
    query = sa.select(t).order_by(t.c[order_by]) if order_by else sa.select(t)
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


async def test_writing_a_batch_twice_stores_each_row_once(engine: AsyncEngine) -> None:
    batch = [make_record(guard_events=GUARD) for _ in range(20)]
    sink = SqlSink(engine)
    await sink.write(batch)
    await sink.write(batch)  # a replay after a timed-out write that had committed
    assert len(await rows(engine, "calls")) == 20
    assert len(await rows(engine, "guard_events")) == 20


async def test_call_row_round_trips_with_aware_utc_times_and_json(engine: AsyncEngine) -> None:
    record = make_record(started_at=1_700_000_000.123456, guard_events=GUARD, stream=True)
    await SqlSink(engine).write([record])
    (call,) = await rows(engine, "calls")
    assert call["started_at"].timestamp() == pytest.approx(1_700_000_000.123456, abs=1e-6)
    assert call["started_at"].utcoffset().total_seconds() == 0
    assert call["flags"] == ["budget"] and call["stream"] is True
    (event,) = await rows(engine, "guard_events")
    assert event["data"] == {"spent": 8} and event["call_id"] == call["id"]


def agent(calls: int, last_seen: float, **extra: Any) -> dict[str, Any]:
    row = {"name": "planner", "fingerprint": "fp1", "display_name": None, "first_seen": 100.0}
    return row | {"last_seen": last_seen, "calls": calls, "tokens": calls * 10} | extra


async def test_agent_upserts_merge_monotonically_whatever_the_order(engine: AsyncEngine) -> None:
    sink = SqlSink(engine)
    await sink.write([Record(agents=[agent(5, 200.0)])])
    await sink.write(
        [Record(agents=[agent(3, 150.0, first_seen=90.0, display_name="Planner")])]
    )  # older snapshot
    (row,) = await rows(engine, "agents")
    assert (row["calls"], row["tokens"], row["last_seen"].timestamp()) == (5, 50, 200.0)
    assert row["first_seen"].timestamp() == 90.0 and row["display_name"] == "Planner"


def run(status: str, last_at: float, calls: int) -> dict[str, Any]:
    return {
        "id": "run-1", "started_at": 100.0, "last_at": last_at, "status": status, "calls": calls,
        "agents": ["planner"], "tokens": calls * 7, "cost_usd": calls * 0.01, "flags": [],
    }  # fmt: skip


async def test_run_upserts_keep_the_newest_status_and_largest_totals(engine: AsyncEngine) -> None:
    sink = SqlSink(engine)
    # two snapshots of one run in one batch, plus the older one replayed afterwards
    await sink.write([Record(runs=[run("open", 150.0, 3)]), Record(runs=[run("closed", 400.0, 9)])])
    await sink.write([Record(runs=[run("open", 150.0, 3)])])
    (row,) = await rows(engine, "runs")
    assert (row["status"], row["calls"], row["tokens"]) == ("closed", 9, 63)
    assert row["cost_usd"] == pytest.approx(0.09) and row["last_at"].timestamp() == 400.0


async def test_edges_are_unique_per_source_target_kind(engine: AsyncEngine) -> None:
    edge = {
        "run_id": None,
        "source_call_id": "a",
        "target_call_id": "b",
        "kind": "handoff",
        "created_at": 1.0,
    }
    sink = SqlSink(engine)
    await sink.write([Record(edges=[edge | {"evidence": {"coverage": 0.5}}])])
    await sink.write([Record(edges=[edge | {"run_id": "r1", "evidence": {"coverage": 0.9}}])])
    (row,) = await rows(engine, "edges")
    assert row["run_id"] == "r1" and row["evidence"] == {"coverage": 0.9}


async def test_call_updates_apply_after_the_insert_in_the_same_batch(engine: AsyncEngine) -> None:
    record = make_record()
    call_id = record.calls[0]["id"]
    update = Record(
        call_updates=[{"id": call_id, "run_id": "run-7", "agent": "writer", "flags": ["handoff_truncated"]}]
    )
    await SqlSink(engine).write([record, update])
    (row,) = await rows(engine, "calls")
    assert (row["run_id"], row["agent"], row["flags"]) == ("run-7", "writer", ["handoff_truncated"])


async def test_a_bad_record_is_rejected_and_the_rest_of_the_batch_written(engine: AsyncEngine) -> None:
    good = [make_record() for _ in range(3)]
    bad = make_record()
    bad.calls[0]["provider"] = None  # violates NOT NULL on both backends
    with pytest.raises(RecordRejected) as caught:
        await SqlSink(engine).write([good[0], bad, *good[1:]])
    assert caught.value.rejected == [bad]
    assert {r["id"] for r in await rows(engine, "calls")} == {r.calls[0]["id"] for r in good}


async def test_a_database_without_tables_is_a_transient_error_not_a_rejection(tmp_path) -> None:
    from proxy.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(Exception) as caught:
            await SqlSink(engine).write([make_record()])
        assert not isinstance(caught.value, RecordRejected)
    finally:
        await engine.dispose()
