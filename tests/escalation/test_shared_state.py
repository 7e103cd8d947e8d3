"""Request-path state shared by replicas: held runs (EscalationSLA) and tainted outputs
(Quarantine), on the memory and the Redis counter store alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from proxy.escalation.holds import HoldBook
from proxy.guards import build_chain, make_deps
from proxy.guards.counters import CounterStore, MemoryCounterStore, RedisCounterStore
from proxy.guards.escalation import EscalationSLA
from proxy.rules import RuleSet
from tests.escalation.factory import escalation, rule
from tests.guards.factory import assistant, make_call, tool_call, tool_result, user
from tests.services import redis_url


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        yield MemoryCounterStore()
        return
    store = RedisCounterStore.from_url(redis_url(), prefix=f"interlock-test:{uuid.uuid4().hex}:")
    try:
        yield store
    finally:
        client = store._r
        keys = [k async for k in client.scan_iter(match=store._prefix + "*")]
        if keys:
            await client.delete(*keys)
        await store.aclose()


async def test_a_held_run_is_refused_until_released(counters: CounterStore) -> None:
    r = rule("{on_breach: hold, match: {agent: support}}")
    guard = EscalationSLA(r, make_deps(counters))
    esc = escalation(run_id="run-1", tool_call_id="call_9", ack_breached_at=1_000_010.0, hold=True)
    await HoldBook(counters).hold(esc)
    verdict = await guard.on_request(make_call(agent="billing", run_id="run-1"))
    assert verdict.denied and verdict.status == 423 and verdict.code == "interlock_escalation_hold"
    assert esc.id in verdict.reason and verdict.data["escalation_id"] == esc.id
    assert (await guard.on_request(make_call(run_id="run-2"))).action == "allow"
    answer = make_call(run_id="run-1", messages=[user("refund?"), assistant("", tool_call("escalate_to_human", "{}", "call_9")),
                                                 tool_result("call_9", "Approved.")])
    assert (await guard.on_request(answer)).action == "allow", "the human's answer itself passes"
    await HoldBook(counters).release(esc)
    await HoldBook(counters).hold(esc)  # a re-published hold after a restart does not undo the release
    assert (await guard.on_request(make_call(run_id="run-1"))).action == "allow"


def test_only_hold_rules_build_a_guard_and_it_watches_every_agent() -> None:
    deps = make_deps(MemoryCounterStore())
    ruleset = RuleSet(rules=(rule("{name: a, match: {agent: x}}"), rule("{name: b, on_breach: hold, match: {agent: x}}")))
    chain = build_chain(ruleset, deps)
    [guard] = chain.guards
    assert guard.name == "b" and guard.matches(make_call(agent="someone-else"))


async def test_taint_marks_are_found_by_content_from_any_replica(counters: CounterStore) -> None:
    from proxy.cascade import Taint, TaintBook, mark_of
    from tests.guards.factory import finish

    text = ("The audit of the payment service found three issues that need attention before the next "
            "release, starting with card tokens logged in plain text by the retry worker")
    source = finish(make_call(agent="auditor", run_id="run-1"), text=text, finish_reason="length")
    mark = mark_of(source, "auditor", Taint(source.id, (), 0, ("length",), ("length",)))
    await TaintBook(counters).mark("run-1", mark)
    await TaintBook(counters).mark("run-1", mark)  # the guard and the pipeline both mark it
    other = TaintBook(counters)  # another replica
    hit = await other.lookup(make_call(run_id="run-1", messages=[user("Fix these findings: " + text)]), 0.5)
    assert hit is not None and hit.mark.call_id == source.id and hit.depth == 1 and hit.overlap > 0.9
    assert len(await counters.recent("taint:run-1")) == 1
    assert await other.lookup(make_call(run_id="run-2", messages=[user(text)]), 0.5) is None
