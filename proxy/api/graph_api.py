"""/api/agents, /api/runs, /api/runs/{id}, /api/runs/{id}/graph (JSON shape in shared/design.md)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query

import proxy.store.queries as queries
from proxy.graph.view import build_graph

if TYPE_CHECKING:
    from proxy.runtime import Runtime


def register(api: APIRouter, runtime: Runtime) -> None:
    @api.get("/agents")
    async def agents() -> dict[str, Any]:
        return {"items": await queries.list_agents(runtime.engine)}

    @api.get("/runs")
    async def runs(
        status: str | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
    ) -> dict[str, Any]:
        try:
            items, nxt = await queries.list_runs(runtime.engine, status=status, agent=agent, since=since,
                                                 until=until, cursor=cursor, limit=limit)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"items": items, "next_cursor": nxt}

    @api.get("/runs/{run_id}")
    async def run(run_id: str) -> dict[str, Any]:
        row, calls = await _run_and_calls(runtime, run_id)
        return {**row, "call_ids": [c["id"] for c in calls], **runtime.run_extras(row, calls)}

    @api.get("/runs/{run_id}/graph")
    async def graph(run_id: str) -> dict[str, Any]:
        row, calls = await _run_and_calls(runtime, run_id)
        edges = await queries.run_edges(runtime.engine, run_id)
        return build_graph(row, calls, edges)


async def _run_and_calls(runtime: Runtime, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    calls = await queries.run_calls(runtime.engine, run_id)
    row = await queries.get_run(runtime.engine, run_id)
    if row is None and not calls:
        raise HTTPException(404, f"no run with id {run_id!r}")
    return row or {"id": run_id, "status": "open"}, calls
