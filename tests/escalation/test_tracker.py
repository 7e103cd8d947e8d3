"""SLA clocks: acks stop them, breaches are claimed once, holds follow, restarts re-arm."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from proxy.escalation.holds import HoldBook
from proxy.escalation.model import Escalation
from proxy.escalation.store import MemoryEscalationStore
from proxy.guards.counters import MemoryCounterStore
from tests.escalation.factory import Breaches, Clock, rule, tracker


async def test_open_sets_due_times_from_the_rule() -> None:
    clock, store = Clock(), MemoryEscalationStore()
    t = tracker(store, MemoryCounterStore(), clock, [rule("{resolve_within: 1m}")], Breaches())
    esc = await t.open(rule("{resolve_within: 1m}"), source="tool", reason="help", run_id="r", created_at=clock.now - 2)
    assert esc.ack_due_at == clock.now + 8 and esc.resolve_due_at == clock.now + 58
    assert (await store.get(esc.id)) == esc and esc.notify_state == "none"


async def test_a_due_clock_breaches_once_and_an_acked_one_never() -> None:
    clock, store, seen = Clock(), MemoryEscalationStore(), Breaches()
    r = rule()
    t = tracker(store, MemoryCounterStore(), clock, [r], seen)
    late = await t.open(r, source="tool", reason="a", run_id="r1")
    acked = await t.open(r, source="tool", reason="b", run_id="r2")
    await t.ack(acked.id, by="bob", source="api")
    clock.advance(11)
    due = t.next_due()
    assert due is not None and due[2].id == late.id
    assert await t.breach(due[2], due[1]) is not None
    assert await t.breach(due[2], due[1]) is None, "a breach is claimed once"
    assert seen.seen == [(late.id, "ack")] and t.next_due() is None


async def test_two_replicas_alert_a_breach_once() -> None:
    clock, store, counters = Clock(), MemoryEscalationStore(), MemoryCounterStore()
    r = rule()
    a_seen, b_seen = Breaches(), Breaches()
    a, b = tracker(store, counters, clock, [r], a_seen), tracker(store, counters, clock, [r], b_seen)
    esc = await a.open(r, source="tool", reason="x", run_id="r1")
    await b.sync()
    clock.advance(11)
    for t in (a, b):
        due = t.next_due()
        assert due is not None
        await t.breach(due[2], due[1])
    assert len(a_seen.seen) + len(b_seen.seen) == 1 and b.next_due() is None and esc.id in a.unfinished


async def test_hold_is_set_on_breach_and_released_by_ack() -> None:
    clock, store, counters = Clock(), MemoryEscalationStore(), MemoryCounterStore()
    r = rule("{on_breach: hold}")
    t = tracker(store, counters, clock, [r], Breaches())
    esc = await t.open(r, source="tool", reason="x", run_id="r1", tool_call_id="call_1")
    clock.advance(11)
    await t.breach(esc, "ack")
    [hold] = await HoldBook(counters).holds("r1")
    assert (hold.escalation_id, hold.tool_call_id, hold.phase) == (esc.id, "call_1", "ack")
    assert t.held_runs() == ["r1"]
    done = await t.ack(esc.id, by="ops", source="api")
    assert done is not None and not done.hold and await HoldBook(counters).holds("r1") == []


async def test_a_restarted_tracker_rearms_clocks_and_holds_from_the_store() -> None:
    clock, store = Clock(), MemoryEscalationStore()
    r = rule("{on_breach: hold}")
    first = tracker(store, MemoryCounterStore(), clock, [r], Breaches())
    pending = await first.open(r, source="tool", reason="x", run_id="r1")
    held = await first.open(r, source="tool", reason="y", run_id="r2")
    clock.advance(11)
    await first.breach(held, "ack")
    fresh_counters, seen = MemoryCounterStore(), Breaches()
    second = tracker(store, fresh_counters, clock, [r], seen)  # a new process: empty memory
    await second.sync()
    assert [h.escalation_id for h in await HoldBook(fresh_counters).holds("r2")] == [held.id]
    due = second.next_due()
    assert due is not None and due[2].id == pending.id
    await second.breach(due[2], due[1])
    assert seen.seen == [(pending.id, "ack")]


async def test_resolve_acknowledges_and_ends_every_clock() -> None:
    clock, store = Clock(), MemoryEscalationStore()
    r = rule("{resolve_within: 1m}")
    t = tracker(store, MemoryCounterStore(), clock, [r], Breaches())
    esc = await t.open(r, source="api", reason="x")
    done = await t.resolve(esc.id, by="carol")
    assert done is not None and done.status == "resolved" and done.acked_by == "carol"
    assert t.next_due() is None and await t.resolve(esc.id, by="x") == done
    assert await t.ack("nope", by="x", source="api") is None


async def test_the_clock_task_fires_on_time() -> None:
    import asyncio
    import time

    store, seen = MemoryEscalationStore(), Breaches()
    r = rule("{ack_within: 200ms}")
    t = tracker(store, MemoryCounterStore(), Clock(), [r], seen)
    t.clock = time.time
    await t.start()
    try:
        esc = await t.open(r, source="tool", reason="x", run_id="r1")
        for _ in range(100):
            if seen.seen:
                break
            await asyncio.sleep(0.01)
        assert seen.seen == [(esc.id, "ack")]
    finally:
        await t.aclose()


class _DownStore(MemoryEscalationStore):
    """The database is down: every read fails."""

    def __init__(self, reads: int) -> None:
        super().__init__()
        self.reads, self.wanted = 0, reads
        self.enough = asyncio.Event()

    async def unfinished(self) -> list[Escalation]:
        self.reads += 1
        if self.reads >= self.wanted:
            self.enough.set()
        raise OSError("connection refused")


async def test_a_clock_failing_every_tick_logs_once_not_every_tick(caplog: pytest.LogCaptureFixture) -> None:
    store = _DownStore(reads=30)
    t = tracker(store, MemoryCounterStore(), Clock(), [rule()], Breaches())
    t.clock, t.sync_s, t.retry_s = time.time, 0.001, 0.001
    with caplog.at_level(logging.INFO, logger="interlock.escalations"):
        await t.start()
        try:
            await asyncio.wait_for(store.enough.wait(), timeout=5)
        finally:
            await t.aclose()
    assert store.reads >= 30
    clock_lines = [r for r in caplog.records if "escalation clock" in r.getMessage()]
    assert len(clock_lines) == 1 and "OSError: connection refused" in clock_lines[0].getMessage()
    assert sum(r.exc_info is not None for r in caplog.records) <= 1
