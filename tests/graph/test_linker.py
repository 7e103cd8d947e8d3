"""Linker behaviours outside the scenario suite: retries, idle runs, merges, odd calls."""

from __future__ import annotations

import random

from proxy.call import Completion, Message
from proxy.graph import Linker, MemoryLineageIndex
from tests.graph.factory import make_call

PLAN = (
    "Survey the installed base of residential heat pumps in Northern Europe and estimate the "
    "annual unit growth since 2019 using national statistics and industry association reports."
)
RESULT = (
    "Installed heat pumps in the Nordic countries passed four million units with growth close to "
    "twelve percent a year driven mostly by air to water systems replacing oil boilers."
)


def linker(**kw: float) -> Linker:
    return Linker(MemoryLineageIndex(), run_idle_s=kw.get("idle", 600.0))


def follow_up(prev_user: str, prev_out: str, new_user: str) -> list[Message]:
    """The messages of the tester's next turn after (prev_user → prev_out)."""
    return [
        Message("system", "You are the tester."),
        Message("user", prev_user),
        Message("assistant", prev_out),
        Message("user", new_user),
    ]


def test_retry_of_failed_call_continues_it() -> None:
    lk = linker()
    failed = make_call("c1", user="go", output="", outcome="upstream_error", completion=Completion())
    lk.observe(failed)
    res = lk.observe(make_call("c2", user="go", started_at=2.0, ended_at=3.0))
    assert [(e.source, e.kind, e.evidence["via"]) for e in res.edges] == [("c1", "continuation", "retry")]
    assert res.run_id == "c1" and "retry" in res.flags


def test_identical_first_requests_of_successful_calls_stay_apart() -> None:
    lk = linker()
    lk.observe(make_call("c1", user="same task"))
    res = lk.observe(make_call("c2", user="same task", started_at=0.5, ended_at=1.5))
    assert res.edges == [] and res.run_id == "c2"


def test_thread_resumed_after_idle_starts_a_new_run() -> None:
    lk = linker(idle=60.0)
    lk.observe(make_call("c1", user="hello", output="hi"))
    later = make_call("c2", started_at=500.0, ended_at=501.0)
    later.messages = follow_up("hello", "hi", "are you there?")
    res = lk.observe(later)
    assert res.run_id == "c2" and res.new_run and "resumed" in res.flags
    assert [e.kind for e in res.edges] == ["continuation"]


def test_close_idle_reports_runs_once() -> None:
    lk = linker(idle=60.0)
    lk.observe(make_call("c1", ended_at=1.0))
    lk.observe(make_call("c2", system="You are another agent.", started_at=100.0, ended_at=101.0))
    assert lk.close_idle(now=120.0) == ["c1"]
    assert lk.close_idle(now=120.0) == []


def test_calls_that_are_not_conversations_are_not_linked() -> None:
    lk = linker()
    res = lk.observe(make_call("e1", operation="embeddings", run_hint="r9"))
    assert (res.run_id, res.edges) == ("r9", [])
    assert lk.observe(make_call("e2", operation="embeddings")).run_id is None


def test_explicit_run_groups_unrelated_calls() -> None:
    lk = linker()
    a = lk.observe(make_call("a", user="one thing", run_hint="job-1"))
    b = lk.observe(
        make_call(
            "b", system="You are someone else.", user="other", run_hint="job-1", started_at=2.0, ended_at=3.0
        )
    )
    assert a.run_id == b.run_id == "job-1" and a.new_run and not b.new_run


def test_run_chosen_on_the_request_path_is_kept() -> None:
    res = linker().observe(make_call("a", run_id="resolved-earlier"))
    assert res.run_id == "resolved-earlier"


def test_output_that_ended_after_the_input_started_is_no_source() -> None:
    lk = linker()
    lk.observe(make_call("o1", system="You are the orchestrator.", output=PLAN, started_at=0.0, ended_at=5.0))
    res = lk.observe(make_call("w1", system="You are the worker.", user=PLAN, started_at=4.0, ended_at=6.0))
    assert res.edges == []


def test_handoff_through_instructions() -> None:
    lk = linker()
    lk.observe(make_call("o1", system="You are the orchestrator.", output=PLAN))
    worker = make_call(
        "w1",
        system="You are the worker. Your assignment: " + PLAN,
        user="Begin.",
        started_at=2.0,
        ended_at=3.0,
    )
    (edge,) = lk.observe(worker).edges
    assert (edge.source, edge.kind, edge.evidence["via"]) == ("o1", "handoff", "instructions")


def test_late_return_merges_a_run_that_started_unlinked() -> None:
    lk = linker()
    lk.observe(
        make_call("o1", system="You are the orchestrator.", user="study heat pumps", output="Working on it.")
    )
    worker = lk.observe(
        make_call(
            "w1",
            system="You are the worker.",
            user="unrelated brief",
            output=RESULT,
            started_at=2.0,
            ended_at=3.0,
        )
    )
    back = make_call("o2", system="You are the orchestrator.", started_at=4.0, ended_at=5.0)
    back.messages = [Message("system", "You are the orchestrator."), Message("user", "study heat pumps"),
                     Message("assistant", "Working on it."), Message("user", "Worker says: " + RESULT)]  # fmt: skip
    res = lk.observe(back)
    assert worker.run_id == "w1"
    assert res.run_id == "o1" and res.merged_runs == ["w1"]
    assert {(e.source, e.kind) for e in res.edges} == {("o1", "continuation"), ("w1", "handoff")}


