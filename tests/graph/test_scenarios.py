"""Each scripted multi-agent system yields exactly the expected agents, edges and runs."""

from __future__ import annotations

import pytest

from proxy.graph import human_node
from tests.graph import scenarios as sc

IDS = [s.name for s in sc.ALL]


@pytest.fixture(params=sc.ALL, ids=IDS)
def scenario(request: pytest.FixtureRequest) -> sc.Scenario:
    return request.param


def test_agents_are_recovered(scenario: sc.Scenario) -> None:
    assert sc.agent_map(sc.drive(scenario)) == sc._sorted(scenario.expect.agents)


def test_edges_are_exact(scenario: sc.Scenario) -> None:
    assert sc.edge_set(sc.drive(scenario)) == set(scenario.expect.edges)


def test_runs_are_exact(scenario: sc.Scenario) -> None:
    results = sc.drive(scenario)
    assert sc.run_sets(results) == set(scenario.expect.runs)
    for step, run in scenario.expect.run_ids.items():
        assert sc.final_runs(results)[step] == run


def test_truncation_is_exact(scenario: sc.Scenario) -> None:
    assert sc.truncated_set(sc.drive(scenario)) == set(scenario.expect.truncated)


def test_graph_json_matches(scenario: sc.Scenario) -> None:
    results = sc.drive(scenario)
    run_of = sc.final_runs(results)
    for run, graph in sc.graphs(scenario, results).items():
        steps = {s for s, r in run_of.items() if r == run}
        nodes = graph["nodes"]
        assert isinstance(nodes, list)
        assert {n["id"] for n in nodes} == steps
        agent_of = {s: results[s].agent for s in steps}
        expected = {
            (agent_of.get(src, "human"), agent_of[dst], kind)
            for src, dst, kind in scenario.expect.edges
            if dst in steps
        }
        agent_edges = graph["agent_edges"]
        assert isinstance(agent_edges, list)
        assert {(e["source"], e["target"], e["kind"]) for e in agent_edges} == expected


def test_human_edge_names_the_message() -> None:
    results = sc.drive(sc.HUMAN_INPUT)
    (edge,) = [e for e in results["p2"].edges if e.kind == "human"]
    assert edge.source == human_node(sc.HUMAN_REPLY)
    assert "human_input" in results["p2"].flags


def test_fan_out_evidence_reports_partial_coverage() -> None:
    results = sc.drive(sc.FAN_OUT)
    (edge,) = [e for e in results["w2"].edges if e.source == "o1"]
    assert edge.evidence["truncated"] is False
    assert 0.1 < float(edge.evidence["coverage"]) < 0.6
    assert edge.evidence["via"] == "user"


def test_truncated_edges_say_why() -> None:
    results = sc.drive(sc.TRUNCATED)
    cut = next(e for e in results["f1"].edges if e.source == "a1")
    length = next(e for e in results["r1"].edges if e.source == "a2")
    assert cut.evidence["reason"] == "cut"
    assert length.evidence["reason"] == "source_length"
    assert "truncated_input" in results["f1"].flags


def test_streaming_variant_gives_the_same_graph() -> None:
    from dataclasses import replace

    from proxy.graph.script import Script

    base = sc.FAN_OUT
    script, offset = base.scripts[0]
    streamed = Script(script.agents, tuple(replace(s, stream=True) for s in script.steps))
    variant = sc.Scenario("fan_out_streamed", ((streamed, offset),), base.expect)
    assert sc.edge_set(sc.drive(variant)) == set(base.expect.edges)
