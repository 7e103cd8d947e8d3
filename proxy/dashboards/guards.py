"""Guards: budget burn per scope against limits, loops caught, context overflows and
truncations, denials over time.

Guard events (`guard_events`, one row per non-allow verdict, its numbers in `data`) give the
rule, the scope and the limit; calls give the burn between verdicts; the verdict counters in
Prometheus give the live rates.
"""

from __future__ import annotations

from proxy.dashboards.model import (
    INTERLOCK_DB,
    PROMETHEUS,
    Dashboard,
    DatasourceVariable,
    Prom,
    Row,
    Sql,
    gauge_cell,
    stat,
    table,
    thresholds,
    timeseries,
)
from proxy.dashboards.sql import RULE_VARIABLE, TOKENS, selected

EVENTS = f"$__timeFilter(g.at) AND {selected('rule', 'g.rule')}"
USED_PCT = "100 * (g.data->>'spent')::float / nullif((g.data->>'limit')::float, 0)"
SCOPE = "(g.data->>'scope') || '=' || coalesce(g.data->>'scope_value', '')"
VERDICTS = "interlock_guard_verdicts_total"

AT_A_GLANCE = Sql(f"""
SELECT count(*) FILTER (WHERE g.action = 'deny') AS denials,
       count(*) FILTER (WHERE g.action <> 'deny') AS flags,
       count(*) FILTER (WHERE g.kind = 'budget' AND g.action = 'deny') AS budget_denials,
       count(*) FILTER (WHERE g.kind = 'loop') AS loops_caught,
       count(*) FILTER (WHERE g.kind = 'context' AND g.data->>'check' = 'fit') AS context_overflows,
       count(*) FILTER (WHERE g.kind = 'context' AND g.data->>'check' <> 'fit') AS truncations
FROM guard_events g WHERE {EVENTS}
""", ("denials", "flags", "budget_denials", "loops_caught", "context_overflows", "truncations"))

DENIALS = Sql(f"""
SELECT $__timeGroupAlias(g.at, $__interval), g.rule AS metric, count(*) AS denials
FROM guard_events g WHERE {EVENTS} AND g.action = 'deny' GROUP BY 1, 2 ORDER BY 1
""", ("time", "metric", "denials"), format="time_series")

BUDGET_BURN = Sql(f"""
SELECT DISTINCT ON (g.rule, g.data->>'scope', g.data->>'scope_value')
       g.rule, g.data->>'scope' AS scope, g.data->>'scope_value' AS scope_value, g.data->>'window' AS budget_window,
       g.data->>'unit' AS unit, (g.data->>'spent')::float AS spent, (g.data->>'requested')::float AS requested,
       (g.data->>'limit')::float AS budget_limit, {USED_PCT} AS used_pct, g.action AS last_action, g.at AS last_at
FROM guard_events g WHERE {EVENTS} AND g.kind = 'budget'
ORDER BY g.rule, g.data->>'scope', g.data->>'scope_value', g.at DESC
""", ("rule", "scope", "scope_value", "budget_window", "unit", "spent", "requested", "budget_limit", "used_pct",
      "last_action", "last_at"))

BUDGET_USE = Sql(f"""
SELECT $__timeGroupAlias(g.at, $__interval), g.rule || ' ' || {SCOPE} AS metric, max({USED_PCT}) AS used_pct
FROM guard_events g WHERE {EVENTS} AND g.kind = 'budget' GROUP BY 1, 2 ORDER BY 1
""", ("time", "metric", "used_pct"), format="time_series")

RUN_BURN = Sql(f"""
SELECT time, metric, sum(tokens) OVER (PARTITION BY metric ORDER BY time) AS tokens FROM (
  SELECT $__timeGroupAlias(c.started_at, $__interval), c.run_id AS metric, sum({TOKENS}) AS tokens
  FROM calls c
  WHERE $__timeFilter(c.started_at) AND c.run_id IN (
    SELECT c.run_id FROM calls c WHERE $__timeFilter(c.started_at) AND c.run_id IS NOT NULL
    GROUP BY c.run_id ORDER BY sum({TOKENS}) DESC LIMIT 10)
  GROUP BY 1, 2) burn
ORDER BY 1
""", ("time", "metric", "tokens"), format="time_series")

LOOPS = Sql(f"""
SELECT $__timeGroupAlias(g.at, $__interval), coalesce(g.data->>'detect', g.rule) AS metric, count(*) AS loops
FROM guard_events g WHERE {EVENTS} AND g.kind = 'loop' GROUP BY 1, 2 ORDER BY 1
""", ("time", "metric", "loops"), format="time_series")

