"""Every PromQL query of the checked-in dashboards, evaluated by a real Prometheus scraping a proxy.

Scenario traffic runs twice with scrapes in between (so rates and quantiles have two samples to
work with), then each panel's expr goes through Grafana's variable expansion and Prometheus's
HTTP API, and must return at least one series with a finite value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.dashboards.grafana import ALL, Context, render_promql
from tests.dashboards.panels import Query, queries, variable_queries
from tests.dashboards.prometheus import PrometheusServer, prometheus_binary
from tests.dashboards.scenario import drive, write_rules
from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer

PROMQL = queries("prometheus")
VARIABLES = variable_queries("prometheus")


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    prometheus_binary()
    tmp = tmp_path_factory.mktemp("promql-panels")
    with FakeUpstream() as up, ProxyServer(tmp, up.url, rules_dir=write_rules(tmp)) as px, \
            PrometheusServer(tmp, [urlsplit(px.url).netloc]) as server:
        seen = px.wait_calls(drive(px, up, "a"))
        server.wait_scrapes(2)
        px.wait_calls(len(seen) + drive(px, up, "b"))
        server.wait_scrapes(3)
        yield server


def _context(selection: dict[str, Any]) -> Context:
    now = datetime.now(UTC)
    return Context(start=now - timedelta(hours=1), end=now, interval="2s", rate_interval="15s",
                   selection=selection)


def _finite(result: list[dict[str, Any]]) -> list[float]:
    return [float(v) for s in result for v in [s["value"][1]] if not math.isnan(float(v))]


@pytest.mark.parametrize("q", PROMQL, ids=[q.id for q in PROMQL])
def test_promql_panel_returns_series(q: Query, prom: PrometheusServer) -> None:
    expr = render_promql(q.target["expr"], _context({"agent": [ALL], "model": [ALL]}), q.variables)
    result = prom.query(expr)
    assert result, f"{q.id}: no series for {expr}"
    assert _finite(result), f"{q.id}: only NaN for {expr}: {result}"


@pytest.mark.parametrize("q", PROMQL, ids=[q.id for q in PROMQL])
def test_promql_panel_filters_by_a_chosen_agent_and_model(q: Query, prom: PrometheusServer) -> None:
    ctx = _context({"agent": ["planner"], "model": ["gpt-4o"]})
    expr = render_promql(q.target["expr"], ctx, q.variables)
    result = prom.query(expr)
    if "$agent" in q.target["expr"] and "by (agent" in q.target["expr"]:
        assert result and {s["metric"]["agent"] for s in result} == {"planner"}, expr


@pytest.mark.parametrize("uid,var,variables", VARIABLES, ids=[f"{u}/${v['name']}" for u, v, _ in VARIABLES])
def test_prometheus_variable_lists_values(uid: str, var: dict[str, Any], variables: tuple[dict[str, Any], ...],
                                          prom: PrometheusServer) -> None:
    m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["query"])
    assert m, f"{uid}: ${var['name']} is not a label_values() query: {var['query']}"
    values = prom.label_values(m.group(2), m.group(1))
    assert {"agent": "planner", "model": "gpt-4o"}[var["name"]] in values
