"""Metrics through the OpenTelemetry SDK, rendered as Prometheus text on /metrics.

GenAI semantic-convention instruments where they exist (`gen_ai.client.token.usage`,
`gen_ai.client.operation.duration`, `gen_ai.client.operation.time_to_first_chunk`), plus
Interlock's own (`interlock.*`).  Labels are bounded: agent, model, provider, operation,
outcome, rule, action — never call ids or raw keys.

Two moments feed it:
- `observe_call` on the request path, at the end of each request (~1 µs: histograms aggregated
  in `Histogram`, rendered next to the SDK's instruments);
- `on_recorded` in the pipeline worker, after the graph resolved the agent (counters).
Writer, pipeline and rules state are read by observable gauges at scrape time.

Client-chosen label values (agent, model) pass through a `LabelCap`: past
INTERLOCK_METRIC_LABEL_LIMIT distinct values per label, new ones read `other`
(`interlock_metric_label_overflow_total{label}`).  `/metrics` renders in a worker thread
(`SharedRender`), so a large scrape does not stall the event loop.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from itertools import accumulate
from typing import Any, Protocol

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.call import Call
from proxy.labelcap import LabelCap

_SECONDS: list[float] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
_TOKENS: list[float] = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]


_CALL_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "outcome")


class Histogram:
    """Fixed-bucket histogram, one series per tuple of label values.  `observe` runs on the
    request path and the pipeline worker (event-loop thread): no lock, no allocation once a
    series exists.  Read at scrape time by `_HistogramCollector`."""

    __slots__ = ("name", "doc", "labels", "bounds", "series")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], bounds: list[float]) -> None:
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, bounds
        self.series: dict[tuple[str, ...], list[float]] = {}  # per-bucket counts (+Inf last), then sum

    def observe(self, key: tuple[str, ...], value: float) -> None:
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = [0.0] * (len(self.bounds) + 2)
        s[bisect_left(self.bounds, value)] += 1
        s[-1] += value

    def family(self) -> HistogramMetricFamily:
        """Prometheus buckets are cumulative (`le` = less than or equal)."""
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        edges = [_le(b) for b in self.bounds] + ["+Inf"]
        for key, s in list(self.series.items()):
            snap = list(s)  # one atomic copy: counts and sum agree
            buckets = list(zip(edges, accumulate(snap[:-1]), strict=True))
            fam.add_metric(list(key), buckets, snap[-1])
        return fam


class _HistogramCollector(Collector):
    def __init__(self, histograms: list[Histogram]) -> None:
        self.histograms = histograms

    def collect(self) -> Iterable[Metric]:
        return [h.family() for h in self.histograms]


def _le(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else repr(bound)


def _op_name(call: Call) -> str:
    return {"chat": "chat", "messages": "chat", "responses": "chat", "embeddings": "embeddings"}.get(
        call.operation, call.operation)


class SharedRender:
    """Runs a render in a worker thread; scrapes that arrive while one runs share its bytes.

    Awaited on the event loop.  The render only reads (atomic `list()` copies of the series,
    see `Histogram.family`), so the loop keeps writing meanwhile.  A scrape that is cancelled
    (client gone) does not cancel the shared render.
    """

    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render
        self._pending: asyncio.Task[bytes] | None = None

    async def __call__(self) -> bytes:
        task = self._pending
        if task is None:
            task = self._pending = asyncio.create_task(asyncio.to_thread(self._render), name="interlock-metrics")
            task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[bytes]) -> None:
        if self._pending is task:
            self._pending = None
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have gone


# ---------------------------------------------------------------- what a scrape reads
# Read-only views of the components whose state /metrics reports (the Runtime satisfies
# `Scraped`): read at scrape time, off the request path; each part is None until started.


class _Chain(Protocol):
    @property
    def guards(self) -> Sequence[Any]: ...


class _RuleSet(Protocol):
    @property
    def rules(self) -> Sized: ...


class _GuardErrors(Protocol):
    @property
    def errors_total(self) -> int: ...
    @property
    def store_errors(self) -> Mapping[tuple[str, str, str], int]: ...


class RulesState(Protocol):
    @property
    def chain(self) -> _Chain: ...
    @property
    def rules(self) -> _RuleSet: ...
    @property
    def reload_failures(self) -> int: ...
    @property
    def errors(self) -> Sized: ...
    @property
    def stats(self) -> _GuardErrors: ...


class _CascadeTotals(Protocol):
    @property
    def roots_total(self) -> int: ...
    @property
    def tainted_total(self) -> int: ...


class EscalationsState(Protocol):
    @property
    def cascade(self) -> _CascadeTotals: ...


class TracerState(Protocol):
    def stats(self) -> Mapping[str, int]: ...


class _Queue(Protocol):
    def qsize(self) -> int: ...


class PipelineState(Protocol):
    @property
    def queue(self) -> _Queue: ...
    @property
    def overflowed(self) -> int: ...
    @property
    def lagging(self) -> Sized: ...
    @property
    def linked_late(self) -> int: ...
    @property
    def unlinked(self) -> int: ...
    @property
    def parked(self) -> int: ...
    @property
    def linked_remote(self) -> int: ...
    @property
    def linked_local(self) -> int: ...
    @property
    def link_timeouts(self) -> int: ...


class GraphOwnerState(Protocol):
    @property
    def leading(self) -> bool: ...
    @property
    def linked(self) -> int: ...
    @property
    def lag_s(self) -> float: ...


class GraphClientState(Protocol):
    """Read by name: placed, place_timeouts, place_failures, send_failures."""


class Scraped(Protocol):
    """The components /metrics reports on; the writer's counters are read by name."""

    @property
    def rules(self) -> RulesState | None: ...
    @property
    def escalations(self) -> EscalationsState | None: ...
    @property
    def tracer(self) -> TracerState | None: ...
    @property
    def writer(self) -> object | None: ...
    @property
    def pipeline(self) -> PipelineState | None: ...
    @property
    def graph_owner(self) -> GraphOwnerState | None: ...
    @property
    def graph_client(self) -> GraphClientState | None: ...


