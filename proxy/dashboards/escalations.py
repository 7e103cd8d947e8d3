"""Escalations and cascades.

Flagged and tainted calls (`calls.flags`, `calls.tainted_by`); open escalations with their SLA
clocks, breaches and dead notifications (`escalations`); alert deliveries per route
(`alert_deliveries`); route health and escalation states from Prometheus; and the blast
radius of each root-cause call (calls whose `tainted_by` names it, their depth and tokens).
Drill escalations and deliveries (`drill`) are left out.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.dashboards.model import (
    INTERLOCK_DB,
    PROMETHEUS,
    Dashboard,
    DatasourceVariable,
    Prom,
    Row,
    Sql,
    stat,
    table,
    thresholds,
    timeseries,
    unit_override,
)
from proxy.dashboards.sql import AGENT, AGENT_VARIABLE, TOKENS, json_len, json_list, selected

SELECTION = f"$__timeFilter(c.started_at) AND {selected('agent', AGENT)}"
FLAGGED = f"{json_len('c.flags')} > 0"
TAINTED = f"{json_len('c.tainted_by')} > 0"

AT_A_GLANCE = Sql(f"""
SELECT count(*) FILTER (WHERE {FLAGGED}) AS flagged_calls,
       count(DISTINCT c.run_id) FILTER (WHERE {FLAGGED}) AS flagged_runs,
       count(*) FILTER (WHERE {TAINTED}) AS tainted_calls,
       count(*) FILTER (WHERE c.outcome = 'denied') AS denied_calls
FROM calls c WHERE {SELECTION}
""", ("flagged_calls", "flagged_runs", "tainted_calls", "denied_calls"))

FLAGS_OVER_TIME = Sql(f"""
SELECT $__timeGroupAlias(c.started_at, $__interval), f.flag AS metric, count(*) AS calls
FROM calls c CROSS JOIN LATERAL json_array_elements_text({json_list('c.flags')}) AS f(flag)
WHERE {SELECTION} GROUP BY 1, 2 ORDER BY 1
""", ("time", "metric", "calls"), format="time_series")

FLAGS_BY_AGENT = Sql(f"""
SELECT {AGENT} AS agent, f.flag, count(*) AS calls, count(DISTINCT c.run_id) AS runs, max(c.started_at) AS last_seen
FROM calls c CROSS JOIN LATERAL json_array_elements_text({json_list('c.flags')}) AS f(flag)
WHERE {SELECTION} GROUP BY 1, 2 ORDER BY calls DESC LIMIT 200
""", ("agent", "flag", "calls", "runs", "last_seen"))

FLAGGED_CALLS = Sql(f"""
SELECT c.started_at AS time, {AGENT} AS agent, c.run_id AS run, coalesce(c.model_served, c.model_requested) AS model,
       c.outcome, c.flags::text AS flags, c.tainted_by::text AS tainted_by
FROM calls c WHERE {SELECTION} AND ({FLAGGED} OR {TAINTED}) ORDER BY c.started_at DESC LIMIT 500
""", ("time", "agent", "run", "model", "outcome", "flags", "tainted_by"))


ESC_AGENT = "coalesce(e.agent, 'unknown')"
ESCALATIONS = f"NOT e.drill AND {selected('agent', ESC_AGENT)}"
IN_RANGE = f"$__timeFilter(e.created_at) AND {ESCALATIONS}"

ESC_AT_A_GLANCE = Sql(f"""
SELECT count(*) AS opened,
       count(*) FILTER (WHERE e.status = 'open') AS still_open,
       count(*) FILTER (WHERE e.status = 'acknowledged') AS acknowledged,
       count(*) FILTER (WHERE e.status = 'resolved') AS resolved,
       count(*) FILTER (WHERE e.ack_breached_at IS NOT NULL OR e.resolve_breached_at IS NOT NULL) AS breached,
       count(*) FILTER (WHERE e.notify_state = 'dead') AS dead,
       count(*) FILTER (WHERE e.hold) AS held
FROM escalations e WHERE {IN_RANGE}
""", ("opened", "still_open", "acknowledged", "resolved", "breached", "dead", "held"))

# Unfinished escalations whatever their age (an escalation opened last week and still open
# matters most).  The clock that runs: acknowledgement while open, resolution after.
DEADLINE = "CASE WHEN e.status = 'open' THEN e.ack_due_at ELSE e.resolve_due_at END"
OPEN_ESCALATIONS = Sql(f"""
SELECT e.rule, e.run_id AS run, {ESC_AGENT} AS agent, e.created_at AS opened,
       e.ack_due_at AS ack_deadline, e.resolve_due_at AS resolve_deadline,
       extract(epoch FROM ({DEADLINE}) - now()) AS time_left,
       CASE WHEN ({DEADLINE}) IS NULL THEN 'no deadline'
            WHEN ({DEADLINE}) < now() THEN 'overdue' ELSE 'on time' END AS sla,
       e.status, e.notify_state, e.hold, e.acked_by, e.reason
