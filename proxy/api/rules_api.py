"""/api/rules (active rules and load errors) and /api/guard-events."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Query

import proxy.store.queries as queries
from proxy.api.ids import filter_id

if TYPE_CHECKING:
    from proxy.runtime import Runtime


def register(api: APIRouter, runtime: Runtime) -> None:
    @api.get("/rules")
    async def rules() -> dict[str, Any]:
        if runtime.rules is None:
            raise HTTPException(503, "rules are not loaded yet")
        return runtime.rules.status()

    @api.get("/guard-events")
    async def guard_events(
        rule: str | None = None,
        action: str | None = None,
        agent: str | None = None,
        run_id: str | None = None,
        call_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = Query(50, ge=1, le=1000),
    ) -> dict[str, Any]:
        try:
            items, nxt = await queries.list_guard_events(
                runtime.engine, rule=rule, action=action, agent=agent,
                run_id=await filter_id(runtime.engine, "run", run_id),
                call_id=await filter_id(runtime.engine, "call", call_id),
                since=since, until=until, cursor=cursor, limit=limit,
            )
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        return {"items": items, "next_cursor": nxt}
