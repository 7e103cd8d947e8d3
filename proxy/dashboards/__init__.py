"""Grafana dashboards for Interlock, built from code.

    model.py         typed builder: Dashboard, Row, Panel, Prom / Sql targets, variables, layout
    overview.py      Prometheus: traffic, tokens, cost, latency, overhead, errors, guards
    orchestration.py SQL: agent graph (Node Graph), runs, calls
    guards.py        SQL + Prometheus: budgets, loops, context, denials
    escalations.py   SQL + PromQL: escalations and SLA clocks, alert routes, cascades, flagged calls
    build.py         the list of dashboards and the JSON files under dashboards/
    push.py          `interlock dashboards push` through grafana-client
    cli.py           add_commands(subparsers) for the `interlock` command
"""

from proxy.dashboards.cli import add_commands

__all__ = ["add_commands"]
