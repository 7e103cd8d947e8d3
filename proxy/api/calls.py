"""/api/calls and /api/calls/{id}."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Query

import proxy.store.queries as queries
from proxy.api.ids import filter_id, full_id

if TYPE_CHECKING:
    from proxy.runtime import Runtime


def register(api: APIRouter, runtime: Runtime) -> None:
    @api.get("/calls")
    async def list_calls(
        agent: str | None = None,
        model: str | None = None,
        status: str | None = None,
        run_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
    ) -> dict[str, object]:
        try:
            items, nxt = await queries.list_calls(
                runtime.engine, agent=agent, model=model, status=status,
                run_id=await filter_id(runtime.engine, "run", run_id),
                since=since, until=until, cursor=cursor, limit=limit,
            )
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"items": items, "next_cursor": nxt}

    @api.get("/calls/{call_id}")
    async def get_call(call_id: str) -> dict[str, object]:
        row = await queries.get_call(runtime.engine, await full_id(runtime.engine, "call", call_id))
        if row is None:
            raise HTTPException(404, f"no call with id {call_id!r}")
        return row
