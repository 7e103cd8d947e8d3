from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from proxy.call import Call, Chunk
from proxy.guards import ALLOW, GuardChain, GuardStats, RuleGuard, Verdict
from proxy.guards.base import Batch, Failed, Guard
from tests.guards.factory import finish, make_call, make_chunk, rule_from_yaml


class Scripted(RuleGuard[Any]):
    """A guard answering with fixed actions, recording every hook it saw."""

    def __init__(
        self,
        name: str,
        request: str = "allow",
        *,
        chunk: str = "allow",
        fail_closed: bool = False,
        agent: str | None = None,
        raises: bool = False,
    ) -> None:
        match = f", match: {{agent: '{agent}'}}" if agent else ""
        rule = rule_from_yaml(
            f"{{name: {name}, kind: cascade, fail_closed: {str(fail_closed).lower()}{match}}}"
        )
        super().__init__(rule)
        self.request_action, self.chunk_action, self.raises = request, chunk, raises
        self.seen: list[str] = []

    def _answer(self, action: str) -> Verdict:
        if self.raises:
            raise RuntimeError("boom")
        if action == "allow":
            return ALLOW
        return self.verdict(action, f"{self.name} says {action}", {"n": 1}, code="interlock_test")  # type: ignore[arg-type]

    async def on_request(self, call: Call) -> Verdict:
        self.seen.append("request")
        return self._answer(self.request_action)

    def on_chunk(self, call: Call, chunk: Chunk) -> Verdict:
        self.seen.append("chunk")
        return self._answer(self.chunk_action)

    async def on_response(self, call: Call) -> Verdict:
        self.seen.append("response")
        return self._answer("allow")

    async def release(self, call: Call) -> None:
        self.seen.append("release")


def test_chain_is_a_guard() -> None:
    assert isinstance(GuardChain([]), Guard)


async def test_runs_in_order_and_stops_at_the_first_deny() -> None:
    a, b, c = Scripted("a"), Scripted("b", "deny"), Scripted("c")
    verdict = await GuardChain([a, b, c]).on_request(make_call())
    assert verdict.denied and verdict.rule == "b"
    assert c.seen == []


async def test_deny_releases_what_earlier_guards_reserved() -> None:
    a, b = Scripted("a"), Scripted("b", "deny")
    await GuardChain([a, b]).on_request(make_call())
    assert a.seen == ["request", "release"]
    assert "release" not in b.seen


async def test_flags_and_escalations_become_guard_events() -> None:
    call = make_call()
    verdict = await GuardChain([Scripted("a", "flag"), Scripted("b", "escalate")]).on_request(call)
    assert verdict.action == "escalate"
    assert [(e["rule"], e["action"], e["hook"]) for e in call.guard_events] == [
        ("a", "flag", "request"),
        ("b", "escalate", "request"),
    ]
    assert set(call.guard_events[0]) >= {"rule", "kind", "action", "reason", "data", "at"}


async def test_a_raising_guard_is_isolated_counted_and_allows() -> None:
    stats = GuardStats()
    broken, after = Scripted("broken", raises=True), Scripted("after")
    chain = GuardChain([broken, after], stats=stats)
    verdict = await chain.on_request(make_call())
    assert verdict is ALLOW
    assert after.seen == ["request"]
    assert chain.errors_total == 1 and stats.errors_by_rule == {"broken": 1}


async def test_a_raising_fail_closed_guard_denies() -> None:
    verdict = await GuardChain([Scripted("strict", raises=True, fail_closed=True)]).on_request(make_call())
    assert verdict.denied and verdict.code == "interlock_guard_error" and verdict.status == 503


async def test_on_response_reaches_every_guard_even_after_a_deny() -> None:
    a, b, c = Scripted("a"), Scripted("b", "deny"), Scripted("c")
    chain = GuardChain([a, b, c])
    call = make_call()
    await chain.on_request(call)
    await chain.on_response(finish(call, outcome="denied", status=429))
    assert [g.seen[-1] for g in (a, b, c)] == ["response"] * 3


async def test_on_chunk_deny_is_returned_and_recorded() -> None:
    chain = GuardChain([Scripted("meter", chunk="deny")])
    call = make_call(stream=True)
    await chain.on_request(call)
    assert chain.on_chunk(call, make_chunk(10)).denied
    assert call.guard_events[-1]["hook"] == "chunk"


async def test_match_globs_select_guards() -> None:
    only_b = Scripted("only-b", "flag", agent="worker-*")
    chain = GuardChain([only_b])
    assert await chain.on_request(make_call(agent="planner")) is ALLOW
    assert (await chain.on_request(make_call(agent="worker-7"))).action == "flag"


@pytest.mark.parametrize("hook", ["on_request", "on_response"])
async def test_raising_in_any_hook_does_not_break_the_call(hook: str) -> None:
    chain = GuardChain([Scripted("broken", raises=True)])
    call = finish(make_call(), text="x")
    result = await getattr(chain, hook)(call)
    assert result.action == "allow"


