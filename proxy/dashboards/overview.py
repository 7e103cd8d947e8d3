"""Overview: traffic, tokens and cost by agent and model, latency, proxy overhead, errors, guards.

Prometheus only (the metrics `proxy/telemetry.py` exports), so it works on any deployment
that scrapes `/metrics`, with or without access to the database.
"""

from __future__ import annotations

from proxy.dashboards.model import (
    PROMETHEUS,
    Dashboard,
    DatasourceVariable,
    Prom,
    QueryVariable,
    Row,
    bargauge,
    stat,
    thresholds,
    timeseries,
)

CALLS = "interlock_calls_total"
TOKENS = "gen_ai_client_token_usage_sum"
COST = "interlock_cost_USD_total"
DURATION = "gen_ai_client_operation_duration_seconds_bucket"
FIRST_CHUNK = "gen_ai_client_operation_time_to_first_chunk_seconds_bucket"
OVERHEAD = "interlock_proxy_overhead_seconds_bucket"
VERDICTS = "interlock_guard_verdicts_total"

BY_AGENT = '{agent=~"$agent", gen_ai_request_model=~"$model"}'
BY_MODEL = '{gen_ai_request_model=~"$model"}'
ERRORS = '{agent=~"$agent", gen_ai_request_model=~"$model", outcome!~"ok|denied"}'
DENIED = '{agent=~"$agent", gen_ai_request_model=~"$model", outcome="denied"}'


def _rate(metric: str, sel: str = BY_AGENT) -> str:
    return f"rate({metric}{sel}[$__rate_interval])"


def _quantile(q: float, metric: str, by: str, sel: str = BY_MODEL, prefix: str = "") -> Prom:
    """The q-quantile of a histogram per `by` label; the legend reads `p95 <prefix><value>`."""
    expr = f"histogram_quantile({q}, sum by (le, {by}) ({_rate(metric, sel)}))"
    return Prom(expr, legend=f"p{round(q * 100)} {prefix}{{{{{by}}}}}")


def _traffic() -> Row:
    return Row("Traffic", (
        stat("Calls / s", Prom(f"sum({_rate(CALLS)})"), unit="reqps"),
        stat("Tokens in range", Prom(f"sum(increase({TOKENS}{BY_AGENT}[$__range]))", instant=True)),
        stat("Cost in range", Prom(f"sum(increase({COST}{BY_AGENT}[$__range]))", instant=True), unit="currencyUSD"),
        stat("Error ratio", Prom(f"(sum({_rate(CALLS, ERRORS)}) or vector(0)) / sum({_rate(CALLS)})"),
             unit="percentunit",
             steps=thresholds((0.01, "orange"), (0.05, "red")),
             description="Calls that failed upstream or in transit (timeouts, cuts, 5xx), denials excluded."),
        stat("Denied / s", Prom(f"sum({_rate(CALLS, DENIED)}) or vector(0)"), unit="reqps",
             steps=thresholds((0.001, "orange"))),
        stat("In flight", Prom("sum(interlock_requests_in_flight)")),
        timeseries("Calls by agent", Prom(f"sum by (agent) ({_rate(CALLS)})", legend="{{agent}}"),
                   unit="reqps", stack=True),
        timeseries("Calls by model", Prom(f"sum by (gen_ai_request_model) ({_rate(CALLS)})",
                                          legend="{{gen_ai_request_model}}"), unit="reqps", stack=True),
    ))


def _tokens_and_cost() -> Row:
    return Row("Tokens and cost", (
        timeseries("Tokens / s by agent and type",
                   Prom(f"sum by (agent, gen_ai_token_type) ({_rate(TOKENS)})",
                        legend="{{agent}} {{gen_ai_token_type}}"), stack=True),
        timeseries("Tokens / s by model",
                   Prom(f"sum by (gen_ai_request_model) ({_rate(TOKENS)})", legend="{{gen_ai_request_model}}"),
                   stack=True),
        timeseries("Spend by agent (USD / hour)",
                   Prom(f"sum by (agent) ({_rate(COST)}) * 3600", legend="{{agent}}"), unit="currencyUSD",
                   stack=True),
        bargauge("Cost in range by agent and model",
                 Prom(f"sum by (agent, gen_ai_request_model) (increase({COST}{BY_AGENT}[$__range]))",
                      legend="{{agent}} · {{gen_ai_request_model}}", instant=True), unit="currencyUSD"),
    ))


def _latency() -> Row:
    return Row("Latency and proxy overhead", (
        timeseries("Call duration by model (p50 / p95)",
                   _quantile(0.5, DURATION, "gen_ai_request_model"),
                   _quantile(0.95, DURATION, "gen_ai_request_model"), unit="s", width=8,
                   description="As the agent sees it, request arrival to the last byte."),
        timeseries("Time to first chunk by model (p50 / p95)",
                   _quantile(0.5, FIRST_CHUNK, "gen_ai_request_model"),
                   _quantile(0.95, FIRST_CHUNK, "gen_ai_request_model"), unit="s", width=8,
                   description="Streamed calls only."),
        timeseries("Proxy overhead (p50 / p99)",
                   _quantile(0.5, OVERHEAD, "stream", sel="", prefix="stream="),
                   _quantile(0.99, OVERHEAD, "stream", sel="", prefix="stream="),
                   unit="s", width=8,
                   description="Time Interlock adds: arrival to upstream send plus upstream end to response end."),
    ))


def _errors_and_guards() -> Row:
    return Row("Errors and guard actions", (
        timeseries("Calls by outcome", Prom(f"sum by (outcome) ({_rate(CALLS)})", legend="{{outcome}}"),
                   unit="reqps", stack=True),
        timeseries("Guard verdicts by rule and action",
                   Prom(f'sum by (rule, action) (increase({VERDICTS}{{agent=~"$agent"}}[$__rate_interval]))',
                        legend="{{rule}} {{action}}"), bars=True, stack=True),
    ))


def _health() -> Row:
    return Row("Interlock health", (
        timeseries("Writer", Prom("sum by (state) (interlock_writer_state)", legend="{{state}}"), width=8,
                   description="Queue depth and totals written, spooled to disk, replayed and dropped."),
        timeseries("Pipeline queue depth", Prom("sum(interlock_pipeline_queue_depth)", legend="queued calls"),
                   width=8),
        timeseries("Rules", Prom("sum by (state) (interlock_rules_state)", legend="{{state}}"), width=8,
                   description="Active rules, failed reloads, load errors and guard errors."),
    ))


def dashboard() -> Dashboard:
    return Dashboard(
        uid="interlock-overview",
        title="Interlock / Overview",
        description="Traffic, tokens and cost by agent and model, latency, proxy overhead, errors, guards.",
        rows=(_traffic(), _tokens_and_cost(), _latency(), _errors_and_guards(), _health()),
        variables=(
            DatasourceVariable(PROMETHEUS),
            QueryVariable("agent", "Agent", f"label_values({CALLS}, agent)", PROMETHEUS, ".*", multi=True, sort=1),
            QueryVariable("model", "Model", f"label_values({CALLS}, gen_ai_request_model)", PROMETHEUS, ".*",
                          multi=True, sort=1),
        ),
    )
