"""build_graph: the Graph JSON of design.md from store-shaped rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from proxy.graph import build_graph

RUN = {"id": "r1", "started_at": datetime(2025, 3, 14, 9, 0, tzinfo=UTC), "status": "open"}
CALLS: list[dict[str, Any]] = [
    {"id": "o2", "agent": "orchestrator", "model_served": "gpt-4o", "started_at": 5.0, "outcome": "ok",
     "flags": '["human_input"]', "input_tokens": 50, "output_tokens": 5},
    {"id": "o1", "agent": "orchestrator", "model": "gpt-4o", "started_at": 1.0, "status": "ok", "flags": [], "tokens": 30},
    {"id": "w1", "agent": "researcher", "model_requested": "claude", "started_at": 2.0, "outcome": "ok", "tokens": 20},
]  # fmt: skip
EDGES: list[dict[str, Any]] = [
    {"source": "w1", "target": "o2", "kind": "return", "evidence": '{"coverage": 1.0, "via": "user"}'},
    {"source": "o1", "target": "w1", "kind": "handoff", "evidence": {"coverage": 0.4}},
    {"source": "o1", "target": "o2", "kind": "continuation", "evidence": {}},
    {"source": "human:abc123abc123", "target": "o2", "kind": "human", "evidence": {"chars": 12}},
    {"source": "elsewhere", "target": "o2", "kind": "handoff", "evidence": {}},
]


def graph() -> dict[str, Any]:
    return build_graph(RUN, CALLS, EDGES)


def test_top_level_shape() -> None:
    assert list(graph()) == ["run", "agents", "nodes", "edges", "agent_edges"]
    assert graph()["run"]["started_at"] == "2025-03-14T09:00:00+00:00"


def test_nodes_in_start_order_with_normalised_fields() -> None:
    nodes = graph()["nodes"]
    assert [n["id"] for n in nodes] == ["o1", "w1", "o2"]
    assert nodes[2] == {"id": "o2", "agent": "orchestrator", "model": "gpt-4o", "started_at": 5.0,
                        "status": "ok", "flags": ["human_input"]}  # fmt: skip
    assert nodes[1]["model"] == "claude"


def test_agents_count_calls_and_tokens() -> None:
    assert graph()["agents"] == [
        {"name": "orchestrator", "calls": 2, "tokens": 85},
        {"name": "researcher", "calls": 1, "tokens": 20},
    ]


def test_edges_keep_nodes_and_humans_only() -> None:
    edges = graph()["edges"]
    assert [(e["source"], e["target"], e["kind"]) for e in edges] == [
        ("o1", "w1", "handoff"),
        ("human:abc123abc123", "o2", "human"),
        ("o1", "o2", "continuation"),
        ("w1", "o2", "return"),
    ]
    assert edges[-1]["evidence"] == {"coverage": 1.0, "via": "user"}


def test_agent_edges_aggregate_by_kind() -> None:
    assert graph()["agent_edges"] == [
        {"source": "orchestrator", "target": "researcher", "kind": "handoff", "count": 1},
        {"source": "human", "target": "orchestrator", "kind": "human", "count": 1},
        {"source": "orchestrator", "target": "orchestrator", "kind": "continuation", "count": 1},
        {"source": "researcher", "target": "orchestrator", "kind": "return", "count": 1},
    ]


def test_empty_run() -> None:
    assert build_graph({"id": "r0"}, [], []) == {
        "run": {"id": "r0"},
        "agents": [],
        "nodes": [],
        "edges": [],
        "agent_edges": [],
    }
