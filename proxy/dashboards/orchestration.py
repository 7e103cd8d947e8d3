"""Orchestration: the agent graph of a run (or of everything in the time range) and the runs.

Nodes are agents (sized by tokens, ringed by the share of failed calls), edges are the
handoffs, returns and human inputs the graph linker recorded in `edges`, counted per agent
pair and kind.  Continuation and tool edges stay inside one agent and are left out.
"""

from __future__ import annotations

from proxy.dashboards.model import (
    INTERLOCK_DB,
    Dashboard,
    DatasourceVariable,
    Row,
    Sql,
    link_override,
    node_graph,
    stat,
    table,
    timeseries,
    unit_override,
)
from proxy.dashboards.sql import AGENT, RUN_VARIABLE, TOKENS, json_list, selected

SELECTION = f"$__timeFilter(c.started_at) AND {selected('run', 'c.run_id')}"
RUN_LINK = "/d/interlock-orchestration/interlock-orchestration?var-run=${__value.raw}&${__url_time_range}"

AT_A_GLANCE = Sql(f"""
SELECT count(DISTINCT c.run_id) AS runs, count(DISTINCT {AGENT}) AS agents, count(*) AS calls,
       coalesce(sum({TOKENS}), 0) AS tokens, coalesce(sum(c.cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE c.outcome = 'denied') AS denied
FROM calls c WHERE {SELECTION}
""", ("runs", "agents", "calls", "tokens", "cost_usd", "denied"))

NODES = Sql(f"""
WITH sel AS (SELECT c.* FROM calls c WHERE {SELECTION}),
a AS (
  SELECT {AGENT} AS agent, count(*) AS calls, sum({TOKENS}) AS tokens, sum(coalesce(c.cost_usd, 0)) AS cost,
         count(*) FILTER (WHERE c.outcome <> 'ok') AS failed
  FROM sel c GROUP BY 1
  UNION ALL
  SELECT 'human', count(*), 0, 0, 0 FROM edges e JOIN sel t ON t.id = e.target_call_id
  WHERE e.source_call_id LIKE 'human:%' HAVING count(*) > 0)
SELECT agent AS id, agent AS title, calls || CASE WHEN agent = 'human' THEN ' inputs' ELSE ' calls' END AS subtitle, tokens AS mainstat, cost AS secondarystat,
       round(16 + 24.0 * tokens / greatest(max(tokens) OVER (), 1)) AS noderadius,
       failed::float / greatest(calls, 1) AS arc__failed, 1 - failed::float / greatest(calls, 1) AS arc__ok,
       calls AS detail__calls, failed AS detail__failed
FROM a ORDER BY tokens DESC
""", ("id", "title", "subtitle", "mainstat", "secondarystat", "noderadius", "arc__failed", "arc__ok",
      "detail__calls", "detail__failed"), ref_id="nodes")

EDGES = Sql(f"""
WITH sel AS (SELECT c.id, {AGENT} AS agent FROM calls c WHERE {SELECTION}),
pairs AS (
  SELECT CASE WHEN e.source_call_id LIKE 'human:%' THEN 'human' ELSE s.agent END AS source,
         t.agent AS target, e.kind
  FROM edges e JOIN sel t ON t.id = e.target_call_id LEFT JOIN sel s ON s.id = e.source_call_id
  WHERE e.kind IN ('handoff', 'return', 'human') AND (s.id IS NOT NULL OR e.source_call_id LIKE 'human:%'))
SELECT source || ' > ' || target || ' (' || kind || ')' AS id, source, target, count(*) AS mainstat,
       kind AS secondarystat, least(1 + count(*), 8) AS thickness, kind AS detail__kind
FROM pairs GROUP BY source, target, kind ORDER BY mainstat DESC
""", ("id", "source", "target", "mainstat", "secondarystat", "thickness", "detail__kind"), ref_id="edges")

