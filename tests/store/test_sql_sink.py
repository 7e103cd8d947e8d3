"""SqlSink: idempotent inserts, monotonic upserts, bad records set aside (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.aggregates import Aggregates
from proxy.store.coalesce import coalesce
from proxy.store.db import SqlSink
from proxy.store.models import TABLES
from proxy.store.rows import Record, call_record
from proxy.store.writer import RecordRejected
from tests.store.factories import make_call, make_record

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


# rows sharing a key are folded before SQL (proxy/store/coalesce.py) --------------------------


@contextlib.contextmanager
def counting(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements `engine` sends while inside (an executemany counts once)."""
    statements: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip()[:6].upper() not in ("BEGIN", "COMMIT"):
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


def pipeline_records(n: int, *, agent_name: str = "planner", run_id: str = "run-1") -> list[Record]:
    """What Pipeline._process submits for `n` calls of one agent in one run: per call, the
    call's record, then a record with the agent's and the run's running totals."""
    totals = Aggregates()
    records: list[Record] = []
    for i in range(n):
        events = GUARD if i % 50 == 0 else []
        call = make_call(started_at=1_700_000_000.0 + i, agent=agent_name, run_id=run_id, guard_events=events)
        call.cost_usd = 0.001 * (i % 3)
        records.append(call_record(call, policy="redacted", max_bytes=64 * 1024))
        run_row, agent_row = totals.add(
            call, agent_name, f"fp-{agent_name}", run_id, ["loop"] if i == 7 else []
        )
        assert run_row is not None
        records.append(Record(agents=[agent_row], runs=[run_row]))
    return records