FROM escalations e WHERE e.status <> 'resolved' AND {ESCALATIONS}
ORDER BY ({DEADLINE}) NULLS LAST, e.created_at LIMIT 200
""", ("rule", "run", "agent", "opened", "ack_deadline", "resolve_deadline", "time_left", "sla", "status",
      "notify_state", "hold", "acked_by", "reason"))

BREACHES = Sql(f"""
SELECT time, metric, sum(n) AS breaches FROM (
  SELECT $__timeGroupAlias(e.ack_breached_at, $__interval), e.rule || ' (ack)' AS metric, count(*) AS n
  FROM escalations e WHERE $__timeFilter(e.ack_breached_at) AND {ESCALATIONS} GROUP BY 1, 2
  UNION ALL
  SELECT $__timeGroupAlias(e.resolve_breached_at, $__interval), e.rule || ' (resolve)' AS metric, count(*) AS n
  FROM escalations e WHERE $__timeFilter(e.resolve_breached_at) AND {ESCALATIONS} GROUP BY 1, 2) b
GROUP BY 1, 2 ORDER BY 1
""", ("time", "metric", "breaches"), format="time_series")

DEAD_ESCALATIONS = Sql(f"""
SELECT e.created_at AS opened, e.rule, e.run_id AS run, {ESC_AGENT} AS agent, e.status,
       string_agg(DISTINCT d.route, ', ') AS failed_routes, count(d.id) AS failed_deliveries,
       max(d.error) AS last_error, e.reason
FROM escalations e LEFT JOIN alert_deliveries d ON d.escalation_id = e.id AND d.outcome = 'failed'
WHERE {IN_RANGE} AND e.notify_state = 'dead'
GROUP BY e.id ORDER BY e.created_at DESC LIMIT 200
""", ("opened", "rule", "run", "agent", "status", "failed_routes", "failed_deliveries", "last_error", "reason"))

DELIVERIES = "$__timeFilter(d.at) AND NOT d.drill"

DELIVERIES_BY_ROUTE = Sql(f"""
SELECT d.route, d.alert_kind AS kind,
       count(*) FILTER (WHERE d.outcome = 'delivered') AS delivered,
       count(*) FILTER (WHERE d.outcome = 'failed') AS failed,
       count(*) FILTER (WHERE d.outcome = 'suppressed') AS suppressed,
       sum({json_len('d.attempts')}) AS attempts,
       max(d.at) FILTER (WHERE d.outcome = 'delivered') AS last_delivered,
       max(d.at) FILTER (WHERE d.outcome = 'failed') AS last_failure,
       (array_agg(d.error ORDER BY d.at DESC) FILTER (WHERE d.outcome = 'failed'))[1] AS last_error
FROM alert_deliveries d WHERE {DELIVERIES}
GROUP BY 1, 2 ORDER BY failed DESC, d.route, kind LIMIT 200
""", ("route", "kind", "delivered", "failed", "suppressed", "attempts", "last_delivered", "last_failure",
      "last_error"))

DELIVERIES_OVER_TIME = Sql(f"""
SELECT $__timeGroupAlias(d.at, $__interval), d.route || ' ' || d.outcome AS metric, count(*) AS deliveries
FROM alert_deliveries d WHERE {DELIVERIES} GROUP BY 1, 2 ORDER BY 1
""", ("time", "metric", "deliveries"), format="time_series")

# Every tainted call in range, attributed to each root cause its `tainted_by` names.
BLAST_RADIUS = Sql(f"""
WITH hit AS (
  SELECT t.root_id, count(*) AS tainted_calls, count(DISTINCT {AGENT}) AS agents_hit,
         string_agg(DISTINCT {AGENT}, ', ') AS agents, max(c.depth) AS max_depth,
         sum({TOKENS}) AS downstream_tokens, max(c.started_at) AS last_tainted
  FROM calls c CROSS JOIN LATERAL json_array_elements_text({json_list('c.tainted_by')}) AS t(root_id)
  WHERE {SELECTION} GROUP BY t.root_id)
SELECT r.started_at AS time, r.run_id AS run, coalesce(r.agent, 'unknown') AS root_agent, r.id AS root_call,
       (SELECT string_agg(substr(f.flag, 7), ', ') FROM json_array_elements_text({json_list('r.flags')}) AS f(flag)
        WHERE f.flag LIKE 'fault:%') AS faults,
       h.tainted_calls, h.agents_hit, h.agents, h.max_depth, h.downstream_tokens, h.last_tainted
