"""The escalation store on SQLite and PostgreSQL: rows round-trip, claims are conditional."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.escalation import alerts
from proxy.escalation.model import Attempt, Delivery
from proxy.escalation.store import SqlEscalationStore
from proxy.store.db import upgrade_engine
from tests.escalation.factory import escalation, rule
from tests.store.conftest import pg_database, sqlite_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    database = sqlite_database(tmp_path) if request.param == "sqlite" else pg_database()
    async with database as engine:
        await upgrade_engine(engine)
        yield engine


async def test_round_trip_and_conditional_claims(engine: AsyncEngine) -> None:
    store = SqlEscalationStore(engine)
    esc = escalation(details={"tool": "escalate_to_human", "arguments": {"reason": "é"}}, ack_due_at=1_000_010.5,
                     tool_call_id="call_1", updated_at=1_000_000.0)
    await store.insert(esc)
    assert await store.get(esc.id) == esc
    claim = {"ack_breached_at": 1_000_011.0, "hold": True}
    won = await store.update(esc.id, claim, {"ack_breached_at": None, "status": ("open", "acknowledged")})
    assert won is not None and won.hold and won.ack_breached_at == 1_000_011.0
    assert await store.update(esc.id, claim, {"ack_breached_at": None}) is None, "the second claim loses"
    assert [e.id for e in await store.unfinished()] == [esc.id]
    await store.update(esc.id, {"status": "resolved"}, {})
    assert await store.unfinished() == [] and [e.id for e in await store.search(status="resolved")] == [esc.id]


async def test_deliveries_and_route_stats(engine: AsyncEngine) -> None:
    store = SqlEscalationStore(engine)
    esc = escalation()
    await store.insert(esc)
    alert = alerts.opened(esc, rule())
    ok = Delivery("d1", alert, "oncall", "delivered", [Attempt(1_000_001.0, 3.2, 200)])
    bad = Delivery("d2", alert, "pager", "failed", [Attempt(1_000_002.0, 1.0, None, "ConnectError")] * 2)
    for d in (ok, bad):
        await store.add_delivery(d.row())
    rows = (await store.deliveries([esc.id]))[esc.id]
    assert [(r["route"], r["outcome"], len(r["attempts"])) for r in rows] == [("oncall", "delivered", 1),
                                                                               ("pager", "failed", 2)]
    stats = await store.route_stats()
    assert stats["oncall"]["last_delivered_at"] == 1_000_001.0 and stats["pager"]["failed"] == 1
    await store.update(esc.id, {"notify_state": "dead"}, {})
    assert [e.id for e in await store.search(dead=True)] == [esc.id] and await store.search(dead=False) == []
