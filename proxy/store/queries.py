"""Read side for the admin API and the CLI: filtered, cursor-paginated, JSON-ready dicts.

Pages run newest first on (timestamp desc, id desc).  The cursor is opaque to clients: the
(timestamp, id) of the last row served, so pages stay stable while new calls arrive.
Runs in API handlers: awaits the database, raises ValueError for a bad filter or cursor.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.store.models import TABLES

MAX_LIMIT = 1000
CONTENT_COLUMNS = ("request_content", "response_content")
TimeArg = datetime | float | int | str | None


async def list_calls(
    engine: AsyncEngine,
    *,
    agent: str | None = None,
    model: str | None = None,
    status: str | int | None = None,
    since: TimeArg = None,
    until: TimeArg = None,
    run_id: str | None = None,
    api_key_hash: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], str | None]:
    """Calls without content, newest first, and the cursor of the next page (None at the end).
    `status` is an outcome (`ok`, `denied`, ...), an HTTP status (`429`) or a class (`5xx`);
    `model` matches the requested model; `since`/`until` are datetimes, epoch seconds or ISO."""
    t = TABLES["calls"]
    query = sa.select(*[c for c in t.c if c.name not in CONTENT_COLUMNS])
    equal = {"agent": agent, "model_requested": model, "run_id": run_id, "api_key_hash": api_key_hash}
    query = query.where(*[t.c[k] == v for k, v in equal.items() if v is not None])
    if status is not None:
        query = query.where(_status_filter(t, status))
    query = query.where(*_time_range(t.c.started_at, since, until))
    return await _page(engine, query, t.c.started_at, t.c.id, cursor, limit)


async def get_call(engine: AsyncEngine, call_id: str) -> dict[str, Any] | None:
    """One call with its content and guard events, or None when unknown."""
    calls, events = TABLES["calls"], TABLES["guard_events"]
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(calls).where(calls.c.id == call_id))).mappings().first()
        if row is None:
            return None
        found = await conn.execute(
            sa.select(events).where(events.c.call_id == call_id).order_by(events.c.at, events.c.id)
        )
        guard_events = [_jsonable(e) for e in found.mappings()]
    return {**_jsonable(row), "guard_events": guard_events}


async def list_guard_events(
    engine: AsyncEngine,
    *,
    rule: str | None = None,
    action: str | None = None,
    agent: str | None = None,
    run_id: str | None = None,
    call_id: str | None = None,
    since: TimeArg = None,
    until: TimeArg = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], str | None]:
    """Guard events newest first, filtered, and the cursor of the next page."""
    t = TABLES["guard_events"]
    equal = {"rule": rule, "action": action, "agent": agent, "run_id": run_id, "call_id": call_id}
    query = sa.select(t).where(*[t.c[k] == v for k, v in equal.items() if v is not None])
    query = query.where(*_time_range(t.c.at, since, until))
    return await _page(engine, query, t.c.at, t.c.id, cursor, limit)


async def _page(
    engine: AsyncEngine,
    query: sa.Select[Any],
    ts: sa.Column[Any],
    key: sa.Column[Any],
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if cursor:
        at, last = decode_cursor(cursor)
        query = query.where(sa.or_(ts < at, sa.and_(ts == at, key < last)))
    query = query.order_by(ts.desc(), key.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    page = rows[:limit]
    more = len(rows) > limit
    return [_jsonable(r) for r in page], encode_cursor(
        page[-1][ts.name], page[-1][key.name]
    ) if more else None


def encode_cursor(at: datetime, key: str) -> str:
    """Opaque page cursor for the row at (at, key)."""
    raw = orjson.dumps([at.astimezone(UTC).isoformat(), key])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of `encode_cursor`; ValueError("invalid cursor ...") for anything else."""
    try:
        at, key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(at).astimezone(UTC), str(key)
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError):
        raise ValueError(f"invalid cursor {cursor!r}") from None


def _status_filter(t: sa.Table, status: str | int) -> sa.ColumnElement[bool]:
    text = str(status).strip().lower()
    if text.isdigit():
        return t.c.status == int(text)
    if len(text) == 3 and text[0].isdigit() and text[1:] == "xx":
        low = int(text[0]) * 100
        return sa.and_(t.c.status >= low, t.c.status < low + 100)
    return t.c.outcome == text


def _time_range(column: sa.Column[Any], since: TimeArg, until: TimeArg) -> list[sa.ColumnElement[bool]]:
    bounds = []
    if since is not None:
        bounds.append(column >= parse_time(since))
    if until is not None:
        bounds.append(column < parse_time(until))
    return bounds