CONTEXT = Sql(f"""
SELECT time, metric, sum(n) AS events FROM (
  SELECT $__timeGroupAlias(g.at, $__interval), coalesce(g.data->>'check', 'context') AS metric, count(*) AS n
  FROM guard_events g WHERE {EVENTS} AND g.kind = 'context' GROUP BY 1, 2
  UNION ALL
  SELECT $__timeGroupAlias(c.started_at, $__interval), 'output cut at max_tokens' AS metric, count(*) AS n
  FROM calls c WHERE $__timeFilter(c.started_at) AND c.finish_reason IN ('length', 'max_tokens', 'max_output_tokens')
  GROUP BY 1, 2) ev
GROUP BY 1, 2 ORDER BY 1
""", ("time", "metric", "events"), format="time_series")


def _recent(kind: str | None, *extra: tuple[str, str]) -> Sql:
    """The latest guard events (of one kind), with extra (expression, alias) columns."""
    where = f" AND g.kind = '{kind}'" if kind else ""
    cols = "".join(f"{expr} AS {alias}, " for expr, alias in extra)
    return Sql(f"""
SELECT g.at AS time, g.rule, g.kind, g.action, g.agent, g.run_id AS run, {cols}g.reason
FROM guard_events g WHERE {EVENTS}{where} ORDER BY g.at DESC LIMIT 200
""", ("time", "rule", "kind", "action", "agent", "run", *(alias for _, alias in extra), "reason"))


def _verdicts_prom(action: str) -> Prom:
    return Prom(f'sum by (kind, rule) (increase({VERDICTS}{{action="{action}"}}[$__rate_interval]))',
                legend="{{kind}} {{rule}}")


def dashboard() -> Dashboard:
    return Dashboard(
        uid="interlock-guards",
        title="Interlock / Guards",
        description="Budget burn against limits, loops caught, context overflows and truncations, denials.",
        rows=(
            Row("At a glance", (stat("Guard verdicts in range", AT_A_GLANCE, width=24),)),
            Row("Denials", (
                timeseries("Denials by rule", DENIALS, bars=True, stack=True, width=8),
                timeseries("Denials by kind and rule (metrics)", _verdicts_prom("deny"), bars=True, stack=True, width=8),
                timeseries("Flags by kind and rule (metrics)", _verdicts_prom("flag"), bars=True, stack=True, width=8),
            )),
            Row("Budgets", (
                table("Budget burn per scope (at the last verdict)", BUDGET_BURN,
                      overrides=(gauge_cell("used_pct", thresholds((80, "orange"), (100, "red"))),)),
                timeseries("Budget used at each verdict", BUDGET_USE, unit="percent", width=8,
                           overrides=({"matcher": {"id": "byType", "options": "number"},
                                       "properties": [{"id": "custom.thresholdsStyle", "value": {"mode": "line"}},
                                                      {"id": "thresholds",
                                                       "value": thresholds((100, "red"))}]},)),
                timeseries("Tokens per run, cumulative (10 largest)", RUN_BURN, width=8),
                timeseries("Budget remaining by rule and scope (live)",
                           Prom("min by (rule, scope, scope_value, unit) (interlock_budget_remaining)",
                                legend="{{rule}} {{scope}}={{scope_value}} ({{unit}})", datasource=PROMETHEUS),
                           width=8),
                timeseries("Spend by agent (USD / hour)",
                           Prom("sum by (agent) (rate(interlock_cost_USD_total[$__rate_interval])) * 3600",
                                legend="{{agent}}", datasource=PROMETHEUS), unit="currencyUSD", stack=True, width=8),
            )),
            Row("Loops", (
                timeseries("Loops caught by detector", LOOPS, bars=True, stack=True, width=8),
                table("Recent loop verdicts", _recent("loop", ("g.data->>'detect'", "detect")), width=16),
            )),
            Row("Context", (
                timeseries("Context overflows and truncations", CONTEXT, bars=True, stack=True, width=8,
                           description="fit = refused or flagged before sending; output_truncated, "
                                       "truncated_handoff, dropped_history = flagged after the fact."),
                table("Recent context verdicts",
                      _recent("context", ("g.data->>'check'", "context_check"), ("g.data->>'over_by'", "over_by")),
                      width=16),
            )),
            Row("All guard events", (table("Recent guard events", _recent(None)),)),
        ),
        variables=(DatasourceVariable(INTERLOCK_DB), DatasourceVariable(PROMETHEUS), RULE_VARIABLE),
    )
