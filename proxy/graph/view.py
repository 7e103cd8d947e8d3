"""Graph JSON for `/api/runs/{id}/graph`, built from plain rows (dicts) as the store returns them.

    {"run": {...},
     "agents":      [{"name", "calls", "tokens"}],                      first call order
     "nodes":       [{"id", "agent", "model", "started_at", "status", "flags"}],  start order
     "edges":       [{"source", "target", "kind", "evidence"}],         target start order
     "agent_edges": [{"source", "target", "kind", "count"}]}            first seen order

Call rows may spell fields as the calls table does: `model` or `model_served` /
`model_requested`; `status` or `outcome`; `tokens` or `input_tokens` + `output_tokens`.
Edges whose source is neither a node nor a `human:` pseudo node (a source in another run)
are left out; a human source counts as agent "human" in `agent_edges`.
Datetimes become ISO strings; evidence stored as JSON text is decoded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from proxy.graph.model import HUMAN_PREFIX

HUMAN_AGENT = "human"


def build_graph(
    run: Mapping[str, Any], calls: Iterable[Mapping[str, Any]], edges: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    rows = sorted(calls, key=lambda r: (_sort_time(r.get("started_at")), str(r["id"])))
    nodes = [_node(r) for r in rows]
    agent_of = {n["id"]: n["agent"] for n in nodes}
    order = {n["id"]: i for i, n in enumerate(nodes)}
    kept = [_edge(e) for e in edges if _drawable(e, agent_of)]
    kept.sort(key=lambda e: (order[e["target"]], order.get(e["source"], -1), e["source"]))
    return {
        "run": {k: _plain(v) for k, v in run.items()},
        "agents": _agents(rows, nodes),
        "nodes": nodes,
        "edges": kept,
        "agent_edges": _agent_edges(kept, agent_of),
    }


def _node(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "agent": row.get("agent") or "unknown",
        "model": row.get("model") or row.get("model_served") or row.get("model_requested"),
        "started_at": _plain(row.get("started_at")),
        "status": row.get("outcome") or row.get("status"),  # ok | denied | upstream_error ... (HTTP code if no outcome)
        "flags": list(_decode(row.get("flags")) or []),
    }


def _tokens(row: Mapping[str, Any]) -> int:
    if row.get("tokens") is not None:
        return int(row["tokens"])
    return int(row.get("input_tokens") or 0) + int(row.get("output_tokens") or 0)


def _agents(rows: list[Mapping[str, Any]], nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    agents: dict[str, dict[str, Any]] = {}
    for row, node in zip(rows, nodes, strict=True):
        entry = agents.setdefault(node["agent"], {"name": node["agent"], "calls": 0, "tokens": 0})
        entry["calls"] += 1
        entry["tokens"] += _tokens(row)
    return list(agents.values())


def _drawable(edge: Mapping[str, Any], agent_of: Mapping[str, str]) -> bool:
    source, target = str(edge["source"]), str(edge["target"])
    return target in agent_of and (source in agent_of or source.startswith(HUMAN_PREFIX))


def _edge(edge: Mapping[str, Any]) -> dict[str, Any]:
    evidence = _decode(edge.get("evidence")) or {}
    return {
        "source": str(edge["source"]),
        "target": str(edge["target"]),
        "kind": edge["kind"],
        "evidence": evidence,
    }


def _agent_edges(edges: list[dict[str, Any]], agent_of: Mapping[str, str]) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str, str], int] = {}
    for e in edges:
        src = agent_of.get(e["source"], HUMAN_AGENT)
        key = (src, agent_of[e["target"]], e["kind"])
        counts[key] = counts.get(key, 0) + 1
    return [{"source": s, "target": t, "kind": k, "count": n} for (s, t, k), n in counts.items()]


def _decode(value: Any) -> Any:
    if isinstance(value, str | bytes) and value:
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _sort_time(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return 0.0
    return 0.0