def parse_time(value: datetime | float | int | str) -> datetime:
    """An aware UTC datetime from a datetime (naive = UTC), epoch seconds, or ISO 8601 text."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    text = value.strip()
    try:
        return parse_time(float(text))
    except ValueError:
        pass
    try:
        return parse_time(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise ValueError(f"not a time: {value!r} (use ISO 8601 or epoch seconds)") from None


def _jsonable(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


async def list_runs(
    engine: AsyncEngine,
    *,
    status: str | None = None,
    agent: str | None = None,
    since: TimeArg = None,
    until: TimeArg = None,
    id_prefix: str | None = None,
    flag: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], str | None]:
    """Runs, most recently active first.  `agent` keeps runs the agent took part in;
    `id_prefix` runs whose id starts with it; `flag` runs carrying that flag."""
    t = TABLES["runs"]
    query = sa.select(t)
    if id_prefix:
        query = query.where(t.c.id.like(_like_prefix(id_prefix), escape="\\"))
    if flag:  # flags is a JSON list of strings: look for the element as JSON spells it
        element = "%" + _like_prefix(orjson.dumps(flag).decode())
        query = query.where(sa.cast(t.c.flags, sa.Text).like(element, escape="\\"))
    if status is not None:
        query = query.where(t.c.status == status)
    if agent is not None:
        calls = TABLES["calls"]
        query = query.where(t.c.id.in_(sa.select(calls.c.run_id).where(calls.c.agent == agent)))
    query = query.where(*_time_range(t.c.last_at, since, until))
    return await _page(engine, query, t.c.last_at, t.c.id, cursor, limit)


async def get_run(engine: AsyncEngine, run_id: str) -> dict[str, Any] | None:
    t = TABLES["runs"]
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(t).where(t.c.id == run_id))).mappings().first()
    return _jsonable(row) if row is not None else None


async def run_calls(engine: AsyncEngine, run_id: str, *, limit: int = 10_000) -> list[dict[str, Any]]:
    """Every call of a run (no content), oldest first."""
    t = TABLES["calls"]
    query = (sa.select(*[c for c in t.c if c.name not in CONTENT_COLUMNS]).where(t.c.run_id == run_id)
             .order_by(t.c.started_at, t.c.id).limit(limit))
    async with engine.connect() as conn:
        return [_jsonable(r) for r in (await conn.execute(query)).mappings().all()]


async def run_edges(engine: AsyncEngine, run_id: str) -> list[dict[str, Any]]:
    """A run's edges as `{source, target, kind, evidence}`."""
    t = TABLES["edges"]
    query = sa.select(t.c.source_call_id.label("source"), t.c.target_call_id.label("target"), t.c.kind,
                      t.c.evidence).where(t.c.run_id == run_id).order_by(t.c.id)
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings().all()]


async def list_agents(engine: AsyncEngine, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Agents seen, most recently active first."""
    t = TABLES["agents"]
    query = sa.select(t).order_by(t.c.last_seen.desc()).limit(limit)
    async with engine.connect() as conn:
        return [_jsonable(r) for r in (await conn.execute(query)).mappings().all()]


async def agent_names(engine: AsyncEngine) -> dict[str, str]:
    """Fingerprint → name of every fingerprinted agent (names stay stable across restarts)."""
    t = TABLES["agents"]
    query = sa.select(t.c.fingerprint, t.c.name).where(t.c.fingerprint.is_not(None))
    async with engine.connect() as conn:
        return {str(fp): str(name) for fp, name in (await conn.execute(query)).all()}


async def rename_agent(engine: AsyncEngine, old: str, new: str) -> int:
    """Rewrite stored rows of agent `old` as `new` (a rename, or a merge when `new` exists);
    returns the number of calls moved.  Run lists in `runs.agents` keep the old name."""
    calls, events, agents = TABLES["calls"], TABLES["guard_events"], TABLES["agents"]
    async with engine.begin() as conn:
        moved = (await conn.execute(sa.update(calls).where(calls.c.agent == old).values(agent=new))).rowcount
        await conn.execute(sa.update(events).where(events.c.agent == old).values(agent=new))
        rows = {r.name: r for r in (await conn.execute(sa.select(agents).where(agents.c.name.in_([old, new])))).all()}
        if old in rows and new in rows:
            a, b = rows[old], rows[new]
            await conn.execute(sa.update(agents).where(agents.c.name == new).values(
                calls=a.calls + b.calls, tokens=a.tokens + b.tokens,
                first_seen=min(a.first_seen, b.first_seen), last_seen=max(a.last_seen, b.last_seen)))
            await conn.execute(sa.delete(agents).where(agents.c.name == old))
        elif old in rows:
            await conn.execute(sa.update(agents).where(agents.c.name == old).values(name=new))
    return int(moved or 0)


class AmbiguousId(ValueError):
    """An id prefix matches several ids; the message lists some of them."""


async def resolve_id(engine: AsyncEngine, kind: str, given: str) -> str | None:
    """The full run or call id (`kind`) that `given` names: itself when it exists, else the
    one id starting with it (ids are hex, so a prefix copied from a table works).  None when
    nothing matches; AmbiguousId when several do."""
    columns = _ID_COLUMNS[kind]
    exact = sa.union(*[sa.select(c).where(c == given) for c in columns])
    like = _like_prefix(given)
    prefixed = sa.union(*[sa.select(c).where(c.like(like, escape="\\")) for c in columns]).limit(6)
    async with engine.connect() as conn:
        if (await conn.execute(exact)).first() is not None:
            return given
        found = sorted({r[0] for r in (await conn.execute(prefixed)).all()})
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise AmbiguousId(f"{kind} id prefix {given!r} matches several {kind}s ({shown}); give more characters")
    return found[0] if found else None


def _like_prefix(given: str) -> str:
    """A LIKE pattern (escape `\\`) matching text that starts with `given` literally."""
    return given.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


_ID_COLUMNS = {
    "run": (TABLES["runs"].c.id, TABLES["calls"].c.run_id),
    "call": (TABLES["calls"].c.id,),
}