def test_same_framework_prompt_in_two_runs_is_not_human() -> None:
    lk = linker()
    for run in ("a", "b"):
        lk.observe(
            make_call(f"{run}1", user=f"task {run} about heat pumps", output="Thinking.", run_hint=run)
        )
        nudge = make_call(f"{run}2", run_hint=run, started_at=2.0, ended_at=3.0)
        nudge.messages = follow_up(
            f"task {run} about heat pumps", "Thinking.", "Please continue with the next step."
        )
        res = lk.observe(nudge)
        assert [e.kind for e in res.edges if e.kind == "human"] == (["human"] if run == "a" else [])


def test_odd_calls_do_not_raise() -> None:
    from proxy.call import ToolCall

    lk = linker()
    odd = [
        make_call("x1", system="", user=[]),
        make_call("x2", user="\ud800 broken surrogate \x00 and émoji 🎉", output="\ud800"),
        make_call("x3", completion=Completion("", [ToolCall("", "", "{not json")])),
        make_call("x4", previous_response_id="resp_unknown", operation="responses"),
        make_call("x5", outcome="cancelled"),
    ]
    odd[4].ended_at = None
    odd[0].messages = [
        Message("tool", "orphan result", [], None),
        Message("assistant", "", [ToolCall("", "f", "")]),
    ]
    for call in odd:
        res = lk.observe(call)
        assert res.run_id and res.agent


def document(seed: int, chars: int = 20_000) -> str:
    """Distinct pseudo-English, long enough for the linker's cache of big segments."""
    rng = random.Random(seed)
    vocab = [f"{a}{b}" for a in ("pro", "con", "re", "de", "ex", "in", "sub", "over") for b in
             ("cess", "tract", "port", "sign", "form", "ject", "vert", "duct", "mit", "pose")]  # fmt: skip
    words: list[str] = []
    while sum(map(len, words)) + len(words) < chars:
        words.append(rng.choice(vocab))
    return " ".join(words)


def test_a_big_handoff_sent_to_several_workers_links_each_of_them() -> None:
    lk, brief = linker(), document(1)
    lk.observe(make_call("o1", system="You are the orchestrator.", output=brief))
    for i in range(3):
        worker = make_call(f"w{i}", system=f"You are worker {i}.", user=brief, started_at=2.0 + i, ended_at=2.5 + i)
        assert [(e.source, e.kind) for e in lk.observe(worker).edges] == [("o1", "handoff")]


def test_a_big_message_like_a_cached_one_in_length_and_opening_is_shingled_anew() -> None:
    lk, cached = linker(), document(2)
    lk.observe(make_call("w0", system="You are the reader.", user=cached))
    handed = cached[:100] + document(3, len(cached))[100 : len(cached)]
    lk.observe(make_call("o1", system="You are the orchestrator.", output=handed[100:], started_at=1.0, ended_at=2.0))
    res = lk.observe(make_call("w1", system="You are the reader.", user=handed, started_at=3.0, ended_at=4.0))
    assert len(handed) == len(cached) and [(e.source, e.kind) for e in res.edges] == [("o1", "handoff")]


def test_a_big_human_message_opening_many_runs_is_seen_only_in_each_of_them() -> None:
    lk, text = linker(), document(4)
    for run in ("a", "b"):
        lk.observe(make_call(f"{run}1", user=text, output="Reading.", run_hint=run))
    again = make_call("a2", run_hint="a", started_at=2.0, ended_at=3.0)
    again.messages = follow_up(text, "Reading.", text)
    fresh = make_call("b2", run_hint="b", started_at=2.0, ended_at=3.0)
    fresh.messages = follow_up(text, "Reading.", document(5))
    assert [e.kind for e in lk.observe(again).edges] == ["continuation"]
    assert [e.kind for e in lk.observe(fresh).edges] == ["continuation", "human"]


def test_tool_call_ids_a_server_numbers_per_conversation_do_not_tie_conversations() -> None:
    """Some OpenAI-compatible servers answer `call_1` in every conversation: a tool result is tied
    to the call that asked for it by the id *and* what was called."""
    from proxy.call import ToolCall

    lk = linker()
    firsts = []
    for i, topic in enumerate(("heat pumps in Norway", "solar leasing in Spain")):
        ask = make_call(f"a{i}", system="You are the coordinator.", user=f"Research {topic}.", output="",
                        started_at=float(i), ended_at=float(i) + 0.5)  # fmt: skip
        ask.completion = Completion("", [ToolCall("call_1", "research", f'{{"topic": "{topic}"}}')])
        firsts.append(lk.observe(ask))
    back = make_call("b0", system="You are the coordinator.", user="Research heat pumps in Norway.", output="done",
                     started_at=3.0, ended_at=3.5)  # fmt: skip
    back.messages = [
        Message("system", "You are the coordinator."),
        Message("user", "Research heat pumps in Norway."),
        Message("assistant", "", [ToolCall("call_1", "research", '{"topic": "heat pumps in Norway"}')]),
        Message("tool", "Norway installs most heat pumps per capita.", tool_call_id="call_1"),
    ]
    res = lk.observe(back)
    assert res.run_id == firsts[0].run_id != firsts[1].run_id
    assert all(e.source != "a1" for e in res.edges)