class Metrics:
    """One MeterProvider per runtime, with its own Prometheus registry (no global state)."""

    def __init__(self, scraped: Scraped, labels: LabelCap) -> None:
        self.scraped = scraped
        self.labels = labels
        self.scrape = SharedRender(self.render)
        self.registry = CollectorRegistry(auto_describe=True)
        self.reader = PrometheusMetricReader(registry=self.registry)
        self.provider = MeterProvider(metric_readers=[self.reader])
        m = self.provider.get_meter("interlock")
        # Histograms are aggregated here and rendered beside the SDK's instruments: an SDK
        # histogram measurement costs ~10 µs (attribute hashing, locks, view matching) and a
        # call makes four; `Histogram.observe` is a bisect and two list increments (~0.5 µs).
        self.duration = Histogram("gen_ai_client_operation_duration_seconds", "Call duration as the agent sees it",
                                  _CALL_LABELS, _SECONDS)
        self.ttfc = Histogram("gen_ai_client_operation_time_to_first_chunk_seconds",
                              "Time to the first response byte", _CALL_LABELS, _SECONDS)
        self.overhead = Histogram("interlock_proxy_overhead_seconds",
                                  "Time the proxy adds: request arrival to upstream send, plus upstream end to "
                                  "response end", ("gen_ai_provider_name", "stream"), _SECONDS)
        self.tokens = Histogram("gen_ai_client_token_usage", "Tokens per call by type (input/output)",
                                ("gen_ai_token_type", "gen_ai_provider_name", "gen_ai_request_model",
                                 "gen_ai_operation_name", "agent"), _TOKENS)
        self.registry.register(_HistogramCollector([self.duration, self.ttfc, self.overhead, self.tokens]))
        # Counters are summed in plain dicts on the worker and read by the SDK at scrape time:
        # an SDK measurement costs ~10 µs of attribute hashing, a dict increment 0.2 µs.
        self._calls: dict[tuple[str, ...], int] = {}
        self._cost: dict[tuple[str, ...], float] = {}
        self._verdicts: dict[tuple[str, ...], int] = {}
        self.in_flight = 0
        m.create_observable_counter("interlock.calls", callbacks=[self._observe_calls], unit="{call}",
                                    description="Calls by agent, model, provider and outcome")
        m.create_observable_counter("interlock.cost", callbacks=[self._observe_cost], unit="USD",
                                    description="Spend by agent and model (price table)")
        m.create_observable_counter("interlock.guard.verdicts", callbacks=[self._observe_verdicts],
                                    unit="{verdict}", description="Non-allow guard verdicts by rule, kind, action")
        m.create_observable_up_down_counter("interlock.requests.in_flight", callbacks=[self._observe_in_flight],
                                            unit="{request}", description="Requests being relayed")
        m.create_observable_gauge("interlock.writer.state", callbacks=[self._writer_state], unit="{record}",
                                  description="Writer queue depth and totals (written, spooled, replayed, dropped)")
        m.create_observable_gauge("interlock.pipeline.queue_depth", callbacks=[self._pipeline_depth], unit="{call}",
                                  description="Calls waiting for linking and storage")
        m.create_observable_gauge("interlock.pipeline.state", callbacks=[self._pipeline_state], unit="{call}",
                                  description="Graph linking under load: overflowed (stored before linking), "
                                              "lagging (to link), linked_late, unlinked (past the lane's bound)")
        m.create_observable_gauge("interlock.graph.shared", callbacks=[self._graph_shared], unit="1",
                                  description="Shared graph (with Redis): owner (1 while this process holds the "
                                              "lease), linked, lag_seconds; parked, linked_remote, linked_local "
                                              "(Redis unreachable), link_timeouts, placed, place_timeouts, "
                                              "place_failures, send_failures")
        m.create_observable_gauge("interlock.budget.remaining", callbacks=[self._budgets], unit="1",
                                  description="Budget left per rule and scope (tokens or USD; scope_value "
                                              "'min' = the tightest recently active run/agent/key)")
        m.create_observable_counter("interlock.cascade.calls", callbacks=[self._cascade], unit="{call}",
                                    description="Fault sources (role=root) and calls downstream of one (role=tainted)")
        m.create_observable_gauge("interlock.tracer.state", callbacks=[self._tracer_state], unit="1",
                                  description="Trace exporter: buffered, queued, exported and dropped runs/spans")
        m.create_observable_gauge("interlock.rules.state", callbacks=[self._rules_state], unit="1",
                                  description="Active rules and failed reloads")
        m.create_observable_counter("interlock.store.errors", callbacks=[self._store_errors], unit="{error}",
                                    description="Guard runs the shared store (Redis) failed, by rule, kind and "
                                                "outcome (allowed | denied, per the rule's on_store_error)")
        m.create_observable_counter("interlock.metric.label.overflow", callbacks=[self._label_overflow],
                                    unit="{value}", description="Label values reported as 'other' (past "
                                                                "INTERLOCK_METRIC_LABEL_LIMIT), once per recorded call")

    # ---------------------------------------------------------------- request path

    def request_started(self) -> None:
        self.in_flight += 1

    def observe_call(self, call: Call, elapsed_s: float) -> None:
        """End of a request (hot path).  Labels known without the graph only."""
        self.in_flight -= 1
        # counted once per call, in on_recorded
        model = self.labels.value("model", call.model_requested or "unknown", count=False)
        key = (_op_name(call), call.provider, model, call.outcome or "unknown")
        self.duration.observe(key, elapsed_s)
        if call.stream and call.first_byte_at is not None:
            self.ttfc.observe(key, max(call.first_byte_at - call.started_at, 0.0))
        if call.overhead_s is not None:
            self.overhead.observe((call.provider, "true" if call.stream else "false"), call.overhead_s)

    # ---------------------------------------------------------------- pipeline worker

    def on_recorded(self, call: Call, link: Any) -> None:
        agent = self.labels.value("agent", (link.agent if link is not None else call.agent) or "unknown")
        model = self.labels.value("model", call.model_requested or "unknown")
        key = (agent, model, call.provider, call.outcome or "unknown")
        self._calls[key] = self._calls.get(key, 0) + 1
        u = call.usage
        for kind, value in (("input", u.input_tokens), ("output", u.output_tokens)):
            if value:
                self.tokens.observe((kind, call.provider, model, _op_name(call), agent), value)
        if call.cost_usd:
            ck = (agent, model)
            self._cost[ck] = self._cost.get(ck, 0.0) + call.cost_usd
        for ev in call.guard_events:
            vk = (str(ev.get("rule")), str(ev.get("kind")), str(ev.get("action")), agent)
            self._verdicts[vk] = self._verdicts.get(vk, 0) + 1

    # ---------------------------------------------------------------- scrape time

    def _observe_calls(self, _: CallbackOptions) -> Iterable[Observation]:
        names = ("agent", "gen_ai.request.model", "gen_ai.provider.name", "outcome")
        return [Observation(v, dict(zip(names, k, strict=True))) for k, v in list(self._calls.items())]

    def _observe_cost(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(v, {"agent": k[0], "gen_ai.request.model": k[1]}) for k, v in list(self._cost.items())]

    def _observe_verdicts(self, _: CallbackOptions) -> Iterable[Observation]:
        names = ("rule", "kind", "action", "agent")
        return [Observation(v, dict(zip(names, k, strict=True))) for k, v in list(self._verdicts.items())]

    def _label_overflow(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"label": k}) for k, n in list(self.labels.overflow.items())]

    def _observe_in_flight(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.in_flight)]

    def _budgets(self, _: CallbackOptions) -> Iterable[Observation]:
        rules = self.scraped.rules
        if rules is None:
            return []
        out = []
        for guard in rules.chain.guards:
            remaining = getattr(guard, "remaining", None)
            if callable(remaining):
                scope = str(getattr(guard.rule, "scope", ""))
                out += [Observation(left, {"rule": guard.name, "scope": scope, "scope_value": value, "unit": unit})
                        for value, unit, left in remaining()]
        return out

    def _cascade(self, _: CallbackOptions) -> Iterable[Observation]:
        esc = self.scraped.escalations
        if esc is None:
            return []
        return [Observation(esc.cascade.roots_total, {"role": "root"}),
                Observation(esc.cascade.tainted_total, {"role": "tainted"})]

    def _tracer_state(self, _: CallbackOptions) -> Iterable[Observation]:
        tracer = self.scraped.tracer
        if tracer is None:
            return []
        return [Observation(v, {"state": k}) for k, v in tracer.stats().items()]

    def _writer_state(self, _: CallbackOptions) -> Iterable[Observation]:
        w = self.scraped.writer
        if w is None:
            return []
        return [Observation(getattr(w, k, 0) or 0, {"state": k})
                for k in ("queue_depth", "written", "spooled", "replayed", "dropped", "sink_errors")]

    def _pipeline_depth(self, _: CallbackOptions) -> Iterable[Observation]:
        p = self.scraped.pipeline
        return [Observation(p.queue.qsize() if p is not None else 0)]

    def _pipeline_state(self, _: CallbackOptions) -> Iterable[Observation]:
        p = self.scraped.pipeline
        if p is None:
            return []
        return [Observation(p.overflowed, {"state": "overflowed"}), Observation(len(p.lagging), {"state": "lagging"}),
                Observation(p.linked_late, {"state": "linked_late"}), Observation(p.unlinked, {"state": "unlinked"})]

    def _graph_shared(self, _: CallbackOptions) -> Iterable[Observation]:
        rt = self.scraped
        out: list[Observation] = []
        owner, client, p = rt.graph_owner, rt.graph_client, rt.pipeline
        if owner is not None:
            out += [Observation(int(owner.leading), {"state": "owner"}), Observation(owner.linked, {"state": "linked"}),
                    Observation(owner.lag_s, {"state": "lag_seconds"})]
        if client is not None:
            out += [Observation(getattr(client, k), {"state": k})
                    for k in ("placed", "place_timeouts", "place_failures", "send_failures")]
        if client is not None and p is not None:
            out += [Observation(p.parked, {"state": "parked"}),
                    Observation(p.linked_remote, {"state": "linked_remote"}),
                    Observation(p.linked_local, {"state": "linked_local"}),
                    Observation(p.link_timeouts, {"state": "link_timeouts"})]
        return out

    def _rules_state(self, _: CallbackOptions) -> Iterable[Observation]:
        r = self.scraped.rules
        if r is None:
            return []
        return [Observation(len(r.rules.rules), {"state": "active"}),
                Observation(r.reload_failures, {"state": "reload_failures"}),
                Observation(len(r.errors), {"state": "errors"}),
                Observation(r.stats.errors_total, {"state": "guard_errors"})]

    def _store_errors(self, _: CallbackOptions) -> Iterable[Observation]:
        r = self.scraped.rules
        if r is None:
            return []
        names = ("rule", "kind", "outcome")
        return [Observation(n, dict(zip(names, k, strict=True))) for k, n in list(r.stats.store_errors.items())]

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()