async def test_concurrent_chain_keeps_rule_order_and_releases_everyone_else() -> None:
    a, b, c = Scripted("a", "flag"), Scripted("b", "deny"), Scripted("c", "flag")
    call = make_call()
    verdict = await GuardChain([a, b, c], concurrent=True).on_request(call)
    assert verdict.rule == "b"
    assert [e["rule"] for e in call.guard_events] == ["a", "b"]
    assert a.seen[-1] == "release" and c.seen[-1] == "release" and "release" not in b.seen


# ---------------------------------------------------------------------------- batches


class Recorder(Batch[Scripted]):
    """A batch that runs its guards' own hooks, recording how it was called."""

    def __init__(self, *, raises: bool = False) -> None:
        self.runs: list[list[str]] = []
        self.raises = raises

    async def on_request(
        self, guards: Sequence[Scripted], call: Call, failed: Failed[Scripted]
    ) -> list[Verdict]:
        self.runs.append([g.name for g in guards])
        if self.raises:
            raise RuntimeError("store down")
        out = []
        for guard in guards:
            try:
                out.append(await guard.on_request(call))
            except Exception as exc:
                out.append(failed(guard, exc))
            if out[-1].denied:
                break
        return out

    def on_chunk(self, guards: Sequence[Scripted], call: Call, chunk: Chunk) -> Sequence[Verdict]:
        return [v for v in (g.on_chunk(call, chunk) for g in guards) if v.action != "allow"][:1]

    async def on_response(
        self, guards: Sequence[Scripted], call: Call, failed: Failed[Scripted]
    ) -> list[Verdict]:
        return [await g.on_response(call) for g in guards]


def batched(batch: Recorder, *guards: Scripted) -> list[Scripted]:
    for guard in guards:
        guard.batch = batch
    return list(guards)


async def test_consecutive_guards_sharing_a_batch_run_through_it_in_rule_order() -> None:
    batch = Recorder()
    (a,) = batched(batch, Scripted("a"))
    c, d = batched(batch, Scripted("c"), Scripted("d", "flag"))
    call = make_call()
    verdict = await GuardChain([a, Scripted("b", "flag"), c, d]).on_request(call)
    assert batch.runs == [["a"], ["c", "d"]]
    assert verdict.action == "flag" and [e["rule"] for e in call.guard_events] == ["b", "d"]


async def test_a_deny_inside_a_batch_releases_the_guards_before_it() -> None:
    batch = Recorder()
    a, b, c = batched(batch, Scripted("a"), Scripted("b", "deny"), Scripted("c"))
    verdict = await GuardChain([a, b, c]).on_request(make_call())
    assert verdict.rule == "b" and a.seen == ["request", "release"] and c.seen == []


async def test_a_raising_batch_fails_each_of_its_guards() -> None:
    stats = GuardStats()
    a, b = batched(Recorder(raises=True), Scripted("a"), Scripted("b", fail_closed=True))
    verdict = await GuardChain([a, b], stats=stats).on_request(make_call())
    assert verdict.denied and verdict.code == "interlock_guard_error" and verdict.rule == "b"
    assert stats.errors_by_rule == {"a": 1, "b": 1}


async def test_a_guard_failing_inside_a_batch_fails_alone() -> None:
    stats = GuardStats()
    a, b = batched(Recorder(), Scripted("a", raises=True), Scripted("b", "flag"))
    verdict = await GuardChain([a, b], stats=stats).on_request(make_call())
    assert verdict.action == "flag" and stats.errors_by_rule == {"a": 1}


async def test_hooks_a_guard_does_not_run_are_never_called() -> None:
    class Quiet(Scripted):
        release = Guard.release  # nothing to give back

        def runs(self, hook: str) -> bool:
            return hook != "on_request"

    quiet = Quiet("quiet", "deny")
    call = make_call()
    assert await GuardChain([quiet]).on_request(call) is ALLOW
    await GuardChain([quiet]).on_response(finish(call))
    assert quiet.seen == ["response"]


async def test_concurrent_chain_with_a_batch_releases_the_right_guards() -> None:
    batch = Recorder()
    a, b, c = batched(batch, Scripted("a"), Scripted("b", "deny"), Scripted("c"))
    after = Scripted("after", "flag")
    call = make_call()
    verdict = await GuardChain([a, b, c, after], concurrent=True).on_request(call)
    assert verdict.rule == "b" and [e["rule"] for e in call.guard_events] == ["b"]
    assert a.seen[-1] == "release" and after.seen[-1] == "release"
    assert c.seen == ["release"]  # never asked (the batch stopped at b), so it holds nothing


async def test_a_guard_failing_on_every_call_is_logged_once_not_per_call(caplog: pytest.LogCaptureFixture) -> None:
    chain = GuardChain([Scripted("broken", raises=True)])
    with caplog.at_level(logging.INFO, logger="interlock"):
        for _ in range(200):
            assert (await chain.on_request(make_call())).action == "allow"
    assert chain.errors_total == 200
    [line] = [r for r in caplog.records if "broken" in r.getMessage()]
    assert "RuntimeError: boom" in line.getMessage() and line.exc_info is not None
