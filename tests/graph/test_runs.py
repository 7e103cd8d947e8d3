"""RunResolver: the run of a request before it is forwarded, without shingling."""

from __future__ import annotations

from typing import Any

from proxy.call import Call, Completion, Message
from proxy.graph import Identifier, Linker, MemoryLineageIndex, RunResolver
from proxy.graph.script import AgentSpec, Result, Script, Step, ToolUse, User, render
from tests.graph.factory import call_from_exchange, make_call


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def pair(now: float = 10.0, idle: float = 600.0) -> tuple[Linker, RunResolver, Clock]:
    index, identifier, clock = MemoryLineageIndex(), Identifier(), Clock(now)
    linker = Linker(index, run_idle_s=idle, identifier=identifier, clock=clock)
    return linker, RunResolver(index, identifier, run_idle_s=idle, clock=clock), clock


def second_turn(**kw: Any) -> Call:
    call = make_call("c2", started_at=2.0, ended_at=3.0, **kw)
    call.messages = [Message("system", "You are the tester."), Message("user", "hello"),
                     Message("assistant", "ok"), Message("user", "more")]  # fmt: skip
    return call


def test_explicit_hint_wins() -> None:
    _, resolver, _ = pair()
    assert resolver.resolve_run(make_call("c1", run_hint="job-7")) == "job-7"


def test_first_call_of_a_thread_is_left_to_the_linker() -> None:
    _, resolver, _ = pair()
    assert resolver.resolve_run(make_call("c1")) is None


def test_next_turn_resolves_to_the_threads_run() -> None:
    linker, resolver, _ = pair()
    first = linker.observe(make_call("c1"))
    call = second_turn()
    assert resolver.resolve_run(call) == first.run_id
    call.run_id = resolver.resolve_run(call)
    assert linker.observe(call).run_id == first.run_id


def test_closed_run_is_not_resumed() -> None:
    linker, resolver, clock = pair(idle=60.0)
    linker.observe(make_call("c1"))
    clock.now = 1000.0
    assert resolver.resolve_run(second_turn()) is None


def test_note_response_bridges_the_recorder_lag() -> None:
    _, resolver, _ = pair()
    first = make_call("c1", run_hint="job-1", run_id="job-1")
    resolver.note_response(first)
    assert resolver.resolve_run(second_turn()) == "job-1"


def test_previous_response_id_resolves() -> None:
    agent = AgentSpec("You are the planner.", ("lookup",), api="responses", stateful=True)
    steps = (
        Step("p1", "planner", "t", (User(("plan a trip",)),), tools=(ToolUse("lookup", {"q": "x"}),)),
        Step("p2", "planner", "t", (Result("p1", 0, ("found",)),), "done"),
    )
    ex1, ex2 = render(Script({"planner": agent}, steps))
    linker, resolver, _ = pair()
    first = linker.observe(call_from_exchange(ex1))
    second = call_from_exchange(ex2)
    assert second.previous_response_id == "resp_p1"
    assert resolver.resolve_run(second) == first.run_id


def test_agent_name_is_available_on_the_request_path() -> None:
    _, resolver, _ = pair()
    assert resolver.resolve_agent(make_call("c1", system="You are the editor.")) == "editor"


def test_failed_response_is_not_noted() -> None:
    _, resolver, _ = pair()
    failed = make_call("c1", run_id="job-1", outcome="upstream_error", completion=Completion())
    resolver.note_response(failed)
    assert resolver.resolve_run(second_turn()) is None