async def tables(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Every recorded table, rows in key order (edges without their autoincrement id)."""
    order = {"calls": "id", "guard_events": "id", "agents": "name", "runs": "id"}
    out = {name: await rows(engine, name, key) for name, key in order.items()}
    edges = await rows(engine, "edges")
    out["edges"] = sorted(({k: v for k, v in e.items() if k != "id"} for e in edges), key=repr)
    return out


async def test_a_pipeline_batch_ends_as_written_one_record_at_a_time(
    engine_pair: tuple[AsyncEngine, AsyncEngine],
) -> None:
    one_by_one, batched = engine_pair
    records = pipeline_records(200)
    for record in records:
        await SqlSink(one_by_one).write([record])
    await SqlSink(batched).write(records)
    expected, got = await tables(one_by_one), await tables(batched)
    assert got == expected
    (agent_row,) = got["agents"]
    (run_row,) = got["runs"]
    assert (agent_row["calls"], run_row["calls"], run_row["flags"]) == (200, 200, ["budget", "loop"])
    assert len(got["calls"]) == 200 and len(got["guard_events"]) == 4


async def test_a_200_call_batch_from_one_agent_and_run_is_a_handful_of_statements(
    engine: AsyncEngine,
) -> None:
    records = pipeline_records(200)
    sink = SqlSink(engine)
    with counting(engine) as statements:
        await sink.write(records)
    assert len(statements) <= 6, statements  # calls, guard_events, agents, runs
    with counting(engine) as statements:
        await sink.write(records)  # a replay: the same statements, the same rows
    assert len(statements) <= 6, statements
    (run_row,) = await rows(engine, "runs")
    assert run_row["calls"] == 200 and len(await rows(engine, "calls")) == 200


async def test_older_totals_after_newer_in_one_batch_keep_the_largest_and_newest(engine: AsyncEngine) -> None:
    newer = Record(agents=[agent(9, 300.0)], runs=[run("closed", 400.0, 9)])
    older = Record(
        agents=[agent(4, 250.0, first_seen=90.0)], runs=[run("open", 150.0, 4) | {"started_at": 80.0}]
    )
    await SqlSink(engine).write([newer, older])
    (a,) = await rows(engine, "agents")
    assert (a["calls"], a["tokens"], a["last_seen"].timestamp(), a["first_seen"].timestamp()) == (
        9,
        90,
        300.0,
        90.0,
    )
    (r,) = await rows(engine, "runs")
    assert (r["status"], r["calls"], r["last_at"].timestamp(), r["started_at"].timestamp()) == (
        "closed", 9, 400.0, 80.0,
    )  # fmt: skip


async def test_a_batch_with_repeated_keys_written_twice_is_idempotent(engine: AsyncEngine) -> None:
    batch = [*pipeline_records(30), *pipeline_records(20, agent_name="writer", run_id="run-2")]
    sink = SqlSink(engine)
    await sink.write(batch)
    once = await tables(engine)
    await sink.write(batch)
    assert await tables(engine) == once
    assert [a["calls"] for a in once["agents"]] == [30, 20]


async def test_a_null_fingerprint_in_a_later_row_keeps_the_earlier_one(engine: AsyncEngine) -> None:
    await SqlSink(engine).write(
        [
            Record(agents=[agent(1, 150.0, fingerprint="fp-a", display_name="Planner")]),
            Record(agents=[agent(2, 160.0, fingerprint=None, display_name=None)]),
            Record(
                agents=[
                    {k: v for k, v in agent(3, 170.0).items() if k not in ("fingerprint", "display_name")}
                ]
            ),
        ]
    )
    (a,) = await rows(engine, "agents")
    assert (a["fingerprint"], a["display_name"], a["calls"]) == ("fp-a", "Planner", 3)


async def test_an_edge_whose_later_rows_lack_run_id_keeps_the_earlier(engine: AsyncEngine) -> None:
    edge = {"source_call_id": "a", "target_call_id": "b", "kind": "handoff", "created_at": 1.0}
    await SqlSink(engine).write(
        [
            Record(edges=[edge | {"run_id": "r1", "evidence": {"coverage": 0.5}}]),
            Record(edges=[edge | {"run_id": None, "evidence": {"coverage": 0.7}, "created_at": 2.0}]),
            Record(edges=[edge | {"evidence": {"coverage": 0.9}}]),
        ]
    )
    (row,) = await rows(engine, "edges")
    assert (row["run_id"], row["evidence"], row["created_at"].timestamp()) == ("r1", {"coverage": 0.9}, 1.0)


async def test_call_updates_for_one_call_fold_later_values_winning(engine: AsyncEngine) -> None:
    first, second = make_record(), make_record()
    a, b = first.calls[0]["id"], second.calls[0]["id"]
    updates = Record(
        call_updates=[
            {"id": a, "run_id": "run-7", "flags": ["x"]},
            {"id": b, "run_id": "run-8"},
            {"id": a, "flags": ["x", "tainted"], "depth": 2},
            {"id": b, "agent": "writer", "run_id": "run-9"},
        ]
    )
    with counting(engine) as statements:
        await SqlSink(engine).write([first, second, updates])
    assert sum(s.lstrip().upper().startswith("UPDATE") for s in statements) == 2  # one per column set
    got = {r["id"]: (r["run_id"], r["agent"], r["flags"], r["depth"]) for r in await rows(engine, "calls")}
    assert got == {a: ("run-7", None, ["x", "tainted"], 2), b: ("run-9", "writer", [], None)}


async def test_a_run_merge_still_follows_every_runs_row_of_its_batch(engine: AsyncEngine) -> None:
    """Tables are written in TABLE_ORDER: all runs rows of a batch, then its run merges, so a
    runs row for the merged-away run arriving after the merge is deleted with it (as before)."""
    call = make_record(run_id="run-1")
    batch = [
        Record(runs=[run("open", 150.0, 3)]),
        Record(
            runs=[run("open", 160.0, 4) | {"id": "run-2"}], run_merges=[{"from": "run-1", "into": "run-2"}]
        ),
        Record(runs=[run("open", 170.0, 5)]),
        call,
    ]
    await SqlSink(engine).write(batch)
    assert [(r["id"], r["calls"]) for r in await rows(engine, "runs")] == [("run-2", 4)]
    assert [c["run_id"] for c in await rows(engine, "calls")] == ["run-2"]


# property: folding == one upsert per transaction -------------------------------------------

TIMES = (99.0, 100.0, 100.0000004, 100.0000006, 100.5, 101.0)  # 100.0000004 binds as 100.0


def random_steps(rng: random.Random, case: int) -> list[Record]:
    """1-6 records for the keys of `case`: random (not growing) totals, NULLs, absent columns."""

    def drop(row: dict[str, Any], *optional: str) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in optional or rng.random() > 0.2}

    def t() -> float:
        return rng.choice(TIMES)

    steps = []
    for _ in range(rng.randint(1, 6)):
        agent_row = drop(
            {"name": f"agent-{case}", "fingerprint": rng.choice([None, f"fp-{case}-1", f"fp-{case}-2"]),
             "display_name": rng.choice([None, "Planner", "Writer"]), "first_seen": t(), "last_seen": t(),
             "calls": rng.randint(0, 4), "tokens": rng.randint(0, 40)},
            "fingerprint", "display_name",
        )  # fmt: skip
        run_row = drop(
            {"id": f"run-{case}", "started_at": t(), "last_at": t(), "status": rng.choice(["open", "closed"]),
             "calls": rng.randint(0, 4), "agents": rng.choice([[], ["a"], ["a", "b"]]),
             "tokens": rng.randint(0, 40), "cost_usd": rng.choice([None, 0.0, 0.01, 0.02, 0.0200000001]),
             "flags": rng.choice([[], ["loop"], ["budget", "loop"]])},
            "cost_usd",
        )  # fmt: skip
        edge_row = drop(
            {"source_call_id": f"s{case}", "target_call_id": "t", "kind": "handoff", "created_at": t(),
             "run_id": rng.choice([None, "r1", "r2"]), "evidence": rng.choice([{}, {"c": 1}, {"c": 2}])},
            "run_id",
        )  # fmt: skip
        steps.append(Record(agents=[agent_row], runs=[run_row], edges=[edge_row]))
    return steps


@pytest.mark.parametrize("seed", [11, 12])
async def test_folding_a_batch_equals_one_upsert_per_transaction(
    engine_pair: tuple[AsyncEngine, AsyncEngine], seed: int
) -> None:
    sequential, folded = engine_pair
    rng = random.Random(seed)
    cases = [random_steps(rng, case) for case in range(120)]
    existing = [random_steps(rng, case)[0] for case in range(0, 120, 2)]  # half the keys exist
    for engine in engine_pair:
        await SqlSink(engine).write(existing)
    for steps in cases:
        for record in steps:  # one transaction per step; its rows have different tables
            await SqlSink(sequential).write([record])
    batch = [r for group in itertools.zip_longest(*cases) for r in group if r is not None]  # interleaved
    for table in ("agents", "runs", "edges"):
        assert len(coalesce(table, [row for r in batch for row in getattr(r, table)])) == 1  # folded
    await SqlSink(folded).write(batch)
    expected, got = await tables(sequential), await tables(folded)
    assert len(got["runs"]) == len(got["agents"]) == len(got["edges"]) == 120
    for name in ("agents", "runs", "edges"):
        assert got[name] == expected[name], name
