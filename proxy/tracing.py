"""Runs as OpenTelemetry traces: one trace per run, exported once the run's shape has settled.

A call's place in the tree is only known after later calls (a handoff is seen when the worker
quotes the orchestrator), so calls are buffered per run and a run becomes spans when the linker
closes it.  The tree follows the orchestration, not the clock:

    invoke_workflow planner            INTERNAL  root; child of the agents' `traceparent` if sent
    │                                            interlock.run.id, .calls, .agents, token sums
    ├─ invoke_agent planner            INTERNAL  one invocation = a maximal set of one agent's
    │  ├─ chat gpt-4o          (o1)    CLIENT      calls joined by continuation / tool edges
    │  │  ├─ invoke_agent researcher             ◀ under the call that handed it the work
    │  │  │  ├─ chat gpt-4o    (r1)                (the handoff edge o1 → r1)
    │  │  │  └─ chat gpt-4o    (r2)
    │  │  └─ invoke_agent writer
    │  │     └─ chat gpt-4o    (w1)    guard verdicts → span events interlock.guard.{action}
    │  └─ chat gpt-4o          (o2)    ┄┄ links ┄┄▶ r2, w1  (return edges: the results o2 received)

Every other edge between calls (a second handoff, a continuation from another agent or from an
earlier, already exported run) is a span link carrying `interlock.edge.kind`.

    pipeline worker ─ on_call(call, link) ──▶ buffer: run id → CallFacts  (bounded, LRU: the
                    ─ on_runs_closed(ids) ─┐    least recently active run is dropped, counted)
    shutdown ──────── flush_all() ─────────┤
                                           ▼ run closed: its facts, put_nowait
                              [bounded queue] ─▶ span thread: shape → spans ─▶ SpanProcessor
                                                                   (Batch → OTLP/HTTP exporter)

Span ids are derived from call ids (a call's span id is the same in every export), trace ids
from the run and its first call, unless the agents sent `traceparent`: then the run joins
their trace.  The TracerProvider belongs to the RunTracer; the global one is never touched.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from proxy.call import Call, Usage
from proxy.graph.model import HUMAN_PREFIX, Edge, LinkResult
from proxy.lru import LRU
from proxy.settings import Settings

log = logging.getLogger("interlock.tracing")

STRUCTURAL = frozenset({"continuation", "tool"})  # edges that keep one agent's invocation going
_OPERATIONS = {"chat": "chat", "messages": "chat", "responses": "chat", "embeddings": "embeddings"}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


# ---------------------------------------------------------------------------- what is buffered


@dataclass(slots=True)
class CallFacts:
    """What one call's span needs.  A Call holds its bodies: too big to keep until its run closes."""

    call_id: str
    agent: str
    thread_id: str | None
    start_ns: int
    end_ns: int
    operation: str
    provider: str
    upstream: str
    model_requested: str | None
    model_served: str | None
    max_tokens: int | None
    stream: bool
    first_byte_ns: int | None
    status: int | None
    outcome: str | None
    error: str | None
    finish_reason: str | None
    response_id: str | None
    usage: Usage
    input_tokens_counted: int | None
    cost_usd: float | None
    traceparent: str | None
    edges: list[Edge] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    guard_events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, call: Call, link: LinkResult | None) -> CallFacts:
        start = _ns(call.started_at)
        return cls(
            call_id=call.id, agent=(link.agent if link else call.agent) or "unknown",
            thread_id=link.thread_id if link else None, start_ns=start,
            end_ns=max(start, _ns(call.ended_at or call.started_at)), operation=call.operation,
            provider=call.provider, upstream=call.upstream, model_requested=call.model_requested,
            model_served=call.model_served, max_tokens=call.max_tokens, stream=call.stream,
            first_byte_ns=_ns(call.first_byte_at) if call.first_byte_at else None, status=call.status,
            outcome=call.outcome, error=call.error, finish_reason=call.finish_reason,
            response_id=call.completion.response_id, usage=call.usage,
            input_tokens_counted=call.input_tokens_counted, cost_usd=call.cost_usd, traceparent=call.traceparent,
            edges=list(link.edges) if link else [], flags=list(link.flags) if link else [],
            guard_events=list(call.guard_events),
        )

    @property
    def operation_name(self) -> str:
        return _OPERATIONS.get(self.operation, self.operation)

    @property
    def span_name(self) -> str:
        model = self.model_requested or self.model_served
        return f"{self.operation_name} {model}" if model else self.operation_name

    @property
    def error_type(self) -> str | None:
        """`error.type`: the refusal's code, the HTTP status, else the outcome; None when ok."""
        if self.outcome == "denied":
            codes = [e.get("code") for e in self.guard_events if e.get("action") == "deny" and e.get("code")]
            return str(codes[0]) if codes else "interlock_denied"
        if self.status is not None and self.status >= 400:
            return str(self.status)
        return self.outcome if self.outcome not in (None, "ok") else None


