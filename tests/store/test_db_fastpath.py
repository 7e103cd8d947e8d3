"""SqlSink's fast path (statements compiled once, positional tuples through exec_driver_sql)
against the generic one (Connection.execute with dict rows): the same SQL, the same DBAPI
parameters, the same stored bytes and the same errors, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeDecorator

from proxy.call import Usage
from proxy.store.db import SqlSink
from proxy.store.models import TABLES, UtcDateTime
from proxy.store.rows import TABLE_ORDER, Record
from proxy.store.writer import RecordRejected
from tests.store.factories import make_record
from tests.store.test_sql_sink import pipeline_records, random_steps

T0 = 1_700_000_000.123456
GUARDS = [
    {"rule": "budget", "kind": "budget", "action": "flag", "reason": "80%", "data": {"spent": 8}},
    {"rule": "pii", "kind": "regex", "action": "deny", "reason": "e-mail ✉",
     "data": {"ü": [1, 2.5, None, True, "日本語"], "big": 2**62, "nested": {"k": []}}},
]  # fmt: skip
# table ─▶ ORDER BY for a full, deterministic dump
ORDER = {
    "calls": "id",
    "guard_events": "id",
    "edges": "source_call_id, target_call_id, kind",
    "agents": "name",
    "runs": "id",
}


def call_records() -> list[Record]:
    """Calls with content, without it, odd text, extreme numbers and every timestamp form."""
    records = [
        make_record(policy="full", started_at=T0, guard_events=GUARDS, stream=True),
        make_record(policy="none", started_at=T0 + 1, agent="planner", run_id="run-merge-a"),
        make_record(
            policy="full",
            started_at=T0 + 2,
            request_bytes="héllo ✓ 日本語 🧪 e\u0301 'quote\" \\".encode(),
            response_bytes=b"\xff\xfe not utf-8 \xc3",
            error="boom: sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        ),  # fmt: skip
        make_record(started_at=0.0, usage=Usage(input_tokens=2**31 - 1, output_tokens=0), status=599),
        make_record(started_at=4_102_444_800.999999, run_id="run-merge-a"),
    ]
    rows = [r.calls[0] for r in records]
    rows[0] |= {"latency_ms": float("inf"), "ttfb_ms": -0.0, "cost_usd": 1e-300, "depth": 3}
    rows[1] |= {"latency_ms": float("nan"), "cost_usd": 12345678.125, "tainted_by": ["a", "b"]}
    rows[2] |= {
        "started_at": datetime(
            2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=5, minutes=30))
        )
    }
    rows[3] |= {"started_at": datetime(2024, 1, 1, 12, 0), "ended_at": 1_700_000_000, "first_byte_at": None}
    rows[4] |= {
        "ended_at": datetime(2100, 1, 1, tzinfo=UTC),
        "latency_ms": 1.7976931348623157e308,
        "flags": ["loop", "✓"],
    }
    for row in rows[3:]:
        del row["depth"], row["tainted_by"]  # another column set: a second executemany, NULLs
    return records


def linker_records(rng: random.Random, ids: list[str]) -> list[Record]:
    """Upserts that fold and merge (random totals, NULLs, absent columns), call updates, a merge."""
    records = [r for case in range(12) for r in random_steps(rng, case)]
    big = {"name": "huge", "fingerprint": None, "display_name": "Ünïcode ✓", "first_seen": T0,
           "last_seen": T0 + 0.5, "calls": 2**62, "tokens": 2**63 - 1}  # fmt: skip
    records.append(Record(agents=[big], runs=[{"id": "run-merge-b", "started_at": T0, "last_at": T0 + 3,
        "status": "open", "calls": 2, "agents": ["planner", "huge"], "tokens": 7, "cost_usd": None,
        "flags": ["✓"]}]))  # fmt: skip
    records.append(Record(call_updates=[
        {"id": ids[0], "run_id": "run-7", "flags": ["x"]},
        {"id": ids[1], "agent": "writer", "tainted_by": None, "depth": 0},
        {"id": ids[0], "flags": ["x", "tainted ✓"], "tainted_by": [ids[1]], "depth": 2},
        {"id": ids[2], "run_id": "run-8", "agent_source": "header"},
        {"id": ids[3], "run_id": "run-8", "agent_source": "linker"},
    ]))  # fmt: skip
    records.append(Record(run_merges=[{"from": "run-merge-a", "into": "run-merge-b"}]))
    return records


@contextlib.contextmanager
def sent(engine: AsyncEngine) -> Iterator[list[str]]:
    """repr of every (statement, DBAPI parameters, executemany?) `engine` sends while inside."""
    out: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool) -> None:
        out.append(repr((statement, parameters, many)))

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    try:
        yield out
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", before)


async def dump(engine: AsyncEngine) -> dict[str, list[str]]:
    """Every recorded table as the database stores it: SQLite's raw values with their Python
    types (TEXT timestamps and JSON, INTEGER booleans, REAL), PostgreSQL's text of each row."""
    out: dict[str, list[str]] = {}
    async with engine.connect() as conn:
        for table, order in ORDER.items():
            if engine.dialect.name == "postgresql":
                sql = f"SELECT CAST(t AS text) FROM {table} AS t ORDER BY {order}"
            else:
                sql = f"SELECT * FROM {table} ORDER BY {order}"
            out[table] = [repr(tuple(row)) for row in await conn.exec_driver_sql(sql)]
    return out


