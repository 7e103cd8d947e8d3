"""Metrics through the OpenTelemetry SDK, rendered as Prometheus text on /metrics.

GenAI semantic-convention instruments where they exist (`gen_ai.client.token.usage`,
`gen_ai.client.operation.duration`, `gen_ai.client.operation.time_to_first_chunk`), plus
Interlock's own (`interlock.*`).  Labels are bounded: agent, model, provider, operation,
outcome, rule, action — never call ids or raw keys.

Two moments feed it:
- `observe_call` on the request path, at the end of each request (a few µs: histograms);
- `on_recorded` in the pipeline worker, after the graph resolved the agent (counters).
Writer, pipeline and rules state are read by observable gauges at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from prometheus_client import CollectorRegistry, generate_latest

from proxy.call import Call

if TYPE_CHECKING:
    from proxy.runtime import Runtime

_SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
_TOKENS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304]


def _op_name(call: Call) -> str:
    return {"chat": "chat", "messages": "chat", "responses": "chat", "embeddings": "embeddings"}.get(
        call.operation, call.operation)


class Metrics:
    """One MeterProvider per runtime, with its own Prometheus registry (no global state)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry(auto_describe=True)
        self.reader = PrometheusMetricReader(registry=self.registry)
        views = [
            View(instrument_name="gen_ai.client.token.usage", aggregation=ExplicitBucketHistogramAggregation(_TOKENS)),
            View(instrument_name="*duration*", aggregation=ExplicitBucketHistogramAggregation(_SECONDS)),
            View(instrument_name="*first_chunk*", aggregation=ExplicitBucketHistogramAggregation(_SECONDS)),
            View(instrument_name="interlock.proxy.overhead", aggregation=ExplicitBucketHistogramAggregation(_SECONDS)),
        ]
        self.provider = MeterProvider(metric_readers=[self.reader], views=views)
        m = self.provider.get_meter("interlock")
        self.tokens = m.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                         description="Tokens per call by type (input/output)")
        self.duration = m.create_histogram("gen_ai.client.operation.duration", unit="s",
                                           description="Call duration as the agent sees it")
        self.ttfc = m.create_histogram("gen_ai.client.operation.time_to_first_chunk", unit="s",
                                       description="Time to the first response byte")
        self.overhead = m.create_histogram("interlock.proxy.overhead", unit="s",
                                           description="Time the proxy adds: request arrival to upstream send, "
                                                       "plus upstream end to response end")
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
        m.create_observable_gauge("interlock.budget.remaining", callbacks=[self._budgets], unit="1",
                                  description="Budget left per rule and scope (tokens or USD; scope_value "
                                              "'min' = the tightest recently active run/agent/key)")
        m.create_observable_counter("interlock.cascade.calls", callbacks=[self._cascade], unit="{call}",
                                    description="Fault sources (role=root) and calls downstream of one (role=tainted)")
        m.create_observable_gauge("interlock.tracer.state", callbacks=[self._tracer_state], unit="1",
                                  description="Trace exporter: buffered, queued, exported and dropped runs/spans")
        m.create_observable_gauge("interlock.rules.state", callbacks=[self._rules_state], unit="1",
                                  description="Active rules and failed reloads")

    # ---------------------------------------------------------------- request path

    def request_started(self) -> None:
        self.in_flight += 1

    def observe_call(self, call: Call, elapsed_s: float) -> None:
        """End of a request (hot path).  Labels known without the graph only."""
        self.in_flight -= 1
        attrs = {"gen_ai.operation.name": _op_name(call), "gen_ai.provider.name": call.provider,
                 "gen_ai.request.model": call.model_requested or "unknown", "outcome": call.outcome or "unknown"}
        self.duration.record(elapsed_s, attrs)
        if call.stream and call.first_byte_at is not None:
            self.ttfc.record(max(call.first_byte_at - call.started_at, 0.0), attrs)
        if call.overhead_s is not None:
            self.overhead.record(call.overhead_s, {"gen_ai.provider.name": call.provider, "stream": str(call.stream).lower()})

    # ---------------------------------------------------------------- pipeline worker

    def on_recorded(self, call: Call, link: Any) -> None:
        agent = (link.agent if link is not None else call.agent) or "unknown"
        model = call.model_requested or "unknown"
        key = (agent, model, call.provider, call.outcome or "unknown")
        self._calls[key] = self._calls.get(key, 0) + 1
        u = call.usage
        for kind, value in (("input", u.input_tokens), ("output", u.output_tokens)):
            if value:
                self.tokens.record(value, {"gen_ai.token.type": kind, "gen_ai.provider.name": call.provider,
                                           "gen_ai.request.model": model, "gen_ai.operation.name": _op_name(call),
                                           "agent": agent})
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

    def _observe_in_flight(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.in_flight)]

    def _budgets(self, _: CallbackOptions) -> Iterable[Observation]:
        rules = self.runtime.rules
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
        esc = self.runtime.escalations
        if esc is None:
            return []
        return [Observation(esc.cascade.roots_total, {"role": "root"}),
                Observation(esc.cascade.tainted_total, {"role": "tainted"})]

    def _tracer_state(self, _: CallbackOptions) -> Iterable[Observation]:
        tracer = self.runtime.tracer
        if tracer is None:
            return []
        return [Observation(v, {"state": k}) for k, v in tracer.stats().items()]

    def _writer_state(self, _: CallbackOptions) -> Iterable[Observation]:
        w = self.runtime.writer
        if w is None:
            return []
        return [Observation(getattr(w, k, 0) or 0, {"state": k})
                for k in ("queue_depth", "written", "spooled", "replayed", "dropped", "sink_errors")]

    def _pipeline_depth(self, _: CallbackOptions) -> Iterable[Observation]:
        p = self.runtime.pipeline
        return [Observation(p.queue.qsize() if p is not None else 0)]

    def _rules_state(self, _: CallbackOptions) -> Iterable[Observation]:
        r = self.runtime.rules
        if r is None:
            return []
        return [Observation(len(r.rules.rules), {"state": "active"}),
                Observation(r.reload_failures, {"state": "reload_failures"}),
                Observation(len(r.errors), {"state": "errors"}),
                Observation(r.stats.errors_total, {"state": "guard_errors"})]

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()
