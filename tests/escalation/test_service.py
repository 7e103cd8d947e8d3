"""The Escalations service fed finished calls as the pipeline does (no proxy): detection,
dedup of verdict escalations, acks from traffic, guard alerts, taint updates for the writer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from proxy.backoff import Backoff
from proxy.call import Message, ToolCall
from proxy.escalation.notify import MemoryEvents
from proxy.escalation.service import Escalations
from proxy.escalation.store import MemoryEscalationStore
from proxy.guards.counters import MemoryCounterStore
from proxy.rules import load_rules
from proxy.store.rows import Record
from tests.guards.factory import finish, make_call

RULES = """
routes:
  log: {}
rules:
  - {name: human-review, kind: escalation, tools: [escalate_to_human], ack_within: 1h, notify: [log]}
  - {name: stuck, kind: loop, detect: retry, action: escalate, notify: [log]}
"""


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[Escalations]:
    (tmp_path / "r.yaml").write_text(RULES)
    ruleset = load_rules(tmp_path)
    written: list[Record] = []
    service = Escalations(MemoryEscalationStore(), MemoryCounterStore(), lambda: ruleset, written.append,
                          events=MemoryEvents(), sync_s=3600.0)
    service.written = written  # type: ignore[attr-defined]
    await service.start()
    try:
        yield service
    finally:
        await service.aclose()


def _link(call: Any, run: str = "run-1", edges: list[Any] | None = None) -> Any:
    return SimpleNamespace(agent=call.agent, run_id=run, edges=edges or [], flags=[])


async def _settle(svc: Escalations) -> None:
    """Every queued piece of work done, including the one in hand (an empty queue is not enough:
    the last call may still be retrying)."""
    for _ in range(3):  # work may queue alerts, and delivering an alert may queue more work
        await asyncio.wait_for(svc.queue.join(), 10)
        await asyncio.wait_for(svc.notifier.queue.join(), 10)


async def test_open_then_ack_by_tool_result_and_notify_state(svc: Escalations) -> None:
    asking = finish(make_call(agent="support"), tool_calls=[ToolCall("c1", "escalate_to_human", '{"reason": "4k"}')])
    svc.observe(asking, _link(asking))
    answer = make_call(agent="support", messages=[Message("tool", "yes", tool_call_id="c1")])
    svc.observe(finish(answer), _link(answer))
    await _settle(svc)
    [esc] = await svc.store.search()
    assert (esc.status, esc.ack_source, esc.notify_state, esc.created_at) == (
        "acknowledged", "tool_result", "delivered", asking.ended_at)


async def test_a_looping_agent_escalates_once_and_the_guard_alert_is_deduplicated(svc: Escalations) -> None:
    events = svc.alerts.events
    for _ in range(5):
        call = finish(make_call(agent="fetcher"))
        call.guard_events = [{"rule": "stuck", "kind": "loop", "action": "escalate", "reason": "retry storm"}]
        svc.observe(call, _link(call))
    await _settle(svc)
    [esc] = await svc.store.search()
    assert esc.source == "verdict" and esc.details["from_rule"] == "stuck"
    kinds = [a.kind for a in events.alerts]  # type: ignore[union-attr]
    assert kinds.count("escalation.opened") == 1 and kinds.count("guard.escalate") == 1
    assert svc.stats.total("suppressed") == 4


async def test_human_input_in_the_run_acknowledges(svc: Escalations) -> None:
    esc = await svc.create(rule=None, reason="please look", run_id="run-1")
    later = finish(make_call(agent="support"))
    later.started_at = esc.created_at + 1
    svc.observe(later, _link(later, edges=[SimpleNamespace(kind="human", source="human:ab", evidence={})]))
    await _settle(svc)
    current = await svc.store.get(esc.id)
    assert current is not None and current.ack_source == "human"
    with pytest.raises(LookupError, match="no escalation rule named 'nope'"):
        await svc.create(rule="nope", reason="x")


async def test_taint_goes_to_the_writer_as_a_call_update(svc: Escalations) -> None:
    cut = finish(make_call(agent="planner"), text="an outline that was cut", finish_reason="length")
    cut.guard_events = [{"rule": "fits", "kind": "context", "action": "flag"}]
    svc.observe(cut, _link(cut))
    [record] = svc.written  # type: ignore[attr-defined]
    assert record.call_updates == [{"id": cut.id, "tainted_by": None, "depth": 0,
                                    "flags": ["fits", "cascade_root", "fault:guard", "fault:length"]}]


class _DownStore(MemoryEscalationStore):
    """The database is down for writes."""

    async def insert(self, esc: Any) -> None:
        raise OSError("connection refused")


async def test_escalation_steps_failing_while_the_database_is_down_are_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "r.yaml").write_text(RULES)
    ruleset = load_rules(tmp_path)
    service = Escalations(_DownStore(), MemoryCounterStore(), lambda: ruleset, lambda _: None,
                          events=MemoryEvents(), sync_s=3600.0)
    service.retry_backoff = Backoff(0.001)
    await service.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="interlock"):
            for i in range(20):
                call = finish(make_call(agent="support"),
                              tool_calls=[ToolCall(f"c{i}", "escalate_to_human", '{"reason": "x"}')])
                service.observe(call, _link(call))
            await _settle(service)
    finally:
        await service.aclose()
    reported = [r for r in caplog.records if r.levelno >= logging.WARNING and "escalation" in r.getMessage()]
    assert len(reported) == 2, [r.getMessage() for r in reported]  # the step, then the work given up
    assert {"escalation step (database) failed", "escalation work failed"} == {
        r.getMessage().split(":")[0] for r in reported}
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) >= 20 * 4  # each call still on record