RUNS = Sql(f"""
WITH sel AS (SELECT c.* FROM calls c WHERE {SELECTION} AND c.run_id IS NOT NULL),
fl AS (SELECT s.run_id, string_agg(DISTINCT f.flag, ', ') AS flags
       FROM sel s CROSS JOIN LATERAL json_array_elements_text({json_list('s.flags')}) AS f(flag) GROUP BY s.run_id)
SELECT c.run_id AS run,
       coalesce(r.status, CASE WHEN max(coalesce(c.ended_at, c.started_at)) < now() - interval '5 minutes'
                               THEN 'idle' ELSE 'active' END) AS status,
       min(c.started_at) AS started,
       extract(epoch FROM max(coalesce(c.ended_at, c.started_at)) - min(c.started_at)) AS duration_s,
       count(*) AS calls, count(DISTINCT c.agent) AS agents, sum({TOKENS}) AS tokens,
       sum(coalesce(c.cost_usd, 0)) AS cost_usd, count(*) FILTER (WHERE c.outcome = 'denied') AS denied,
       coalesce(fl.flags, '') AS flags
FROM sel c LEFT JOIN runs r ON r.id = c.run_id LEFT JOIN fl ON fl.run_id = c.run_id
GROUP BY c.run_id, r.status, fl.flags ORDER BY started DESC LIMIT 500
""", ("run", "status", "started", "duration_s", "calls", "agents", "tokens", "cost_usd", "denied", "flags"))

CALLS = Sql(f"""
SELECT c.started_at AS time, c.run_id AS run, {AGENT} AS agent,
       coalesce(c.model_served, c.model_requested) AS model, c.operation, c.outcome, c.status,
       c.input_tokens, c.output_tokens, c.latency_ms, c.cost_usd, c.flags::text AS flags
FROM calls c WHERE {SELECTION} ORDER BY c.started_at DESC LIMIT 500
""", ("time", "run", "agent", "model", "operation", "outcome", "status", "input_tokens", "output_tokens",
      "latency_ms", "cost_usd", "flags"))


def _per_agent(value: str, alias: str) -> Sql:
    return Sql(f"""
SELECT $__timeGroupAlias(c.started_at, $__interval), {AGENT} AS metric, {value} AS {alias}
FROM calls c WHERE {SELECTION} GROUP BY 1, 2 ORDER BY 1
""", ("time", "metric", alias), format="time_series")


def dashboard() -> Dashboard:
    return Dashboard(
        uid="interlock-orchestration",
        title="Interlock / Orchestration",
        description="The agent graph of a run or time range, and the runs with status, duration, cost, flags.",
        rows=(
            Row("Selection", (
                stat("Runs, agents, calls, tokens, cost, denials", AT_A_GLANCE, width=24,
                     overrides=(unit_override("cost_usd", "currencyUSD"),)),
            )),
            Row("Agent graph", (
                node_graph("Agents and handoffs", NODES, EDGES, arcs=(("arc__failed", "red"), ("arc__ok", "green")),
                           units=("short", "currencyUSD"),
                           description="Nodes: agents sized by tokens (main stat; second: cost in USD), ring = "
                                       "share of calls not ok. Edges: handoffs, returns and human input, counted."),
            )),
            Row("Runs", (
                table("Runs", RUNS, overrides=(unit_override("duration_s", "s"),
                                               unit_override("cost_usd", "currencyUSD"),
                                               link_override("run", "Show this run", RUN_LINK))),
                timeseries("Calls per agent", _per_agent("count(*)", "calls"), bars=True, stack=True),
                timeseries("Tokens per agent", _per_agent(f"sum({TOKENS})", "tokens"), bars=True, stack=True),
                table("Calls", CALLS, overrides=(unit_override("latency_ms", "ms"),
                                                 unit_override("cost_usd", "currencyUSD"))),
            )),
        ),
        variables=(DatasourceVariable(INTERLOCK_DB), RUN_VARIABLE),
    )