async def write_all(sink: SqlSink, existing: list[Record], batch: list[Record]) -> None:
    await sink.write(existing)  # rows the batch's upserts then merge into
    await sink.write(batch)
    for record in batch[:25]:  # one record per transaction: single-row executes
        await sink.write([record])
    await sink.write(batch)  # a replay: conflicts everywhere


async def test_fast_path_sends_and_stores_exactly_what_the_generic_path_does(
    engine_pair: tuple[AsyncEngine, AsyncEngine],
) -> None:
    generic_engine, fast_engine = engine_pair
    calls = call_records()
    ids = [r.calls[0]["id"] for r in calls]
    rng = random.Random(7)
    existing = [*random_steps(rng, 3), *random_steps(rng, 5), calls[0]]
    batch = [
        *calls,
        *pipeline_records(40),
        *linker_records(rng, ids),
        *pipeline_records(5, agent_name="solo"),
    ]
    assert {t for r in batch for t in TABLE_ORDER if getattr(r, t)} == set(TABLE_ORDER)
    generic, fast = SqlSink(generic_engine, fast=False), SqlSink(fast_engine, copy_min_rows=0)

    with sent(generic_engine) as expected:
        await write_all(generic, existing, batch)
    with sent(fast_engine) as got:
        await write_all(fast, existing, batch)

    assert got == expected
    stored = await dump(fast_engine)
    assert stored == await dump(generic_engine)
    assert all(stored.values()) and len(stored["calls"]) == len(calls) + 45
    # every statement ran fast but PostgreSQL's single-row edge insert (it has RETURNING id)
    slow = {slot for slot, prepared in fast._prepared.items() if prepared is None}
    allowed = {slot for slot in slow if slot[0] == "edges" and not slot[2] and _pg(fast_engine)}
    assert slow == allowed
    assert {table for table, _keys, _many in fast._prepared} == set(TABLE_ORDER) - {"run_merges"}
    assert not generic._prepared or not any(generic._prepared.values())


def _pg(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def call_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.exec_driver_sql("SELECT id FROM calls")).scalars())


BAD_VALUES = {
    "a string timestamp": ("started_at", "yesterday"),  # TypeError in UtcDateTime
    "an out of range timestamp": ("started_at", 1e20),  # fromtimestamp: ValueError/OverflowError
    "an unserializable JSON value": ("flags", {1, 2}),  # orjson: TypeError
    "NULL in a NOT NULL column": ("provider", None),  # the database: IntegrityError
    "text in an integer column": ("status", "two hundred"),  # SQLite takes it; asyncpg refuses
}