@dataclass(slots=True)
class _Buffered:
    calls: deque[CallFacts]
    last_seen: float
    dropped: int = 0


# ---------------------------------------------------------------------------- the run's shape


@dataclass(slots=True)
class Invocation:
    """One agent's calls joined by continuation/tool edges, and the handoff that started it."""

    agent: str
    calls: list[CallFacts]
    parent: Edge | None = None  # source: a call of an earlier invocation in the same run

    @property
    def key(self) -> str:
        return self.calls[0].call_id


def invocations(facts: Iterable[CallFacts]) -> list[Invocation]:
    """A run's calls as invocations in start order, each with the handoff that started it.

    A parent must belong to an earlier invocation, so the tree never has a cycle (a ring
    A → B → C → A keeps A at the top and makes C → A a link)."""
    ordered = sorted(facts, key=lambda f: (f.start_ns, f.call_id))
    invs = [Invocation(group[0].agent, group) for group in _connected(ordered)]
    invs.sort(key=lambda i: (i.calls[0].start_ns, i.key))
    rank = {f.call_id: i for i, inv in enumerate(invs) for f in inv.calls}
    for i, inv in enumerate(invs):
        inv.parent = next((e for f in inv.calls for e in f.edges
                           if e.kind == "handoff" and rank.get(e.source, i) < i), None)
    return invs


def _connected(ordered: list[CallFacts]) -> list[list[CallFacts]]:
    """Union-find over same-agent continuation/tool edges; groups keep start order."""
    agent = {f.call_id: f.agent for f in ordered}
    root = {f.call_id: f.call_id for f in ordered}

    def find(x: str) -> str:
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    for f in ordered:
        for e in f.edges:
            if e.kind in STRUCTURAL and agent.get(e.source) == f.agent:
                root[find(f.call_id)] = find(e.source)
    groups: dict[str, list[CallFacts]] = {}
    for f in ordered:
        groups.setdefault(find(f.call_id), []).append(f)
    return list(groups.values())


# ---------------------------------------------------------------------------- attributes


def call_attributes(f: CallFacts, run_id: str | None) -> dict[str, Any]:
    """GenAI semantic-convention attributes of a call's CLIENT span, plus interlock.*."""
    u = f.usage
    ttfc = (f.first_byte_ns - f.start_ns) / 1e9 if f.stream and f.first_byte_ns else None
    return _clean({
        "gen_ai.operation.name": f.operation_name,
        "gen_ai.provider.name": f.provider,
        "gen_ai.request.model": f.model_requested,
        "gen_ai.request.max_tokens": f.max_tokens,
        "gen_ai.request.stream": f.stream,
        "gen_ai.response.model": f.model_served,
        "gen_ai.response.id": f.response_id,
        "gen_ai.response.finish_reasons": [f.finish_reason] if f.finish_reason else None,
        "gen_ai.response.time_to_first_chunk": ttfc,
        "gen_ai.usage.input_tokens": u.input_tokens,
        "gen_ai.usage.output_tokens": u.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": u.cached_tokens,
        "gen_ai.usage.reasoning.output_tokens": u.reasoning_tokens,
        "gen_ai.agent.name": f.agent,
        "gen_ai.conversation.id": f.thread_id,
        "error.type": f.error_type,
        "http.response.status_code": f.status,
        "interlock.call.id": f.call_id,
        "interlock.run.id": run_id,
        "interlock.outcome": f.outcome,
        "interlock.upstream": f.upstream,
        "interlock.cost_usd": f.cost_usd,
        "interlock.usage.input_tokens_counted": f.input_tokens_counted,
        "interlock.flags": f.flags,
        "interlock.edge.kind": [e.kind for e in f.edges],
        "interlock.edge.source": [e.source for e in f.edges],
    })


