"""Query API helpers: filters and stable cursor pagination (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.store.db import SqlSink
from proxy.store.queries import get_call, list_calls, list_guard_events
from proxy.store.rows import Record
from tests.store.factories import make_record

T0 = 1_750_000_000.0


async def seed(engine: AsyncEngine) -> list[Record]:
    """Twelve calls a second apart (two sharing a timestamp) across agents, models and outcomes."""
    specs: list[dict[str, Any]] = [
        dict(agent="planner", model_requested="gpt-4o", status=200, outcome="ok"),
        dict(agent="worker", model_requested="claude-sonnet-4", status=429, outcome="denied"),
        dict(agent="worker", model_requested="gpt-4o", status=502, outcome="unreachable"),
    ]
    records = [
        make_record(policy="full", started_at=T0 + min(i, 10), run_id=f"run-{i % 2}", **specs[i % 3])
        for i in range(12)
    ]
    await SqlSink(engine).write(records)
    return records


async def all_pages(engine: AsyncEngine, **filters) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        page, cursor = await list_calls(engine, cursor=cursor, limit=5, **filters)
        seen += [c["id"] for c in page]
        if cursor is None:
            return seen


def newest_first(records: list[Record]) -> list[str]:
    rows = sorted((r.calls[0] for r in records), key=lambda c: (c["started_at"], c["id"]), reverse=True)
    return [c["id"] for c in rows]


async def test_pages_walk_every_call_once_newest_first(engine: AsyncEngine) -> None:
    records = await seed(engine)
    assert await all_pages(engine) == newest_first(records)


async def test_a_page_is_stable_while_newer_calls_arrive(engine: AsyncEngine) -> None:
    records = await seed(engine)
    first, cursor = await list_calls(engine, limit=5)
    await SqlSink(engine).write([make_record(started_at=T0 + 100)])
    second, _ = await list_calls(engine, limit=5, cursor=cursor)
    assert [c["id"] for c in first + second] == newest_first(records)[:10]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"agent": "worker"}, 8),
        ({"model": "gpt-4o"}, 8),
        ({"status": "denied"}, 4),
        ({"status": 429}, 4),
        ({"status": "5xx"}, 4),
        ({"run_id": "run-1"}, 6),
        ({"agent": "worker", "model": "gpt-4o"}, 4),
        ({"since": T0 + 5, "until": T0 + 8}, 3),
        ({"since": datetime.fromtimestamp(T0 + 10, UTC).isoformat()}, 2),
    ],
)
async def test_filters_select_matching_calls(engine: AsyncEngine, filters: dict, expected: int) -> None:
    await seed(engine)
    assert len(await all_pages(engine, **filters)) == expected


async def test_list_rows_are_json_ready_and_carry_no_content(engine: AsyncEngine) -> None:
    await seed(engine)
    page, _ = await list_calls(engine, limit=1)
    (call,) = page
    assert "request_content" not in call and "response_content" not in call
    assert datetime.fromisoformat(call["started_at"]) == datetime.fromtimestamp(T0 + 10, UTC)


async def test_get_call_returns_content_and_guard_events(engine: AsyncEngine) -> None:
    events = [
        {"rule": "loops", "kind": "loop", "action": "deny", "reason": "3 repeats", "data": {"n": 3}, "at": T0}
    ]
    record = make_record(policy="full", guard_events=events)
    await SqlSink(engine).write([record])
    call = await get_call(engine, record.calls[0]["id"])
    assert call is not None
    assert call["request_content"] == record.calls[0]["request_content"]
    assert [(e["rule"], e["data"]) for e in call["guard_events"]] == [("loops", {"n": 3})]
    assert await get_call(engine, "nope") is None


async def test_guard_events_list_filters_by_rule(engine: AsyncEngine) -> None:
    for rule in ("loops", "budget", "loops"):
        await SqlSink(engine).write([make_record(guard_events=[{"rule": rule, "action": "flag"}])])
    page, cursor = await list_guard_events(engine, rule="loops")
    assert [e["rule"] for e in page] == ["loops", "loops"] and cursor is None


async def test_bad_cursor_and_limit_are_value_errors(sqlite_engine: AsyncEngine) -> None:
    with pytest.raises(ValueError, match="invalid cursor"):
        await list_calls(sqlite_engine, cursor="not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        await list_calls(sqlite_engine, limit=0)
    with pytest.raises(ValueError, match="not a time"):
        await list_calls(sqlite_engine, since="yesterday")
