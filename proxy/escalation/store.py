"""Where escalations and alert deliveries live: the SQL store, and its in-memory twin.

Escalations are few and need read-after-write (the API acknowledges what the tracker opened)
and atomic claims (two replicas must not both alert on one breach), so they are written
directly, not through the batching writer.  Every method runs in background tasks or API
handlers, awaits the database, and raises on database errors.

    update(id, changes, expect)   UPDATE ... WHERE id AND every expected value still holds:
                                  the row after the change, or None when someone got there first
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.escalation.model import Escalation, epoch
from proxy.store.models import ESCALATION_TABLES

Expect = Mapping[str, Any]  # column → value; a tuple means "one of"; None means IS NULL


class EscalationStore(Protocol):
    async def insert(self, esc: Escalation) -> None: ...
    async def get(self, esc_id: str) -> Escalation | None: ...
    async def update(self, esc_id: str, changes: Mapping[str, Any], expect: Expect) -> Escalation | None: ...
    async def unfinished(self) -> list[Escalation]: ...
    async def search(self, *, status: str | None = None, run_id: str | None = None, rule: str | None = None,
                     dead: bool | None = None, limit: int = 100) -> list[Escalation]: ...
    async def add_delivery(self, row: Mapping[str, Any]) -> None: ...
    async def deliveries(self, esc_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]: ...
    async def route_stats(self) -> dict[str, dict[str, Any]]: ...


DEAD_STATES = ("dead", "degraded")


def _stats(rows: Iterable[Mapping[Any, Any]]) -> dict[str, dict[str, Any]]:
    """(route, outcome, count, last at) rows → per route: counts and last time per outcome."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = out.setdefault(r["route"], {"delivered": 0, "failed": 0, "last_delivered_at": None,
                                            "last_failed_at": None})
        outcome = r["outcome"]
        entry[outcome] = int(r["n"])
        entry[f"last_{outcome}_at"] = epoch(r["last"])
    return out


class SqlEscalationStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._esc = ESCALATION_TABLES["escalations"]
        self._dlv = ESCALATION_TABLES["alert_deliveries"]

    async def insert(self, esc: Escalation) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(self._esc), [esc.row()])

    async def get(self, esc_id: str) -> Escalation | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(self._esc).where(self._esc.c.id == esc_id))).mappings().first()
        return Escalation.from_row(row) if row is not None else None

    async def update(self, esc_id: str, changes: Mapping[str, Any], expect: Expect) -> Escalation | None:
        t = self._esc
        conds = [t.c.id == esc_id, *(_cond(t.c[k], v) for k, v in expect.items())]
        async with self._engine.begin() as conn:
            done = await conn.execute(sa.update(t).where(*conds).values(dict(changes)))
            if done.rowcount != 1:
                return None
            row = (await conn.execute(sa.select(t).where(t.c.id == esc_id))).mappings().first()
        return Escalation.from_row(row) if row is not None else None

    async def unfinished(self) -> list[Escalation]:
        t = self._esc
        query = sa.select(t).where(t.c.status != "resolved", t.c.drill.is_(False))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Escalation.from_row(r) for r in rows]

    async def search(self, *, status: str | None = None, run_id: str | None = None, rule: str | None = None,
                     dead: bool | None = None, limit: int = 100) -> list[Escalation]:
        t = self._esc
        query = sa.select(t).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
        for col, value in (("status", status), ("run_id", run_id), ("rule", rule)):
            if value is not None:
                query = query.where(t.c[col] == value)
        if dead is not None:
            dead_cond = t.c.notify_state.in_(DEAD_STATES)
            query = query.where(dead_cond if dead else sa.not_(dead_cond))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Escalation.from_row(r) for r in rows]

    async def add_delivery(self, row: Mapping[str, Any]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(self._dlv), [dict(row)])

    async def deliveries(self, esc_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        if not esc_ids:
            return {}
        t = self._dlv
        query = sa.select(t).where(t.c.escalation_id.in_(list(esc_ids))).order_by(t.c.at, t.c.id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        out: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            out.setdefault(r["escalation_id"], []).append(_delivery_json(r))
        return out

    async def route_stats(self) -> dict[str, dict[str, Any]]:
        t = self._dlv
        query = (
            sa.select(t.c.route, t.c.outcome, sa.func.count().label("n"), sa.func.max(t.c.at).label("last"))
            .group_by(t.c.route, t.c.outcome)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return _stats(rows)


def _cond(col: Any, value: Any) -> Any:
    if value is None:
        return col.is_(None)
    if isinstance(value, tuple):
        return col.in_(value)
    return col == value


def _delivery_json(row: Mapping[Any, Any]) -> dict[str, Any]:
    out = dict(row)
    at = epoch(out["at"])
    out["at"] = at
    return out


class MemoryEscalationStore:
    """The store's in-process twin (unit tests, and runs without a database)."""

    def __init__(self) -> None:
        self.rows: dict[str, Escalation] = {}
        self.delivery_rows: list[dict[str, Any]] = []

    async def insert(self, esc: Escalation) -> None:
        if esc.id in self.rows:
            raise ValueError(f"duplicate escalation id {esc.id}")
        self.rows[esc.id] = copy.deepcopy(esc)

    async def get(self, esc_id: str) -> Escalation | None:
        esc = self.rows.get(esc_id)
        return copy.deepcopy(esc) if esc is not None else None

    async def update(self, esc_id: str, changes: Mapping[str, Any], expect: Expect) -> Escalation | None:
        esc = self.rows.get(esc_id)
        if esc is None or not all(_holds(getattr(esc, k), v) for k, v in expect.items()):
            return None
        for k, v in changes.items():
            setattr(esc, k, v)
        return copy.deepcopy(esc)

    async def unfinished(self) -> list[Escalation]:
        return [copy.deepcopy(e) for e in self.rows.values() if e.status != "resolved" and not e.drill]

    async def search(self, *, status: str | None = None, run_id: str | None = None, rule: str | None = None,
                     dead: bool | None = None, limit: int = 100) -> list[Escalation]:
        found = [
            e for e in self.rows.values()
            if (status is None or e.status == status) and (run_id is None or e.run_id == run_id)
            and (rule is None or e.rule == rule) and (dead is None or (e.notify_state in DEAD_STATES) == dead)
        ]  # fmt: skip
        found.sort(key=lambda e: (e.created_at, e.id), reverse=True)
        return [copy.deepcopy(e) for e in found[:limit]]

    async def add_delivery(self, row: Mapping[str, Any]) -> None:
        self.delivery_rows.append(dict(row))

    async def deliveries(self, esc_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for r in self.delivery_rows:
            if r["escalation_id"] in esc_ids:
                out.setdefault(r["escalation_id"], []).append(dict(r))
        return out

    async def route_stats(self) -> dict[str, dict[str, Any]]:
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for r in self.delivery_rows:
            g = groups.setdefault((r["route"], r["outcome"]), {"route": r["route"], "outcome": r["outcome"],
                                                                "n": 0, "last": None})
            g["n"] += 1
            g["last"] = max(g["last"] or 0.0, r["at"])
        return _stats(groups.values())


def _holds(actual: Any, expected: Any) -> bool:
    if isinstance(expected, tuple):
        return actual in expected
    return bool(actual is None) if expected is None else bool(actual == expected)