def invocation_attributes(inv: Invocation, run_id: str) -> dict[str, Any]:
    first, handoff = inv.calls[0], inv.parent
    ev = handoff.evidence if handoff else {}
    return _clean({
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": inv.agent,
        "gen_ai.provider.name": first.provider,
        "gen_ai.request.model": first.model_requested,
        "gen_ai.conversation.id": first.thread_id,
        **_token_sums(inv.calls),
        "interlock.run.id": run_id,
        "interlock.agent.calls": len(inv.calls),
        "interlock.handoff.source": handoff.source if handoff else None,
        "interlock.handoff.coverage": ev.get("coverage"),
        "interlock.handoff.truncated": ev.get("truncated"),
    })


def run_attributes(run_id: str, invs: Sequence[Invocation], *, partial: bool, dropped: int) -> dict[str, Any]:
    calls = [f for inv in invs for f in inv.calls]
    costs = [f.cost_usd for f in calls if f.cost_usd is not None]
    return _clean({
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": invs[0].agent,
        **_token_sums(calls),
        "interlock.run.id": run_id,
        "interlock.run.calls": len(calls),
        "interlock.run.agents": sorted({inv.agent for inv in invs}),
        "interlock.run.invocations": len(invs),
        "interlock.run.failed_calls": sum(1 for f in calls if f.error_type) or None,
        "interlock.run.partial": partial or None,
        "interlock.run.dropped_calls": dropped or None,
        "interlock.cost_usd": round(sum(costs), 6) if costs else None,
    })


def guard_event(ev: dict[str, Any]) -> tuple[str, dict[str, Any], int | None]:
    """A guard verdict as a span event: (name, attributes, timestamp ns)."""
    attrs: dict[str, Any] = {f"interlock.guard.{k}": ev.get(k) for k in ("rule", "kind", "reason", "hook", "code")}
    for key, value in (ev.get("data") or {}).items():
        attrs[f"interlock.guard.data.{key}"] = _value(value)
    at = ev.get("at")
    return f"interlock.guard.{ev.get('action') or 'unknown'}", _clean(attrs), _ns(at) if at else None


def _token_sums(calls: Iterable[CallFacts]) -> dict[str, int]:
    ins = outs = 0
    for f in calls:
        ins += f.usage.input_tokens or 0
        outs += f.usage.output_tokens or 0
    return {"gen_ai.usage.input_tokens": ins, "gen_ai.usage.output_tokens": outs}


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes minus empty values (the SDK warns on None, empty lists say nothing)."""
    return {k: v for k, v in attrs.items() if v is not None and v != [] and v != ""}


def _value(v: Any) -> Any:
    if isinstance(v, str | bool | int | float):
        return v
    return json.dumps(v, default=str, sort_keys=True)


def _ns(t: float) -> int:
    return int(t * 1e9)


def _id(key: str, size: int) -> int:
    """A stable id from a key (span ids: 8 bytes, trace ids: 16); never the invalid 0."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=size).digest(), "big") or 1


def span_id_of(call_id: str) -> int:
    """The span id a call's CLIENT span gets, in every export."""
    return _id("call:" + call_id, 8)


# ---------------------------------------------------------------------------- the tracer


