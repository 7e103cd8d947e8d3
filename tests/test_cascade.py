"""Cascades: a fault taints exactly the calls built on it; quarantine stops the next consumer."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.cascade import (
    CascadeTracker,
    Hit,
    Mark,
    Taint,
    TaintBook,
    fault_kinds,
    mark_of,
    request_taint,
    summarize,
)
from proxy.graph import Linker, MemoryLineageIndex
from proxy.graph.script import Script
from proxy.guards.cascade import Quarantine
from proxy.guards.counters import MemoryCounterStore
from tests.escalation.harness import server
from tests.fake_upstream import FakeUpstream, Reply
from tests.graph import scenarios as sc
from tests.graph.factory import call_from_exchange
from tests.guards.factory import deps, finish, make_call, rule_from_yaml, user
from tests.proxyserver import ProxyServer


def _cut_first_step(script: Script) -> Script:
    first, *rest = script.steps
    return dataclasses.replace(script, steps=(dataclasses.replace(first, finish="length"), *rest))


def _taints(*scripts: tuple[Script, float]) -> dict[str, Taint | None]:
    """Scripted traffic → real parsers → the graph linker → the cascade tracker."""
    scenario = sc.Scenario("cascade", scripts, sc.Expect({}, frozenset(), ()))
    linker, tracker = Linker(MemoryLineageIndex(), run_idle_s=600.0), CascadeTracker()
    out = {}
    for ex in sc.exchanges(scenario):
        call = call_from_exchange(ex)
        out[ex.step] = tracker.observe(call, linker.observe(call))
    return out


# ---------------------------------------------------------------------------- propagation


def test_a_truncated_handoff_taints_exactly_the_calls_downstream() -> None:
    taints = _taints((_cut_first_step(sc.pipeline_script("urban beekeeping", "x_")), 0.0),
                     (sc.pipeline_script("container shipping rates", "y_"), 0.45))
    root, writer, editor = taints["x_a"], taints["x_b"], taints["x_c"]
    assert root is not None and root.faults == ("length",) and root.depth == 0 and root.roots == ()
    assert writer is not None and (writer.roots, writer.depth, writer.faults) == (("x_a",), 1, ())
    assert editor is not None and (editor.roots, editor.depth) == (("x_a",), 2)
    assert editor.root_faults == ("length",)
    assert [s for s, t in taints.items() if t is None] == ["y_a", "y_b", "y_c"], "the other run stays clean"


def test_a_copy_cut_in_transit_makes_its_consumer_the_root() -> None:
    taints = _taints((sc.truncation_script(), 0.0))
    f1, a2, r1 = taints["f1"], taints["a2"], taints["r1"]
    assert f1 is not None and f1.faults == ("truncated_handoff",) and f1.roots == ()
    assert a2 is not None and a2.faults == ("length",)
    assert r1 is not None and r1.roots == ("a2",) and r1.depth == 1 and r1.faults == ()
    assert taints["a1"] is None


def test_fault_kinds() -> None:
    assert fault_kinds(finish(make_call(), finish_reason="length")) == ("length",)
    assert fault_kinds(finish(make_call(), finish_reason="content_filter")) == ("content_filter",)
    assert fault_kinds(finish(make_call(), outcome="upstream_cut")) == ("upstream_error",)
    flagged = finish(make_call())
    flagged.guard_events = [{"rule": "loop", "kind": "loop", "action": "flag"}]
    budget = finish(make_call())
    budget.guard_events = [{"rule": "b", "kind": "budget", "action": "deny"}]
    assert fault_kinds(flagged) == ("guard",) and fault_kinds(budget) == (), "spend is not a content fault"
    for detect in ("retry", "ceiling"):  # how often it asked, not what came back
        asked = finish(make_call())
        asked.guard_events = [{"rule": "r", "kind": "loop", "action": "flag", "data": {"detect": detect}}]
        assert fault_kinds(asked) == ()
    stuck = finish(make_call())
    stuck.guard_events = [{"rule": "s", "kind": "loop", "action": "flag", "data": {"detect": "no_progress"}}]
    assert fault_kinds(stuck) == ("guard",)


def test_blast_radius_from_stored_rows() -> None:
    rows = [
        {"id": "a", "agent": "planner", "flags": ["cascade_root", "fault:length"], "depth": 0,
         "input_tokens": 10, "output_tokens": 90},
        {"id": "b", "agent": "writer", "flags": ["tainted"], "tainted_by": ["a"], "depth": 1,
         "input_tokens": 100, "output_tokens": 50},
        {"id": "c", "agent": "editor", "flags": ["tainted"], "tainted_by": ["a"], "depth": 2,
         "input_tokens": 60, "output_tokens": 40},
        {"id": "d", "agent": "other", "flags": [], "input_tokens": 5, "output_tokens": 5},
    ]
    out = summarize(rows)
    [cause] = out["root_causes"]
    assert cause["call_id"] == "a" and cause["faults"] == ["length"]
    assert out["blast_radius"] == {"calls": 2, "call_ids": ["b", "c"], "agents": ["editor", "writer"],
                                   "tokens": 250, "max_depth": 2}
    assert cause["downstream"] == out["blast_radius"]


# ---------------------------------------------------------------------------- quarantine guard

OUTLINE = ("Outline for an article about urban beekeeping: open with why urban beekeeping matters to "
           "ordinary readers this year, then explain the three forces reshaping it and close")


async def _quarantine(text: str, counters: MemoryCounterStore) -> tuple[Quarantine, TaintBook]:
    guard = Quarantine(rule_from_yaml(text), deps(counters))
    return guard, guard.book


async def test_quarantine_denies_input_carrying_a_cut_output_and_follows_taint() -> None:
    counters = MemoryCounterStore()
    guard, _ = await _quarantine("{name: q, kind: cascade, action: deny, max_depth: 1}", counters)
    planner = finish(make_call(agent="planner"), text=OUTLINE, finish_reason="length")
    await guard.on_request(planner)
    await guard.on_response(planner)
    writer = make_call(agent="writer", messages=[user("Please write the article from this outline:\n\n" + OUTLINE)])
    verdict = await guard.on_request(writer)
    assert verdict.denied and verdict.status == 400 and verdict.code == "interlock_quarantined"
    assert verdict.data["source_call"] == planner.id and verdict.data["depth"] == 1
    assert "cut at max_tokens" in verdict.reason and "planner" in verdict.reason
    clean = make_call(agent="writer", messages=[user("Write about container shipping rates instead.")])
    assert (await guard.on_request(clean)).action == "allow"


async def test_quarantine_respects_sources_depth_and_match() -> None:
    counters = MemoryCounterStore()
    book = TaintBook(counters)
    planner = finish(make_call(agent="planner"), text=OUTLINE)
    await book.mark("run-1", mark_of(planner, "planner", Taint(planner.id, ("root",), 2, (), ("guard",))))
    consumer = make_call(agent="writer", messages=[user(OUTLINE)])
    for text, acts in [("{name: q, kind: cascade, action: deny}", True),
                       ("{name: q, kind: cascade, action: deny, sources: [length]}", False),
                       ("{name: q, kind: cascade, action: deny, max_depth: 2}", False),
                       ("{name: q, kind: cascade, action: deny, match: {agent: editor}}", False)]:
        guard, _ = await _quarantine(text, counters)
        verdict = await guard.on_request(make_call(agent="writer", messages=consumer.messages))
        assert verdict.denied is acts, text


# ---------------------------------------------------------------------------- end to end

PLANNER, WRITER, EDITOR = (sc.pipeline_script("urban beekeeping").steps[i].text for i in range(3))
SYSTEM = {name: spec.system for name, spec in sc.pipeline_script("urban beekeeping").agents.items()}


def _agent(px: ProxyServer, name: str, run: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{px.url}/agents/{name}/v1", api_key="sk-test", max_retries=0, timeout=20,
                         default_headers={"X-Interlock-Run": run})


def _pipeline(px: ProxyServer, upstream: FakeUpstream, run: str, *, cut: bool) -> list[str]:
    """planner → writer → editor, each handing its whole output to the next; returns call ids."""
    upstream.script(Reply(text=PLANNER, finish_reason="length" if cut else "stop"), Reply(text=WRITER),
                    Reply(text=EDITOR))
    outline = _say(px, "planner", run, "Write a short article about urban beekeeping.")
    draft = _say(px, "writer", run, "Please write the article from this outline:\n\n" + outline)
    _say(px, "editor", run, "Edit this draft for clarity:\n\n" + draft)
    return [c["id"] for c in sorted(px.wait_calls(3, run_id=run), key=lambda c: c["started_at"])]


def _say(px: ProxyServer, agent: str, run: str, text: str) -> str:
    messages: Any = [{"role": "system", "content": SYSTEM[agent]}, {"role": "user", "content": text}]
    r = _agent(px, agent, run).chat.completions.create(model="gpt-4o", messages=messages)
    return r.choices[0].message.content or ""


def _rows(px: ProxyServer, run: str, n: int) -> dict[str, dict[str, Any]]:
    """The run's calls once the cascade tracker updated them (depth set on every tainted row)."""
    import time

    deadline = time.monotonic() + 10
    while True:
        rows = {c["agent"]: c for c in px.api("/api/calls", run_id=run)["items"]}
        if len([r for r in rows.values() if r["depth"] is not None]) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def test_three_agent_pipeline_taint_through_the_proxy(tmp_path: Path, upstream: FakeUpstream) -> None:
    with server(tmp_path, upstream.url, "rules: []\n") as px:
        planner, writer, editor = _pipeline(px, upstream, "run-cut", cut=True)
        _pipeline(px, upstream, "run-clean", cut=False)
        rows = _rows(px, "run-cut", 3)
        assert rows["planner"]["flags"][-2:] == ["cascade_root", "fault:length"] and rows["planner"]["depth"] == 0
        assert (rows["writer"]["tainted_by"], rows["writer"]["depth"]) == ([planner], 1)
        assert (rows["editor"]["tainted_by"], rows["editor"]["depth"]) == ([planner], 2)
        assert "tainted" in rows["editor"]["flags"]
        clean = px.api("/api/calls", run_id="run-clean")["items"]
        assert len(clean) == 3 and all(c["tainted_by"] is None and c["depth"] is None for c in clean)
        run = px.api("/api/runs/run-cut")
        assert [c["call_id"] for c in run["root_causes"]] == [planner]
        assert run["blast_radius"]["call_ids"] == [writer, editor]
        assert run["blast_radius"]["agents"] == ["editor", "writer"] and run["blast_radius"]["max_depth"] == 2
        nodes = {n["id"]: n["flags"] for n in px.api("/api/runs/run-cut/graph")["nodes"]}
        assert "cascade_root" in nodes[planner] and "tainted" in nodes[writer] and "tainted" in nodes[editor]
        assert px.api("/api/runs/run-clean")["blast_radius"]["calls"] == 0
        metrics = httpx.get(px.url + "/metrics").text
        assert re.search(r'interlock_cascade_calls_total\{[^}]*role="root"[^}]*\} 1\.0', metrics)
        assert re.search(r'interlock_cascade_calls_total\{[^}]*role="tainted"[^}]*\} 2\.0', metrics)


