"""RunTracer: runs become traces shaped like the orchestration, exported once the run closes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from proxy.call import Call, Usage
from proxy.graph import Linker, MemoryLineageIndex
from proxy.graph.examples import fan_out_script
from proxy.graph.model import Edge, LinkResult
from proxy.graph.script import render
from proxy.settings import load_settings
from proxy.tracing import RunTracer, make_run_tracer, span_id_of, traces_url
from tests.fake_upstream import FakeUpstream, Reply
from tests.graph import scenarios as sc
from tests.graph.factory import call_from_exchange, make_call
from tests.proxyserver import ProxyServer
from tests.tracing_receiver import OtlpReceiver

T0 = 1_700_000_000.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


# ---------------------------------------------------------------------------- factories


def call(call_id: str, start: float, end: float, **overrides: Any) -> Call:
    defaults: dict[str, Any] = {"model_requested": "gpt-4o", "model_served": "gpt-4o-2024-08-06",
                                "usage": Usage(100, 20), "finish_reason": "stop", "max_tokens": 512}
    return make_call(call_id, started_at=T0 + start, ended_at=T0 + end, **{**defaults, **overrides})


def link(c: Call, agent: str, *edges: tuple[str, str], run: str | None = "run-1", **kw: Any) -> LinkResult:
    """LinkResult for `c`; edges as (source call id, kind), evidence from `kw['evidence']`."""
    ev = kw.pop("evidence", {})
    return LinkResult(c.id, agent, "fp-" + agent, run, kw.pop("thread", "t-" + agent),
                      [Edge(src, c.id, kind, dict(ev)) for src, kind in edges], **kw)


def fan_out() -> list[tuple[Call, LinkResult]]:
    """orchestrator o1 → researcher (r1, r2 via a tool turn) and writer (w1); o2 gets both results."""
    o1 = call("o1", 0, 1)
    r1 = call("r1", 1.1, 2, finish_reason="tool_calls")
    w1 = call("w1", 1.2, 2.5, guard_events=[{"rule": "spend", "kind": "budget", "action": "flag",
                                             "reason": "80% of the run budget is spent", "at": T0 + 1.3,
                                             "data": {"spent": 800, "limit": 1000, "window": ["run"]},
                                             "hook": "on_request", "code": "", "status": 429}])
    r2 = call("r2", 2.1, 3)
    o2 = call("o2", 3.5, 4)
    return [
        (o1, link(o1, "orchestrator", thread="t-o")),
        (r1, link(r1, "researcher", ("o1", "handoff"), evidence={"coverage": 0.4, "truncated": False})),
        (w1, link(w1, "writer", ("o1", "handoff"))),
        (r2, link(r2, "researcher", ("r1", "tool"))),
        (o2, link(o2, "orchestrator", ("o1", "continuation"), ("r2", "return"), ("w1", "return"), thread="t-o")),
    ]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def make_tracer(exporter: InMemorySpanExporter) -> Iterator[Callable[..., RunTracer]]:
    made: list[RunTracer] = []

    def make(**kw: Any) -> RunTracer:
        made.append(RunTracer(SimpleSpanProcessor(exporter), **kw))
        return made[-1]

    yield make
    for t in made:
        t.shutdown()


@pytest.fixture
def tracer(make_tracer: Callable[..., RunTracer]) -> RunTracer:
    return make_tracer()


def feed(tracer: RunTracer, pairs: list[tuple[Call, LinkResult]], close: str | None = "run-1") -> None:
    for c, lk in pairs:
        tracer.on_call(c, lk)
    if close is not None:
        close_runs(tracer, close)


def close_runs(tracer: RunTracer, *run_ids: str) -> None:
    """The linker's idle sweep closed these runs; wait until their spans are built."""
    tracer.on_runs_closed(run_ids)
    assert tracer.drain()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def by_call(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {str(s.attributes["interlock.call.id"]): s for s in exporter.get_finished_spans()
            if s.attributes and "interlock.call.id" in s.attributes}


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def sid(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


# ---------------------------------------------------------------------------- shape


def test_nothing_is_exported_before_the_run_closes(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    feed(tracer, fan_out(), close=None)
    assert exporter.get_finished_spans() == ()
    assert tracer.stats()["buffered_calls"] == 5
    close_runs(tracer, "run-1")
    assert len(exporter.get_finished_spans()) == 1 + 3 + 5  # root, 3 invocations, 5 calls
    assert tracer.stats()["buffered_calls"] == 0


def test_span_names_and_kinds(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    feed(tracer, fan_out())
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == sorted(["invoke_workflow orchestrator", "invoke_agent orchestrator", "invoke_agent researcher",
                            "invoke_agent writer", *["chat gpt-4o"] * 5])
    kinds = {s.name: s.kind for s in exporter.get_finished_spans()}
    assert kinds["chat gpt-4o"] is SpanKind.CLIENT
    assert kinds["invoke_agent writer"] is kinds["invoke_workflow orchestrator"] is SpanKind.INTERNAL


def test_workers_sit_under_the_orchestrator_call_that_handed_them_work(
        tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    feed(tracer, fan_out())
    spans, calls = by_name(exporter), by_call(exporter)
    root, orch = spans["invoke_workflow orchestrator"], spans["invoke_agent orchestrator"]
    assert root.parent is None and parent_of(orch) == sid(root)
    assert parent_of(calls["o1"]) == parent_of(calls["o2"]) == sid(orch)
    for worker, first in (("researcher", "r1"), ("writer", "w1")):
        inv = spans[f"invoke_agent {worker}"]
        assert parent_of(inv) == sid(calls["o1"]), worker
        assert parent_of(calls[first]) == sid(inv)
    assert parent_of(calls["r2"]) == sid(spans["invoke_agent researcher"])  # the tool turn: same invocation
    assert {s.context.trace_id for s in exporter.get_finished_spans() if s.context} == {root.context.trace_id}


def test_returns_link_the_receiving_call_to_the_workers_last_call(
        tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    feed(tracer, fan_out())
    calls = by_call(exporter)
    links = {(ln.context.span_id, ln.attributes["interlock.edge.kind"]) for ln in calls["o2"].links
             if ln.attributes}
    assert links == {(sid(calls["r2"]), "return"), (sid(calls["w1"]), "return")}
    assert all(not calls[c].links for c in ("o1", "r1", "r2", "w1"))  # tree edges are not repeated as links


def test_invocation_spans_cover_their_calls_and_carry_the_handoff(
        tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    feed(tracer, fan_out())
    spans = by_name(exporter)
    inv = spans["invoke_agent researcher"]
    assert (inv.start_time, inv.end_time) == (int((T0 + 1.1) * 1e9), int((T0 + 3) * 1e9))
    assert inv.attributes is not None
    assert inv.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert inv.attributes["gen_ai.agent.name"] == "researcher"
    assert inv.attributes["gen_ai.usage.input_tokens"] == 200
    assert inv.attributes["interlock.handoff.source"] == "o1"
    assert inv.attributes["interlock.handoff.coverage"] == 0.4


def test_root_span_summarises_the_run(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    feed(tracer, fan_out())
    root = by_name(exporter)["invoke_workflow orchestrator"]
    assert root.attributes is not None
    assert dict(root.attributes) == {
        "gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": "orchestrator",
        "gen_ai.usage.input_tokens": 500, "gen_ai.usage.output_tokens": 100, "interlock.run.id": "run-1",
        "interlock.run.calls": 5, "interlock.run.agents": ("orchestrator", "researcher", "writer"),
        "interlock.run.invocations": 3,
    }
    assert (root.start_time, root.end_time) == (int(T0 * 1e9), int((T0 + 4) * 1e9))


# ---------------------------------------------------------------------------- call spans


def test_call_span_carries_genai_attributes(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    feed(tracer, fan_out())
    o2 = by_call(exporter)["o2"]
    assert o2.attributes is not None
    assert o2.status.status_code is StatusCode.UNSET
    assert (o2.start_time, o2.end_time) == (int((T0 + 3.5) * 1e9), int((T0 + 4) * 1e9))
    expected = {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20, "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.agent.name": "orchestrator", "gen_ai.request.max_tokens": 512, "gen_ai.conversation.id": "t-o",
        "interlock.call.id": "o2", "interlock.run.id": "run-1", "interlock.outcome": "ok",
        "interlock.edge.kind": ("continuation", "return", "return"), "interlock.edge.source": ("o1", "r2", "w1"),
    }
    assert {k: o2.attributes.get(k) for k in expected} == expected


def test_response_id_and_streaming_time_to_first_chunk(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    c = call("s1", 0, 2, stream=True, first_byte_at=T0 + 0.25)
    c.completion.response_id = "chatcmpl-123"
    feed(tracer, [(c, link(c, "solo"))])
    attrs = by_call(exporter)["s1"].attributes
    assert attrs is not None
    assert attrs["gen_ai.response.id"] == "chatcmpl-123"
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.25)


def test_guard_verdicts_become_span_events(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    feed(tracer, fan_out())
    (event,) = by_call(exporter)["w1"].events
    assert event.name == "interlock.guard.flag"
    assert event.timestamp == int((T0 + 1.3) * 1e9)
    assert dict(event.attributes or {}) == {
        "interlock.guard.rule": "spend", "interlock.guard.kind": "budget",
        "interlock.guard.reason": "80% of the run budget is spent", "interlock.guard.hook": "on_request",
        "interlock.guard.data.spent": 800, "interlock.guard.data.limit": 1000,
        "interlock.guard.data.window": '["run"]',
    }


def test_upstream_failure_sets_error_type_and_status(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    c = call("f1", 0, 1, status=500, outcome="upstream_error", error="upstream answered 500", usage=Usage())
    feed(tracer, [(c, link(c, "solo"))])
    span, inv = by_call(exporter)["f1"], by_name(exporter)["invoke_agent solo"]
    assert span.attributes is not None and span.attributes["error.type"] == "500"
    assert "gen_ai.usage.input_tokens" not in span.attributes  # not reported, so not invented
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "upstream answered 500")
    assert inv.status.status_code is StatusCode.ERROR  # the invocation ended on that failure


def test_a_denied_call_reports_the_refusal_code(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    deny = {"rule": "run-budget", "kind": "budget", "action": "deny", "reason": "over", "at": T0,
            "data": {}, "hook": "on_request", "code": "interlock_budget_exceeded", "status": 429}
    c = call("d1", 0, 0.01, status=429, outcome="denied", guard_events=[deny], usage=Usage())
    feed(tracer, [(c, link(c, "solo"))])
    span = by_call(exporter)["d1"]
    assert span.attributes is not None and span.attributes["error.type"] == "interlock_budget_exceeded"
    assert [e.name for e in span.events] == ["interlock.guard.deny"]


def test_timeout_without_status_reports_the_outcome(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    c = call("t1", 0, 30, status=None, outcome="timeout", usage=Usage())
    feed(tracer, [(c, link(c, "solo"))])
    attrs = by_call(exporter)["t1"].attributes
    assert attrs is not None and attrs["error.type"] == "timeout"


# ---------------------------------------------------------------------------- traceparent


def test_traceparent_joins_the_agents_trace(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    pairs = fan_out()
    pairs[0][0].traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    feed(tracer, pairs)
    root = by_name(exporter)["invoke_workflow orchestrator"]
    assert root.parent is not None and root.parent.is_remote
    assert (root.parent.trace_id, root.parent.span_id) == (int(TRACE_ID, 16), int(PARENT_ID, 16))
    assert {s.context.trace_id for s in exporter.get_finished_spans() if s.context} == {int(TRACE_ID, 16)}


def test_an_unsampled_traceparent_is_still_joined(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    c = call("u1", 0, 1, traceparent=f"00-{TRACE_ID}-{PARENT_ID}-00")
    feed(tracer, [(c, link(c, "solo"))])
    assert {s.context.trace_id for s in exporter.get_finished_spans() if s.context} == {int(TRACE_ID, 16)}


def test_other_traceparents_in_the_run_become_links(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    pairs = fan_out()
    pairs[0][0].traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    pairs[2][0].traceparent = f"00-{TRACE_ID}-{'ab' * 8}-01"  # the writer's own framework span
    feed(tracer, pairs)
    (ln,) = by_call(exporter)["w1"].links
    assert ln.context.span_id == int("ab" * 8, 16) and ln.attributes == {"interlock.link.kind": "traceparent"}


def test_a_malformed_traceparent_is_ignored(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    c = call("m1", 0, 1, traceparent="00-zz-not-a-trace")
    feed(tracer, [(c, link(c, "solo"))])
    root = by_name(exporter)["invoke_workflow solo"]
    assert root.parent is None and not by_call(exporter)["m1"].links


# ---------------------------------------------------------------------------- odd shapes


def test_a_handoff_ring_keeps_a_tree(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    """A → B → C → A: A stays on top and C's hand-back becomes a link, not a cycle."""
    a1, b1, c1, a2 = call("a1", 0, 1), call("b1", 1, 2), call("c1", 2, 3), call("a2", 3, 4)
    feed(tracer, [(a1, link(a1, "A")), (b1, link(b1, "B", ("a1", "handoff"))),
                  (c1, link(c1, "C", ("b1", "handoff"))),
                  (a2, link(a2, "A", ("a1", "continuation"), ("c1", "handoff")))])
    spans, calls = by_name(exporter), by_call(exporter)
    assert parent_of(spans["invoke_agent A"]) == sid(spans["invoke_workflow A"])
    assert parent_of(spans["invoke_agent B"]) == sid(calls["a1"])
    assert parent_of(spans["invoke_agent C"]) == sid(calls["b1"])
    assert [(ln.context.span_id, (ln.attributes or {}).get("interlock.edge.kind")) for ln in calls["a2"].links] \
        == [(sid(calls["c1"]), "handoff")]


def test_human_input_is_an_attribute_not_a_link(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    a1, a2 = call("a1", 0, 1), call("a2", 5, 6)
    feed(tracer, [(a1, link(a1, "A")), (a2, link(a2, "A", ("a1", "continuation"), ("human:abc", "human")))])
    a2_span = by_call(exporter)["a2"]
    assert a2_span.attributes is not None and a2_span.attributes["interlock.edge.kind"] == ("continuation", "human")
    assert not a2_span.links


def test_merged_runs_export_as_one_trace(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    a, b, c = call("a", 0, 1), call("b", 0.5, 1.5), call("c", 2, 3)
    tracer.on_call(a, link(a, "A", run="run-A"))
    tracer.on_call(b, link(b, "B", run="run-B"))
    tracer.on_call(c, link(c, "C", ("a", "handoff"), ("b", "handoff"), run="run-A", merged_runs=["run-B"]))
    close_runs(tracer, "run-A", "run-B")
    roots = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_workflow")]
    assert len(roots) == 1 and roots[0].attributes and roots[0].attributes["interlock.run.calls"] == 3


def test_a_resumed_run_links_to_the_exported_run(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    a1 = call("a1", 0, 1)
    feed(tracer, [(a1, link(a1, "A", run="old"))], close="old")
    a2 = call("a2", 900, 901)
    feed(tracer, [(a2, link(a2, "A", ("a1", "continuation"), run="new", flags=["resumed"]))], close="new")
    calls = by_call(exporter)
    (ln,) = calls["a2"].links
    assert calls["a1"].context is not None and calls["a2"].context is not None
    assert (ln.context.trace_id, ln.context.span_id) == (calls["a1"].context.trace_id, sid(calls["a1"]))
    assert calls["a1"].context.trace_id != calls["a2"].context.trace_id


def test_a_call_in_no_run_is_exported_alone_at_once(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    c = call("e1", 0, 0.2, operation="embeddings", model_requested="text-embedding-3-small", model_served=None)
    tracer.on_call(c, link(c, "indexer", run=None))
    tracer.drain()
    (span,) = exporter.get_finished_spans()
    assert span.name == "embeddings text-embedding-3-small" and span.parent is None
    assert span.attributes is not None and span.attributes["gen_ai.operation.name"] == "embeddings"


def test_without_a_linker_the_calls_request_time_run_is_used(
        tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    c = call("n1", 0, 1, agent="named", run_id="run-9")
    tracer.on_call(c, None)
    close_runs(tracer, "run-9")
    assert "invoke_agent named" in by_name(exporter)


def test_call_span_ids_derive_from_call_ids(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    feed(tracer, fan_out())
    assert sid(by_call(exporter)["o1"]) == span_id_of("o1")


def test_an_observer_never_raises(tracer: RunTracer) -> None:
    tracer.on_call(object(), None)  # type: ignore[arg-type]
    tracer.on_runs_closed(None)  # type: ignore[arg-type]
    assert tracer.errors == 2


# ---------------------------------------------------------------------------- bounds and flushing


def test_the_least_recently_active_run_is_dropped_when_full(
        make_tracer: Callable[..., RunTracer], exporter: InMemorySpanExporter) -> None:
    tracer = make_tracer(max_runs=2)
    for i, run in enumerate(["r-a", "r-b", "r-a", "r-c"]):
        c = call(f"c{i}", i, i + 0.5)
        tracer.on_call(c, link(c, "A", run=run))
    assert (tracer.dropped_runs, tracer.dropped_calls) == (1, 1)  # r-b: r-a was active again
    tracer.flush_all()
    tracer.drain()
    runs = {s.attributes["interlock.run.id"] for s in exporter.get_finished_spans()
            if s.name.startswith("invoke_workflow") and s.attributes}
    assert runs == {"r-a", "r-c"}


def test_the_total_call_bound_drops_whole_runs(make_tracer: Callable[..., RunTracer]) -> None:
    tracer = make_tracer(max_calls=3)
    for i, run in enumerate(["r-a", "r-a", "r-b", "r-b"]):
        c = call(f"c{i}", i, i + 0.5)
        tracer.on_call(c, link(c, "A", run=run))
    assert (tracer.dropped_runs, tracer.dropped_calls, tracer.buffered_calls) == (1, 2, 2)


def test_a_long_run_drops_its_oldest_calls_and_says_so(
        make_tracer: Callable[..., RunTracer], exporter: InMemorySpanExporter) -> None:
    tracer = make_tracer(max_calls_per_run=2)
    pairs = []
    for i in range(3):
        c = call(f"c{i}", i, i + 0.5)
        pairs.append((c, link(c, "A", *([(f"c{i - 1}", "continuation")] if i else []))))
    feed(tracer, pairs)
    root = by_name(exporter)["invoke_workflow A"]
    assert set(by_call(exporter)) == {"c1", "c2"}
    assert root.attributes is not None and root.attributes["interlock.run.dropped_calls"] == 1


def test_flush_all_exports_open_runs_as_partial(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    feed(tracer, fan_out(), close=None)
    tracer.flush_all()
    tracer.drain()
    root = by_name(exporter)["invoke_workflow orchestrator"]
    assert root.attributes is not None and root.attributes["interlock.run.partial"] is True


def test_a_run_the_index_forgot_is_exported_once_stale(
        make_tracer: Callable[..., RunTracer], exporter: InMemorySpanExporter) -> None:
    now = [T0]
    tracer = make_tracer(stale_s=60, clock=lambda: now[0])
    c = call("s1", 0, 1)
    tracer.on_call(c, link(c, "A", run="forgotten"))
    now[0] += 30
    close_runs(tracer)
    assert exporter.get_finished_spans() == ()
    now[0] += 31
    close_runs(tracer)
    assert "invoke_workflow A" in by_name(exporter)


class _Blocking(SimpleSpanProcessor):
    """A processor that holds the span thread inside on_end until released."""

    def __init__(self) -> None:
        super().__init__(InMemorySpanExporter())
        self.entered, self.release = threading.Event(), threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        self.entered.set()
        self.release.wait(10)


def test_a_full_span_queue_drops_and_counts_runs() -> None:
    processor = _Blocking()
    tracer = RunTracer(processor, max_queued=1)
    try:
        for i in range(3):
            c = call(f"q{i}", i, i + 0.5)
            tracer.on_call(c, link(c, "A", run=f"run-{i}"))
            tracer.on_runs_closed([f"run-{i}"])
            if i == 0:
                assert processor.entered.wait(5)  # the thread is busy with run-0; run-1 waits in the queue
        assert (tracer.dropped_runs, tracer.dropped_calls) == (1, 1)
    finally:
        processor.release.set()
        tracer.shutdown()
    assert tracer.exported_runs == 2


class _Failing(SimpleSpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("collector exploded")


def test_a_failing_processor_is_counted_not_raised() -> None:
    tracer = RunTracer(_Failing(InMemorySpanExporter()))
    try:
        feed(tracer, fan_out())
        assert tracer.errors == 1 and tracer.exported_runs == 0
    finally:
        tracer.shutdown()


# ---------------------------------------------------------------------------- the real linker


def test_fan_out_through_the_real_linker(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    linker = Linker(MemoryLineageIndex(), run_idle_s=600.0)
    runs = set()
    for ex in render(fan_out_script()):
        c = call_from_exchange(ex)
        lk = linker.observe(c)
        runs.add(lk.run_id)
        tracer.on_call(c, lk)
    close_runs(tracer, *[r for r in runs if r])
    spans, calls = by_name(exporter), by_call(exporter)
    for worker, step in (("researcher", "w1"), ("policy-analyst", "w2"), ("industry-analyst", "w3")):
        assert parent_of(spans[f"invoke_agent {worker}"]) == sid(calls["o1"]), worker
        assert parent_of(calls[step]) == sid(spans[f"invoke_agent {worker}"])
    returns = {ln.context.span_id for ln in calls["o2"].links
               if ln.attributes and ln.attributes["interlock.edge.kind"] == "return"}
    assert returns == {sid(calls["w1"]), sid(calls["w2"]), sid(calls["w3"])}


def test_nested_orchestrators_nest_three_levels(tracer: RunTracer, exporter: InMemorySpanExporter) -> None:
    results = sc.drive(sc.NESTED)
    for ex in sc.exchanges(sc.NESTED):
        tracer.on_call(call_from_exchange(ex), results[ex.step])
    close_runs(tracer, *{r.run_id for r in results.values() if r.run_id})
    calls = by_call(exporter)
    agents = [s for s in exporter.get_finished_spans() if s.name.startswith("invoke_agent")]
    under = {s.name: [c for c, span in calls.items() if parent_of(s) == sid(span)] for s in agents}
    assert under["invoke_agent engineering-lead"] == ["d1"]
    assert under["invoke_agent copywriter"] == ["m1"]
    engineers = [s for s in agents if s.name == "invoke_agent engineer"]
    assert len(engineers) == 2 and all(parent_of(s) == sid(calls["e1"]) for s in engineers)


# ---------------------------------------------------------------------------- OTLP over real HTTP


def test_make_run_tracer_is_none_without_an_endpoint() -> None:
    assert make_run_tracer(load_settings(otlp_endpoint=None)) is None


def test_traces_url() -> None:
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


def test_otlp_http_export_arrives_as_real_protobuf() -> None:
    with OtlpReceiver() as rx:
        tracer = make_run_tracer(load_settings(otlp_endpoint=rx.url))
        assert tracer is not None
        pairs = fan_out()
        pairs[0][0].traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        feed(tracer, pairs)
        tracer.shutdown()
        spans = rx.wait_spans(9)
    assert {s.resource.get("service.name") for s in spans} == {"interlock"}
    assert {s.scope for s in spans} == {"interlock"}
    assert {s.trace_id for s in spans} == {TRACE_ID}
    named = {s.name: s for s in spans}
    calls = {s.attributes["interlock.call.id"]: s for s in spans if "interlock.call.id" in s.attributes}
    assert named["invoke_workflow orchestrator"].parent_span_id == PARENT_ID
    assert named["invoke_agent writer"].parent_span_id == calls["o1"].span_id
    o2 = calls["o2"]
    assert o2.kind == 3  # SPAN_KIND_CLIENT
    assert o2.attributes["gen_ai.usage.input_tokens"] == 100
    assert o2.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert {(ln[1], ln[2]["interlock.edge.kind"]) for ln in o2.links} == \
        {(calls["r2"].span_id, "return"), (calls["w1"].span_id, "return")}
    assert calls["w1"].events[0][0] == "interlock.guard.flag"
    assert calls["w1"].events[0][1]["interlock.guard.data.limit"] == 1000


# ---------------------------------------------------------------------------- end to end


PLAN = ("Research plan for the heat pump briefing.\n\n"
        "Survey the installed base of residential heat pumps in Northern Europe, estimate annual unit growth "
        "since 2019, and compare the installation subsidies that Germany, Sweden and the Netherlands offer today.")
FINDINGS = ("Installed heat pumps in the Nordic countries passed four million units, with growth close to twelve "
            "percent a year driven by air to water systems replacing oil boilers; Germany covers up to seventy "
            "percent of installation cost for low income households.")
SYSTEM = {"orchestrator": "You are the orchestrator. Plan the work and hand research to the researcher.",
          "researcher": "You are the researcher. Find market data and cite numbers precisely."}


def _client(px: ProxyServer, agent: str, headers: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{px.url}/agents/{agent}/v1", api_key="sk-test", max_retries=0, timeout=20,
                         default_headers=headers)


def _orchestrate(px: ProxyServer, upstream: FakeUpstream) -> None:
    """orchestrator plans → researcher gets the plan → orchestrator gets the findings."""
    upstream.script(Reply(text=PLAN), Reply(text=FINDINGS), Reply(text="Briefing ready."))
    tp = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    orch, res = _client(px, "orchestrator", tp), _client(px, "researcher", {})
    history: list[Any] = [{"role": "system", "content": SYSTEM["orchestrator"]},
                          {"role": "user", "content": "Brief me on the Northern European heat pump market."}]
    plan = orch.chat.completions.create(model="gpt-4o", messages=history).choices[0].message.content or ""
    found = res.chat.completions.create(model="gpt-4o", messages=[
        {"role": "system", "content": SYSTEM["researcher"]},
        {"role": "user", "content": "Assignment from the orchestrator:\n" + plan}]).choices[0].message.content
    history += [{"role": "assistant", "content": plan},
                {"role": "user", "content": "The researcher reports:\n" + (found or "")}]
    orch.chat.completions.create(model="gpt-4o", messages=history)


def test_a_run_through_the_proxy_arrives_at_the_collector(
        tmp_path: Path, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    with OtlpReceiver() as rx, ProxyServer(tmp_path, upstream.url, otlp_endpoint=rx.url, run_idle_s=0.5) as px:
        assert px.runtime.tracer is not None
        px.runtime.pipeline.close_every_s = 0.2  # sweep idle runs often (test speed only)
        _orchestrate(px, upstream)
        spans = rx.wait_spans(1 + 2 + 3)
    named = {s.name: s for s in spans}
    calls = sorted((s for s in spans if s.name == "chat gpt-4o"), key=lambda s: s.start_ns)
    assert [c.attributes["gen_ai.agent.name"] for c in calls] == ["orchestrator", "researcher", "orchestrator"]
    o1, r1, o2 = calls
    root = named["invoke_workflow orchestrator"]
    assert (root.trace_id, root.parent_span_id) == (TRACE_ID, PARENT_ID)
    assert named["invoke_agent researcher"].parent_span_id == o1.span_id
    assert r1.parent_span_id == named["invoke_agent researcher"].span_id
    assert [(ln[1], ln[2]["interlock.edge.kind"]) for ln in o2.links] == [(r1.span_id, "return")]
    assert o1.attributes["gen_ai.provider.name"] == "openai" and o1.attributes["gen_ai.usage.output_tokens"] > 0