class _PresetIds(IdGenerator):
    """Hands the SDK the ids computed for the next span (only the span thread starts spans)."""

    def __init__(self) -> None:
        self.trace_id = 1
        self.span_id = 1

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class _SpanThread:
    """Span building off the pipeline worker (an event-loop task: a 1,000-call run is ~0.1 s of
    CPU): a bounded job queue and one daemon thread."""

    def __init__(self, maxsize: int) -> None:
        self.jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize)
        self.stopped = False
        self.thread = threading.Thread(target=self._work, name="interlock-tracing", daemon=True)
        self.thread.start()

    def submit(self, job: Callable[[], None]) -> bool:
        """Never blocks: False when the queue is full or the thread has stopped."""
        if self.stopped:
            return False
        try:
            self.jobs.put_nowait(job)
            return True
        except queue.Full:
            return False

    def drain(self, timeout: float) -> bool:
        """Wait until every job queued so far is done."""
        done = threading.Event()
        try:
            self.jobs.put(done.set, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def stop(self, timeout: float) -> None:
        if not self.stopped:
            self.stopped = True
            self.jobs.put(None)
            self.thread.join(timeout)

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            job()


class RunTracer:
    """Buffers each run's calls and exports the run as one trace when the linker closes it.

    `on_call` and `on_runs_closed` run on the pipeline worker: they cost microseconds per call,
    never block and never raise (failures are logged and counted in `errors`).  Spans are
    built on the tracer's own thread, behind a queue of `max_queued` runs, and handed to
    `processor` (in production a BatchSpanProcessor, which does the I/O on its own thread).

    Bounds: `max_runs` buffered runs and `max_calls` buffered calls in all (the least recently
    active run is dropped), `max_calls_per_run` per run (its oldest call is dropped; the root
    span says how many), `max_queued` runs waiting for the span thread; every loss is counted
    in `dropped_runs` / `dropped_calls`.  Runs idle past `stale_s` that the linker never
    closed (its index forgot them) are exported at the next `on_runs_closed`."""

    def __init__(self, processor: SpanProcessor, *, max_runs: int = 2_000, max_calls: int = 100_000,
                 max_calls_per_run: int = 2_000, max_queued: int = 1_000, stale_s: float = 3_600.0,
                 recent_calls: int = 10_000, clock: Callable[[], float] = time.time,
                 resource: Resource | None = None) -> None:
        self.max_runs, self.max_calls, self.max_calls_per_run = max_runs, max_calls, max_calls_per_run
        self.stale_s, self.clock = stale_s, clock
        self._ids = _PresetIds()
        self.provider = TracerProvider(sampler=ALWAYS_ON, id_generator=self._ids, shutdown_on_exit=False,
                                       resource=resource or Resource.create({"service.name": "interlock"}))
        self.provider.add_span_processor(processor)
        self._tracer = self.provider.get_tracer("interlock")
        self._propagator = TraceContextTextMapPropagator()
        self._runs: LRU[str, _Buffered] = LRU()
        self._recent: LRU[str, int] = LRU()  # exported call id → its trace id (span thread)
        self._recent_max = recent_calls
        self._lock = threading.Lock()
        self._spans = _SpanThread(max_queued)
        self.buffered_calls = 0
        self.dropped_runs = self.dropped_calls = 0
        self.exported_runs = self.exported_spans = self.errors = 0

    # ------------------------------------------------------------------ pipeline hooks

    def on_call(self, call: Call, link: LinkResult | None) -> None:
        """Pipeline observer: buffer the call under its run (a call in no run is exported alone)."""
        try:
            facts = CallFacts.of(call, link)
            run_id = link.run_id if link is not None else (call.run_hint or call.run_id)
            with self._lock:
                if run_id is None:
                    self._submit(functools.partial(self._emit_alone, facts), 1)
                else:
                    self._add(run_id, facts, link.merged_runs if link is not None else [])
        except Exception:
            self.errors += 1
            log.exception("tracing: could not take call %s", getattr(call, "id", "?"))

    def on_runs_closed(self, run_ids: Iterable[str]) -> None:
        """After the linker's idle sweep, even when it closed nothing (stale runs go then too)."""
        try:
            with self._lock:
                for run_id in run_ids:
                    self._export_run(run_id, partial=False)
                horizon = self.clock() - self.stale_s
                while self._runs and next(iter(self._runs.values())).last_seen < horizon:
                    self._export_run(next(iter(self._runs)), partial=True)
        except Exception:
            self.errors += 1
            log.exception("tracing: closing runs failed")

    def flush_all(self) -> None:
        """At shutdown: export every open run as it stands (`interlock.run.partial`)."""
        with self._lock:
            while self._runs:
                self._export_run(next(iter(self._runs)), partial=True)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the runs handed over so far are spans in the processor (tests, shutdown)."""
        return self._spans.drain(timeout)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Export open runs, finish building spans, flush the processor and stop (blocking)."""
        self.flush_all()
        self._spans.stop(timeout)
        self.provider.shutdown()

    async def aclose(self) -> None:
        """`shutdown` for the event loop: buffers are read here, the waiting happens off the loop."""
        self.flush_all()
        await asyncio.to_thread(self.shutdown)

    def stats(self) -> dict[str, int]:
        return {"buffered_runs": len(self._runs), "buffered_calls": self.buffered_calls,
                "queued_runs": self._spans.jobs.qsize(), "dropped_runs": self.dropped_runs,
                "dropped_calls": self.dropped_calls, "exported_runs": self.exported_runs,
                "exported_spans": self.exported_spans, "errors": self.errors}

    # ------------------------------------------------------------------ buffer (pipeline worker)

    def _add(self, run_id: str, facts: CallFacts, merged: Iterable[str]) -> None:
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = _Buffered(deque(), self.clock())
        for old in merged:
            if old != run_id:
                self._merge(self._runs.pop(old, None), run)
        self._append(run, facts)
        run.last_seen = self.clock()
        self._runs.move_to_end(run_id)
        while self._runs and (len(self._runs) > self.max_runs or self.buffered_calls > self.max_calls):
            _, evicted = self._runs.popitem(last=False)
            self.buffered_calls -= len(evicted.calls)
            self._count_loss(len(evicted.calls))

    def _append(self, run: _Buffered, facts: CallFacts) -> None:
        if len(run.calls) >= self.max_calls_per_run:
            run.calls.popleft()
            run.dropped += 1
            self.dropped_calls += 1
            self.buffered_calls -= 1
        run.calls.append(facts)
        self.buffered_calls += 1

    def _merge(self, old: _Buffered | None, into: _Buffered) -> None:
        if old is None:
            return
        self.buffered_calls -= len(old.calls)
        into.dropped += old.dropped
        for facts in old.calls:
            self._append(into, facts)

    def _export_run(self, run_id: str, *, partial: bool) -> None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            self.buffered_calls -= len(run.calls)
            job = functools.partial(self._emit_run, run_id, list(run.calls), partial, run.dropped)
            self._submit(job, len(run.calls))

    def _submit(self, job: Callable[[], None], calls: int) -> None:
        if not self._spans.submit(job):
            self._count_loss(calls)

    def _count_loss(self, calls: int) -> None:
        self.dropped_runs += 1
        self.dropped_calls += calls

    # ------------------------------------------------------------------ spans (span thread)

    def _emit_run(self, run_id: str, calls: list[CallFacts], partial: bool, dropped: int) -> None:
        try:
            _RunTrace(self, run_id, calls).emit(partial=partial, dropped=dropped)
            self.exported_runs += 1
        except Exception:
            self.errors += 1
            log.exception("tracing: could not export run %s", run_id)

    def _emit_alone(self, facts: CallFacts) -> None:
        try:
            alone = _RunTrace(self, None, [facts])
            alone.call_span(facts, alone.top(), links=[])
        except Exception:
            self.errors += 1
            log.exception("tracing: could not export call %s", facts.call_id)

    def remote_parent(self, traceparent: str | None) -> SpanContext | None:
        """The agent's span from a W3C `traceparent` header value (None when absent or invalid)."""
        if not traceparent:
            return None
        ctx = self._propagator.extract({"traceparent": traceparent})
        sc = trace.get_current_span(ctx).get_span_context()
        return sc if sc.is_valid else None

    def start_span(self, name: str, trace_id: int, span_id: int, parent: Context, start_ns: int, *,
                   kind: SpanKind, attributes: dict[str, Any], links: Sequence[Link] = ()) -> trace.Span:
        """Start a span with the given ids (span thread only: the ids are preset per span)."""
        self._ids.trace_id, self._ids.span_id = trace_id, span_id
        self.exported_spans += 1
        return self._tracer.start_span(name, context=parent, kind=kind, attributes=attributes, links=links,
                                       start_time=start_ns)

    def remember(self, call_id: str, trace_id: int) -> None:
        self._recent[call_id] = trace_id
        self._recent.evict(self._recent_max)

    def recent_trace(self, call_id: str) -> int | None:
        return self._recent.get(call_id)


class _RunTrace:
    """One run's spans: root, invocations, calls (built on the span thread)."""

    def __init__(self, tracer: RunTracer, run_id: str | None, calls: list[CallFacts]) -> None:
        self.tracer, self.run_id, self.calls = tracer, run_id, calls
        self.invs = invocations(calls)
        ordered = sorted(calls, key=lambda f: (f.start_ns, f.call_id))
        self.remote = next(filter(None, map(tracer.remote_parent, (f.traceparent for f in ordered))), None)
        first = ordered[0].call_id
        self.trace_id = self.remote.trace_id if self.remote else _id(f"trace:{run_id}:{first}", 16)
        self.root_id = _id(f"run:{run_id}:{first}", 8)
        self.owner = {f.call_id: inv for inv in self.invs for f in inv.calls}

    def top(self) -> Context:
        """The root's parent: the agents' span when they sent traceparent, else none."""
        return trace.set_span_in_context(NonRecordingSpan(self.remote)) if self.remote else Context()

    def emit(self, *, partial: bool, dropped: int) -> None:
        attrs = run_attributes(self.run_id or "", self.invs, partial=partial, dropped=dropped)
        root = self.tracer.start_span(f"invoke_workflow {self.invs[0].agent}", self.trace_id, self.root_id,
                                      self.top(), min(f.start_ns for f in self.calls),
                                      kind=SpanKind.INTERNAL, attributes=attrs)
        for inv in self.invs:
            self.invocation_span(inv)
        root.end(max(f.end_ns for f in self.calls))

    def invocation_span(self, inv: Invocation) -> None:
        parent_id = span_id_of(inv.parent.source) if inv.parent else self.root_id
        span_id = _id("agent:" + inv.key, 8)
        span = self.tracer.start_span(f"invoke_agent {inv.agent}", self.trace_id, span_id, self.local(parent_id),
                                      inv.calls[0].start_ns, kind=SpanKind.INTERNAL,
                                      attributes=invocation_attributes(inv, self.run_id or ""))
        last = inv.calls[-1]
        if last.error_type:  # the agent's last word was a failure
            span.set_status(Status(StatusCode.ERROR, last.error or last.outcome))
            span.set_attribute("error.type", last.error_type)
        for f in inv.calls:
            self.call_span(f, self.local(span_id), self.links(f, inv))
        span.end(max(f.end_ns for f in inv.calls))

    def call_span(self, f: CallFacts, parent: Context, links: list[Link]) -> None:
        span = self.tracer.start_span(f.span_name, self.trace_id, span_id_of(f.call_id), parent, f.start_ns,
                                      kind=SpanKind.CLIENT, attributes=call_attributes(f, self.run_id),
                                      links=links + self.traceparent_link(f))
        for ev in f.guard_events:
            name, attrs, at = guard_event(ev)
            span.add_event(name, attrs, timestamp=at)
        if f.error_type:
            span.set_status(Status(StatusCode.ERROR, f.error or f.outcome))
        span.end(f.end_ns)
        self.tracer.remember(f.call_id, self.trace_id)

    def links(self, f: CallFacts, inv: Invocation) -> list[Link]:
        """Edges the tree does not show: returns, extra handoffs, edges from other agents or runs."""
        out = []
        for e in f.edges:
            if e is inv.parent or e.source.startswith(HUMAN_PREFIX) or self.owner.get(e.source) is inv:
                continue
            ctx = self.source_context(e.source)
            if ctx is not None:
                out.append(Link(ctx, _clean({"interlock.edge.kind": e.kind, "interlock.call.id": e.source,
                                             "interlock.edge.coverage": e.evidence.get("coverage"),
                                             "interlock.edge.truncated": e.evidence.get("truncated")})))
        return out

    def traceparent_link(self, f: CallFacts) -> list[Link]:
        """The agent's own span for this request, when it is not already the root's parent."""
        remote = self.tracer.remote_parent(f.traceparent)
        if remote is None or (self.remote is not None and remote.span_id == self.remote.span_id):
            return []
        return [Link(remote, {"interlock.link.kind": "traceparent"})]

    def source_context(self, call_id: str) -> SpanContext | None:
        trace_id = self.trace_id if call_id in self.owner else self.tracer.recent_trace(call_id)
        if trace_id is None:
            return None
        return SpanContext(trace_id, span_id_of(call_id), is_remote=False, trace_flags=_SAMPLED)

    def local(self, span_id: int) -> Context:
        sc = SpanContext(self.trace_id, span_id, is_remote=False, trace_flags=_SAMPLED)
        return trace.set_span_in_context(NonRecordingSpan(sc))


# ---------------------------------------------------------------------------- wiring


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP base URL → its traces URL (a URL that already names /v1/traces is kept)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def make_run_tracer(settings: Settings, *, schedule_delay_s: float = 1.0) -> RunTracer | None:
    """A RunTracer exporting over OTLP/HTTP to `INTERLOCK_OTLP_ENDPOINT`; None when it is unset."""
    if not settings.otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint))
    processor = BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_s * 1000)
    return RunTracer(processor, stale_s=2 * settings.run_idle_s + 60)