def test_quarantine_rule_denies_the_next_consumer(tmp_path: Path, upstream: FakeUpstream) -> None:
    rules = "rules:\n  - {name: quarantine, kind: cascade, action: deny, sources: [length]}\n"
    with server(tmp_path, upstream.url, rules) as px:
        upstream.script(Reply(text=PLANNER, finish_reason="length"))
        outline = _say(px, "planner", "run-q", "Write a short article about urban beekeeping.")
        with pytest.raises(openai.BadRequestError) as err:
            _say(px, "writer", "run-q", "Please write the article from this outline:\n\n" + outline)
        assert err.value.code == "interlock_quarantined" and "quarantine" in err.value.message
        assert len(upstream.requests) == 1, "the consumer's request never reached the model"
        _say(px, "writer", "run-q", "Write the article from scratch: urban beekeeping for beginners.")



# ------------------------------------------------ the request path's taint (guards/cascade.py)


def test_request_taint_of_a_clean_call_is_none_and_of_a_root_lists_its_faults_sorted() -> None:
    assert request_taint(finish(make_call(), text="fine"), None) is None
    root = request_taint(finish(make_call(), outcome="upstream_cut", finish_reason="length"), None)
    assert root is not None
    assert (root.roots, root.depth, root.faults, root.root_faults) == (
        (), 0, ("upstream_error", "length"), ("length", "upstream_error"))


def test_request_taint_of_a_consumer_inherits_the_roots_one_hop_further() -> None:
    source = Mark("call-src", "writer", 1, ("call-root",), ("content_filter",), ())
    consumer = request_taint(finish(make_call(), text="built on it"), Hit(source, 0.9))
    assert consumer is not None
    assert (consumer.roots, consumer.depth, consumer.faults, consumer.root_faults) == (
        ("call-root",), 2, (), ("content_filter",))
    both = request_taint(finish(make_call(), finish_reason="length"), Hit(source, 0.9))
    assert both is not None and (both.depth, both.root_faults) == (0, ("content_filter", "length"))