FROM hit h JOIN calls r ON r.id = h.root_id
ORDER BY h.tainted_calls DESC, h.downstream_tokens DESC LIMIT 200
""", ("time", "run", "root_agent", "root_call", "faults", "tainted_calls", "agents_hit", "agents", "max_depth",
      "downstream_tokens", "last_tainted"))

TAINTED_OVER_TIME = Sql(f"""
SELECT $__timeGroupAlias(c.started_at, $__interval), 'depth ' || coalesce(c.depth, 0) AS metric,
       sum({TOKENS}) AS tokens
FROM calls c WHERE {SELECTION} AND {TAINTED} GROUP BY 1, 2 ORDER BY 1
""", ("time", "metric", "tokens"), format="time_series")

def _flags() -> Row:
    return Row("Flagged and tainted calls", (
        stat("Flagged and tainted calls in range", AT_A_GLANCE, width=24),
        timeseries("Flags over time", FLAGS_OVER_TIME, bars=True, stack=True),
        table("Flags by agent", FLAGS_BY_AGENT, width=12, height=8),
        table("Flagged or tainted calls", FLAGGED_CALLS),
    ))


def _escalations() -> Row:
    return Row("Escalations", (
        stat("Escalations opened in range", ESC_AT_A_GLANCE, width=24),
        table("Open escalations and SLA clocks", OPEN_ESCALATIONS, height=9,
              description="Unfinished escalations, whatever their age.  time_left counts down to the "
                          "acknowledgement deadline while open, to the resolution deadline once "
                          "acknowledged; negative = overdue.",
              overrides=(unit_override("time_left", "s"),
                         {"matcher": {"id": "byName", "options": "time_left"},
                          "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}},
                                         {"id": "thresholds", "value": {"mode": "absolute", "steps": [
                                             {"color": "red", "value": None}, {"color": "orange", "value": 0},
                                             {"color": "green", "value": 60}]}}]})),
        timeseries("SLA breaches", BREACHES, bars=True, stack=True, width=8),
        timeseries("Escalations by state (metrics)",
                   Prom("sum by (state) (interlock_escalations)", legend="{{state}}"), width=8,
                   description="Unfinished escalations held by this proxy's tracker: open, acknowledged, "
                               "breached, held."),
        table("Dead escalations (no route reached)", DEAD_ESCALATIONS, width=8, height=8),
    ))


def _routes() -> Row:
    return Row("Alert routes", (
        table("Deliveries and failures by route", DELIVERIES_BY_ROUTE, width=12, height=8),
        timeseries("Deliveries by route and outcome", DELIVERIES_OVER_TIME, bars=True, stack=True),
        timeseries("Route health: time since last delivery (metrics)",
                   Prom("max by (route) (interlock_route_last_delivery_age_seconds)", legend="{{route}}"),
                   unit="s", width=8,
                   description="-1: the route never delivered since this proxy started.",
                   overrides=({"matcher": {"id": "byType", "options": "number"},
                               "properties": [{"id": "thresholds", "value": thresholds((3600, "orange"))},
                                              {"id": "custom.thresholdsStyle", "value": {"mode": "line"}}]},)),
        timeseries("Alerts by route and outcome (metrics)",
                   Prom("sum by (route, outcome) (increase(interlock_alerts_total[$__rate_interval]))",
                        legend="{{route}} {{outcome}}"), bars=True, stack=True, width=8),
        timeseries("Dead escalations by rule (metrics)",
                   Prom("sum by (rule) (interlock_escalations_dead_total)", legend="{{rule}}"), width=8),
    ))


def _cascades() -> Row:
    return Row("Cascades", (
        table("Blast radius per root cause", BLAST_RADIUS, height=9,
              description="Root-cause calls (cascade_root, with their fault kinds) and the calls built on "
                          "their output: how many, which agents, how deep, tokens spent downstream."),
        timeseries("Tokens spent on tainted input, by depth", TAINTED_OVER_TIME, bars=True, stack=True, width=24),
    ))


EXTENSION_ROWS: tuple[Callable[[], Row], ...] = (_escalations, _routes, _cascades)


def dashboard(extra: tuple[Callable[[], Row], ...] = EXTENSION_ROWS) -> Dashboard:
    return Dashboard(
        uid="interlock-escalations",
        title="Interlock / Escalations and cascades",
        description="Open escalations with SLA clocks, breaches, dead notifications, alert routes, "
                    "flagged and tainted calls and the blast radius of faults.",
        rows=(_flags(), *(make() for make in extra)),
        variables=(DatasourceVariable(INTERLOCK_DB), DatasourceVariable(PROMETHEUS), AGENT_VARIABLE),
    )
