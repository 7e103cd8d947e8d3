"""SQL fragments shared by the database-backed dashboards (PostgreSQL dialect).

Grafana expands `$__timeFilter(col)`, `$__timeGroupAlias(col, $__interval)` and template
variables before the query reaches PostgreSQL.  A variable with "All" selected inserts its
custom all value `'__all'` verbatim; a chosen value arrives quoted (`'r1'`, or `'a','b'` for
several), so `selected("run", "c.run_id")` reads the same either way.

JSON columns (`calls.flags`, `calls.tainted_by`) are `json`, not `jsonb`; a JSON `null`
where a list is expected counts as empty.
"""

from __future__ import annotations

from proxy.dashboards.model import INTERLOCK_DB, QueryVariable

ALL = "'__all'"
AGENT = "coalesce(c.agent, 'unknown')"
TOKENS = "coalesce(c.input_tokens, 0) + coalesce(c.output_tokens, 0)"


def selected(variable: str, column: str) -> str:
    """True when `column` is among the variable's chosen values, or "All" is chosen."""
    return f"({ALL} IN (${variable}) OR {column} IN (${variable}))"


def json_list(column: str) -> str:
    """`column` as a JSON array (a JSON null or scalar becomes [])."""
    return f"(CASE WHEN json_typeof({column}) = 'array' THEN {column} ELSE '[]'::json END)"


def json_len(column: str) -> str:
    return f"json_array_length({json_list(column)})"


def variable(name: str, label: str, query: str, *, multi: bool = False) -> QueryVariable:
    """A database-backed variable with "All" (inserted as `'__all'`)."""
    return QueryVariable(name, label, " ".join(query.split()), INTERLOCK_DB, ALL, multi=multi)


RUN_VARIABLE = variable(
    "run", "Run",
    "SELECT run_id FROM calls WHERE $__timeFilter(started_at) AND run_id IS NOT NULL "
    "GROUP BY run_id ORDER BY max(started_at) DESC LIMIT 500",
)
AGENT_VARIABLE = variable(
    "agent", "Agent",
    "SELECT DISTINCT coalesce(agent, 'unknown') FROM calls WHERE $__timeFilter(started_at) ORDER BY 1",
    multi=True,
)
RULE_VARIABLE = variable(
    "rule", "Rule", "SELECT DISTINCT rule FROM guard_events WHERE $__timeFilter(at) ORDER BY 1", multi=True,
)
