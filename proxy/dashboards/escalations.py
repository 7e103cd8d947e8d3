"""Escalations and cascades.

Today it shows what the store already records: calls flagged by guards or by the graph
linker (`calls.flags`) and calls carrying tainted input (`calls.tainted_by`).  Open
escalations with SLA clocks, breaches, dead routes and the blast radius of faults come with
the escalation work: add their rows to `EXTENSION_ROWS` (a tuple of functions returning a
`Row`), rebuild with `interlock dashboards build`, and give every new SQL target its
`columns` so the dashboard tests execute it against a seeded database.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.dashboards.model import (
    INTERLOCK_DB,
    Dashboard,
    DatasourceVariable,
    Row,
    Sql,
    stat,
    table,
    text,
    timeseries,
)
from proxy.dashboards.sql import AGENT, AGENT_VARIABLE, json_len, json_list, selected

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

PENDING = """\
**Escalations and cascades.** Open escalations with their SLA clocks, breaches, dead alert routes
and the blast radius of faults appear here once Interlock records escalations (rules of
`kind: escalation` and `kind: cascade`). Until then this dashboard shows flagged and tainted calls."""


def _flags() -> Row:
    return Row("Flagged and tainted calls", (
        stat("Flagged and tainted calls in range", AT_A_GLANCE, width=24),
        timeseries("Flags over time", FLAGS_OVER_TIME, bars=True, stack=True),
        table("Flags by agent", FLAGS_BY_AGENT, width=12, height=8),
        table("Flagged or tainted calls", FLAGGED_CALLS),
    ))


def _pending() -> Row:
    return Row("Escalations and cascades", (text("What comes here", PENDING, height=4),))


# Rows contributed by the escalation work; each function builds one Row.  Empty today.
EXTENSION_ROWS: tuple[Callable[[], Row], ...] = ()


def dashboard(extra: tuple[Callable[[], Row], ...] = EXTENSION_ROWS) -> Dashboard:
    rows = (_flags(), *(make() for make in extra)) if extra else (_flags(), _pending())
    return Dashboard(
        uid="interlock-escalations",
        title="Interlock / Escalations and cascades",
        description="Flagged and tainted calls now; open escalations, SLA clocks, breaches and blast radius next.",
        rows=rows,
        variables=(DatasourceVariable(INTERLOCK_DB), AGENT_VARIABLE),
    )