@pytest.mark.parametrize("column, value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
async def test_a_bad_record_fails_the_same_way_and_is_set_aside(
    engine_pair: tuple[AsyncEngine, AsyncEngine], column: str, value: Any
) -> None:
    outcomes = []
    for engine, fast in zip(engine_pair, (False, True), strict=True):
        good = [make_record(guard_events=GUARDS[:1]) for _ in range(3)]
        bad = make_record()
        bad.calls[0][column] = value
        try:
            await SqlSink(engine, fast=fast).write([good[0], bad, *good[1:]])
            outcome: tuple[Any, ...] = ("written",)
        except RecordRejected as exc:
            assert exc.rejected == [bad]
            outcome = ("rejected", type(exc.cause), type(getattr(exc.cause, "orig", None)))
        assert {r.calls[0]["id"] for r in good} <= await call_ids(engine)
        outcomes.append(outcome)
    generic, fast_outcome = outcomes
    assert fast_outcome == generic
    if column in ("started_at", "flags"):  # failed while binding, before the database
        assert generic[:2] == ("rejected", StatementError)
    elif column == "provider" or _pg(engine_pair[0]):
        assert generic[0] == "rejected"


@pytest.mark.parametrize("fast", [False, True])
async def test_an_update_with_an_unknown_column_is_rejected_on_both_paths(
    engine: AsyncEngine, fast: bool
) -> None:
    record = make_record()
    bad = Record(call_updates=[{"id": record.calls[0]["id"], "nonsense": 1}])
    with pytest.raises(RecordRejected) as caught:
        await SqlSink(engine, fast=fast).write([record, bad])
    assert caught.value.rejected == [bad] and isinstance(caught.value.cause, ValueError)


async def test_a_database_without_tables_is_retried_not_rejected_on_the_fast_path(tmp_path) -> None:
    from proxy.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        errors = []
        for fast in (False, True):
            with pytest.raises(Exception) as caught:
                await SqlSink(engine, fast=fast).write([make_record(), make_record()])
            assert not isinstance(caught.value, RecordRejected)
            errors.append((type(caught.value), type(getattr(caught.value, "orig", None))))
        assert errors[0] == errors[1]
    finally:
        await engine.dispose()


def test_every_recorded_table_is_covered() -> None:
    assert set(ORDER) == set(TABLES) and set(ORDER) | {"call_updates", "run_merges"} == set(TABLE_ORDER)


def _sqlite_datetime_processors() -> tuple[Any, Any]:
    """(UtcDateTime's SQLite bind processor, TypeDecorator's composition it replaces)."""
    dialect = sqlite_dialect()
    impl = UtcDateTime().dialect_impl(dialect)
    return impl.bind_processor(dialect), TypeDecorator.bind_processor(impl, dialect)


def test_sqlite_datetime_text_is_the_composed_processors_for_every_epoch_float() -> None:
    direct, composed = _sqlite_datetime_processors()
    assert direct is not composed
    rng = random.Random(7)
    seconds = [rng.uniform(-1e10, 2.5e11) for _ in range(20_000)]
    seconds += [rng.uniform(1.6e9, 1.8e9) for _ in range(20_000)]
    seconds += [round(rng.uniform(1.6e9, 1.8e9), 6) for _ in range(20_000)]
    whole = [float(rng.randrange(-2_000_000_000, 4_000_000_000)) for _ in range(5_000)]
    seconds += [w + d for w in whole for d in (0.0, 5e-7, 9.999995e-1, 0.9999996, -5e-7, -0.9999996)]
    seconds += [0.0, -0.0, -0.5, 1e-7, -1e-7, T0, 4_102_444_800.999999, 253_402_300_799.0, 253_402_300_798.5]
    for value in seconds:
        assert direct(value) == composed(value), value


def test_sqlite_datetime_text_leaves_other_values_and_errors_as_they_were() -> None:
    direct, composed = _sqlite_datetime_processors()
    values = [None, 0, 1_700_000_000, True, datetime(2025, 1, 2, 3, 4, 5, 6), datetime.now(UTC),
              datetime.now(timezone(timedelta(hours=-7)))]  # fmt: skip
    assert [direct(v) for v in values] == [composed(v) for v in values]
    for bad in (float("nan"), float("inf"), -float("inf"), 1e20, "2025-01-01"):
        with pytest.raises(Exception) as ours:
            direct(bad)
        with pytest.raises(Exception) as theirs:
            composed(bad)
        assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))


async def test_copy_path_stores_exactly_what_the_generic_path_does(
    engine_pair: tuple[AsyncEngine, AsyncEngine],
) -> None:
    generic_engine, copy_engine = engine_pair
    calls = call_records()
    ids = [r.calls[0]["id"] for r in calls]
    rng = random.Random(11)
    batch = [*calls, *pipeline_records(40), *linker_records(rng, ids), *pipeline_records(5, agent_name="solo")]
    generic, copying = SqlSink(generic_engine, fast=False), SqlSink(copy_engine, copy_min_rows=2)

    await generic.write(batch)
    with sent(copy_engine) as statements:
        await copying.write(batch)

    stored = await dump(copy_engine)
    assert stored == await dump(generic_engine)
    assert len(stored["calls"]) == len(calls) + 45 and stored["guard_events"]
    copied = not any(s.startswith("('INSERT INTO calls") for s in statements)
    assert copied == _pg(copy_engine)  # SQLite has no COPY: the INSERTs as before


async def test_a_replayed_batch_falls_back_from_copy_and_stores_each_row_once(
    engine_pair: tuple[AsyncEngine, AsyncEngine],
) -> None:
    generic_engine, copy_engine = engine_pair
    batch = [*call_records(), *pipeline_records(20)]
    generic, copying = SqlSink(generic_engine, fast=False), SqlSink(copy_engine, copy_min_rows=2)
    for sink in (generic, copying):
        await sink.write(batch[:7])
        await sink.write(batch)  # the first 7 again: COPY meets known ids, the batch is redone

    assert await dump(copy_engine) == await dump(generic_engine)


async def test_copy_runs_inside_the_batch_transaction(engine: AsyncEngine) -> None:
    batch = [make_record(guard_events=GUARDS[:1]) for _ in range(20)]
    async with engine.connect() as conn:
        transaction = await conn.begin()
        await SqlSink(engine, copy_min_rows=2)._apply(conn, batch, copy=True)
        await transaction.rollback()
    assert await call_ids(engine) == set()


@pytest.mark.parametrize("column, value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
async def test_a_bad_record_in_a_copied_batch_is_set_aside(engine: AsyncEngine, column: str, value: Any) -> None:
    good = [make_record(guard_events=GUARDS[:1]) for _ in range(20)]
    bad = make_record()
    bad.calls[0][column] = value
    try:
        await SqlSink(engine, copy_min_rows=2).write([*good[:10], bad, *good[10:]])
    except RecordRejected as exc:
        assert exc.rejected == [bad]
    assert {r.calls[0]["id"] for r in good} <= await call_ids(engine)
