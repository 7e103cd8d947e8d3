"""/api/agents, /api/runs, /api/runs/{id}, /api/runs/{id}/graph (JSON shape in shared/design.md)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

import proxy.store.queries as queries
from proxy.api.ids import full_id
from proxy.graph.view import build_graph

if TYPE_CHECKING:
    from proxy.runtime import Runtime


def register(api: APIRouter, runtime: Runtime) -> None:
    @api.get("/agents")
    async def agents() -> dict[str, Any]:
        return {"items": await queries.list_agents(runtime.engine)}

    @api.post("/agents/{name}/rename")
    async def rename(name: str, body: RenameBody) -> dict[str, Any]:
        """Show agent `name` as `body.to` from now on, and rewrite its stored calls."""
        return await _rename(runtime, name, body.to, merge=False)

    @api.post("/agents/{name}/merge")
    async def merge(name: str, body: MergeBody) -> dict[str, Any]:
        """Agent `name` is the same agent as `body.into`: fold its calls into it."""
        return await _rename(runtime, name, body.into, merge=True)

    @api.get("/runs")
    async def runs(
        status: str | None = None,
        agent: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        id_prefix: str | None = Query(None, max_length=64, description="runs whose id starts with this"),
        flag: str | None = Query(None, max_length=200, description="runs carrying this flag"),
        cursor: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
    ) -> dict[str, Any]:
        try:
            items, nxt = await queries.list_runs(runtime.engine, status=status, agent=agent, since=since,
                                                 until=until, id_prefix=id_prefix, flag=flag, cursor=cursor,
                                                 limit=limit)
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
        edges = await queries.run_edges(runtime.engine, row["id"])
        return build_graph(row, calls, edges)


class RenameBody(BaseModel):
    to: str = Field(min_length=1, max_length=200)


class MergeBody(BaseModel):
    into: str = Field(min_length=1, max_length=200)


async def _rename(runtime: Runtime, old: str, new: str, *, merge: bool) -> dict[str, Any]:
    if runtime.linker is None:
        raise HTTPException(503, "the graph is not running yet")
    if old == new:
        raise HTTPException(400, "old and new names are the same")
    directory = runtime.linker.directory
    if merge:
        directory.merge(old, new)
    else:
        directory.rename(old, new)
    if runtime.graph_client is not None:  # the shared graph's owner renames too
        runtime.graph_client.rename(old, new, merge=merge)
    moved = await queries.rename_agent(runtime.engine, old, new)
    return {"agent": old, "now": directory.resolve(old), "calls_rewritten": moved}


async def _run_and_calls(runtime: Runtime, given: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run_id = await full_id(runtime.engine, "run", given)
    calls = await queries.run_calls(runtime.engine, run_id)
    row = await queries.get_run(runtime.engine, run_id)
    if row is None and not calls:
        raise HTTPException(404, f"no run with id {run_id!r}")
    return row or {"id": run_id, "status": "open"}, calls
