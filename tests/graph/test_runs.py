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


PLAN = (
    "Survey the installed base of residential heat pumps in Northern Europe and estimate the "
    "annual unit growth since 2019 using national statistics and industry association reports."
)


def placing(now: float = 10.0) -> tuple[Linker, RunResolver]:
    index, identifier, clock = MemoryLineageIndex(), Identifier(), Clock(now)
    linker = Linker(index, run_idle_s=600.0, identifier=identifier, clock=clock)
    return linker, RunResolver(index, identifier, run_idle_s=600.0, clock=clock, placer=linker)


def test_a_new_conversation_with_nothing_behind_it_is_a_runs_first_call() -> None:
    _, resolver = placing()
    assert resolver.resolve_run(make_call("c1", user="plan a study of heat pumps")) is None


def test_a_workers_first_call_is_placed_before_the_planner_is_linked() -> None:
    linker, resolver = placing()
    planner = make_call("p", system="You are the planner.", user="heat pumps please", output=PLAN)
    planner.run_id = resolver.resolve_run(planner)
    resolver.note_response(planner)  # answered; the linker has not seen it yet
    worker = make_call(
        "w", system="You are the writer.", user="Write this up:\n" + PLAN, started_at=2.0, ended_at=3.0
    )
    worker.run_id = resolver.resolve_run(worker)
    assert planner.run_id is None and worker.run_id == "p"  # the planner starts the run named after it
    linker.observe(planner)
    res = linker.observe(worker)
    assert res.run_id == "p" and [(e.source, e.kind) for e in res.edges] == [("p", "handoff")]


def test_a_stock_phrase_does_not_place_a_call_at_request_time() -> None:
    linker, resolver = placing()
    stock = "Let me know if you would like me to expand on any of these points about the next steps."
    for i in range(2):
        out = make_call(
            f"x{i}", system="You are the writer.", user=f"topic {i}", output=PLAN + "\n\n" + stock
        )
        out.run_id = f"x{i}"
        linker.observe(out)
    call = make_call("new", system="You are the planner.", user=stock + "\n\nA new question.", started_at=5.0)
    assert resolver.resolve_run(call) is None


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
