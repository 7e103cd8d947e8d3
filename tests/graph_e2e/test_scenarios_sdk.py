"""The scenario suite end to end: real SDKs → live proxy → fake model, graph read from /api.

Each scenario of tests/graph/scenarios.py is replayed with the `openai` SDK (chat completions
and the Responses API) and the `anthropic` SDK, streaming and not, against a fake model that
answers every request with the output its step scripts.  No X-Interlock header is sent.  The
graph the proxy then serves (/api/runs, /api/runs/{id}/graph, /api/agents) must be exactly the
one the unit-level suite expects: agents, edges with their kinds, runs, truncated handoffs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pytest

from tests.fake_upstream import FakeUpstream
from tests.graph import scenarios as sc
from tests.graph_e2e.graphs import Api, Graph
from tests.graph_e2e.replay import Plan, Recovered, recovered, with_api
from tests.proxyserver import ProxyServer

# EXPLICIT is the one scenario built on X-Interlock-Agent / X-Interlock-Run headers: not traffic alone.
SCENARIOS = tuple(s for s in sc.ALL if s is not sc.EXPLICIT)


def _on_api(base: sc.Scenario, api: str) -> sc.Scenario:
    scripts = tuple((with_api(script, api), offset) for script, offset in base.scripts)
    return sc.Scenario(f"{base.name}@{api}", scripts, base.expect)


# The truncated handoff once more with each provider's own stop signal: Anthropic stop_reason
# max_tokens and a Responses status incomplete (max_output_tokens) instead of finish_reason length.
TRUNCATED_VARIANTS = (_on_api(sc.TRUNCATED, "messages"), _on_api(sc.TRUNCATED, "responses"))
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


@dataclass(frozen=True)
class Seen:
    got: Recovered  # in step ids
    graphs: dict[str, Graph]  # /api/runs/{id}/graph per run
    runs: list[dict[str, Any]]  # /api/runs
    agents: list[dict[str, Any]]  # /api/agents


def replay(px: ProxyServer, model: FakeUpstream, scenario: sc.Scenario, stream: bool) -> Seen:
    plan = Plan.of(scenario, stream=stream)
    model.responder = plan.responder
    plan.drive(px.url)
    with Api(px) as api:
        step_of = plan.identify(api)
        graphs = api.settle(calls=len(plan.steps), runs=len(scenario.expect.runs))
        runs = api.get("/api/runs", limit=1000)["items"]
        agents = api.get("/api/agents")["items"]
    return Seen(recovered(graphs, step_of), graphs, runs, agents)


def expected_agent_edges(expect: sc.Expect) -> frozenset[tuple[str, str, str]]:
    agent_of = {step: name for name, steps in expect.agents.items() for step in steps}
    return frozenset((agent_of.get(s, sc.HUMAN), agent_of[t], k) for s, t, k in expect.edges)


def check(seen: Seen, scenario: sc.Scenario) -> None:
    got, expect = seen.got, scenario.expect
    assert got.agents == sc._sorted(expect.agents)
    assert got.edges == expect.edges
    assert got.runs == frozenset(expect.runs)
    assert got.truncated == expect.truncated
    assert got.agent_edges == expected_agent_edges(expect)
    assert len(seen.runs) == len(expect.runs)
    assert sorted(r["calls"] for r in seen.runs) == sorted(len(r) for r in expect.runs)
    assert {a["name"] for a in seen.agents} == set(expect.agents)
    for graph in seen.graphs.values():  # the API's node status is the HTTP status (200), the unit suite's "ok"
        assert all(n["status"] in ("ok", 200) for n in graph["nodes"]), graph["nodes"]
    detail = DETAILS.get(scenario.name.split("@")[0])
    if detail is not None:
        detail(got)


def truncation_says_why(got: Recovered) -> None:
    """The cut handoff and the handoff out of a length-stopped call are told apart."""
    assert got.evidence[("a1", "f1", "handoff")]["reason"] == "cut"
    assert got.evidence[("a2", "r1", "handoff")]["reason"] == "source_length"
    assert "truncated_input" in got.flags["f1"]


def fan_out_is_no_truncation(got: Recovered) -> None:
    """Each worker got one part of the plan on purpose: partial coverage, not truncated."""
    for worker in ("w1", "w2", "w3"):
        ev = got.evidence[("o1", worker, "handoff")]
        assert ev["truncated"] is False
        assert 0.1 < float(ev["coverage"]) < 0.6
        assert ev["via"] == "user"


def human_input_is_flagged(got: Recovered) -> None:
    assert "human_input" in got.flags["p2"]
    assert (sc.HUMAN, "trip-planner", "human") in got.agent_edges


DETAILS: Mapping[str, Callable[[Recovered], None]] = MappingProxyType({
    sc.TRUNCATED.name: truncation_says_why,
    sc.FAN_OUT.name: fan_out_is_no_truncation,
    sc.HUMAN_INPUT.name: human_input_is_flagged,
})


@STREAM
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_end_to_end(px: ProxyServer, model: FakeUpstream, scenario: sc.Scenario, stream: bool) -> None:
    check(replay(px, model, scenario, stream), scenario)


@STREAM
@pytest.mark.parametrize("scenario", TRUNCATED_VARIANTS, ids=[s.name for s in TRUNCATED_VARIANTS])
def test_truncated_handoff_per_provider(
    px: ProxyServer, model: FakeUpstream, scenario: sc.Scenario, stream: bool
) -> None:
    check(replay(px, model, scenario, stream), scenario)
