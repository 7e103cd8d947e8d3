"""Metrics as Prometheus scrapes them: histogram names, labels, buckets and sums."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from proxy.call import Call
from proxy.labelcap import LabelCap
from proxy.telemetry import Metrics


def make_metrics(label_limit: int = 500) -> Metrics:
    runtime: Any = SimpleNamespace(rules=None, escalations=None, tracer=None, writer=None, pipeline=None)
    return Metrics(runtime, LabelCap(label_limit))


def make_call(*, stream: bool = False, model: str = "gpt-4o", outcome: str = "ok", **kw: Any) -> Call:
    call = Call("c1", 1000.0, "openai", "chat", "openai", "POST", "/v1/chat/completions",
                model_requested=model, stream=stream, **kw)
    call.outcome = outcome
    return call


def samples(metrics: Metrics, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for s in fam.samples:
            if s.name.startswith(name):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_duration_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    metrics = make_metrics()
    for elapsed in (0.0004, 0.003, 0.003, 7.0):
        metrics.request_started()
        metrics.observe_call(make_call(), elapsed)
    got = samples(metrics, "gen_ai_client_operation_duration_seconds")
    labels = (("gen_ai_operation_name", "chat"), ("gen_ai_provider_name", "openai"),
              ("gen_ai_request_model", "gpt-4o"), ("outcome", "ok"))

    def bucket(le: str) -> float:
        return got[("gen_ai_client_operation_duration_seconds_bucket", tuple(sorted((*labels, ("le", le)))))]

    assert bucket("0.00025") == 0
    assert bucket("0.0005") == 1
    assert bucket("0.0025") == 1
    assert bucket("0.005") == 3
    assert bucket("5") == 3
    assert bucket("10") == 4
    assert bucket("+Inf") == 4
    assert got[("gen_ai_client_operation_duration_seconds_count", labels)] == 4
    assert abs(got[("gen_ai_client_operation_duration_seconds_sum", labels)] - 7.0064) < 1e-9
    assert metrics.in_flight == 0


def test_value_on_a_bucket_bound_counts_in_that_bucket() -> None:
    metrics = make_metrics()
    metrics.observe_call(make_call(), 0.001)
    got = samples(metrics, "gen_ai_client_operation_duration_seconds_bucket")
    by_le = {dict(k[1])["le"]: v for k, v in got.items()}
    assert by_le["0.0005"] == 0 and by_le["0.001"] == 1


def test_first_chunk_time_only_for_streams_and_overhead_by_stream_flag() -> None:
    metrics = make_metrics()
    metrics.observe_call(make_call(stream=False, overhead_s=0.0002), 0.01)
    streamed = make_call(stream=True, overhead_s=0.0003)
    streamed.first_byte_at = streamed.started_at + 0.02
    metrics.observe_call(streamed, 0.5)
    ttfc = samples(metrics, "gen_ai_client_operation_time_to_first_chunk_seconds_count")
    assert list(ttfc.values()) == [1]
    overhead = samples(metrics, "interlock_proxy_overhead_seconds_count")
    assert {dict(k[1])["stream"]: v for k, v in overhead.items()} == {"false": 1, "true": 1}


def test_token_usage_by_type_agent_and_model_after_recording() -> None:
    metrics = make_metrics()
    call = make_call(model="claude-sonnet-4-5")
    call.usage.input_tokens, call.usage.output_tokens = 1200, 30
    metrics.on_recorded(call, SimpleNamespace(agent="planner"))
    metrics.on_recorded(call, SimpleNamespace(agent="planner"))
    sums = samples(metrics, "gen_ai_client_token_usage_sum")
    by_type = {dict(k[1])["gen_ai_token_type"]: (dict(k[1])["agent"], v) for k, v in sums.items()}
    assert by_type == {"input": ("planner", 2400), "output": ("planner", 60)}
    calls = samples(metrics, "interlock_calls")
    assert sum(v for (name, _), v in calls.items() if name.endswith("_total")) == 2


def label_values(metrics: Metrics, label: str) -> set[str]:
    """Every value `label` takes anywhere in the /metrics text."""
    return {s.labels[label] for fam in text_string_to_metric_families(metrics.render().decode())
            for s in fam.samples if label in s.labels}


def overflow(metrics: Metrics) -> dict[str, float]:
    return {dict(labels)["label"]: v for (name, labels), v in samples(metrics, "interlock_metric_label_overflow").items()
            if name.endswith("_total")}


def test_agents_past_the_label_limit_are_exported_as_other_and_counted() -> None:
    metrics = make_metrics(label_limit=100)
    for i in range(2000):
        call = make_call(cost_usd=0.01, guard_events=[{"rule": "r", "kind": "loop", "action": "flag"}])
        call.usage.input_tokens = 10
        metrics.on_recorded(call, SimpleNamespace(agent=f"agent-{i}"))
    agents = label_values(metrics, "agent")
    assert len(agents) == 101 and "other" in agents
    assert overflow(metrics) == {"agent": 1900}


def test_a_model_past_the_label_limit_is_other_on_both_paths_and_counted_once_per_call() -> None:
    metrics = make_metrics(label_limit=1)
    for model in ("gpt-4o", "o3", "o4-mini"):
        call = make_call(model=model)
        metrics.observe_call(call, 0.01)
        metrics.on_recorded(call, SimpleNamespace(agent="planner"))
    assert label_values(metrics, "gen_ai_request_model") == {"gpt-4o", "other"}
    assert overflow(metrics) == {"model": 2}
