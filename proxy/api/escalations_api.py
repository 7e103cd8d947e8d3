"""/api/escalations: list, raise, acknowledge, resolve; /api/escalations/health.

    GET  /api/escalations                 filters status, run_id, rule, dead; newest first, each
                                          with its deliveries (every attempt); plus a summary
    POST /api/escalations                 {"rule"?, "reason", "run_id"?, "agent"?, "details"?} → 201
    GET  /api/escalations/health          routes: last delivery, stale, problems
    GET  /api/escalations/{id}
    POST /api/escalations/{id}/ack        {"by"?} → the escalation (idempotent)
    POST /api/escalations/{id}/resolve    {"by"?}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from proxy.api.ids import filter_id

if TYPE_CHECKING:
    from proxy.escalation.service import Escalations
    from proxy.runtime import Runtime


class NewEscalation(BaseModel):
    rule: str | None = Field(default=None, description="escalation rule (optional when there is only one)")
    reason: str = Field(min_length=1, max_length=4000)
    run_id: str | None = Field(default=None, max_length=64)
    agent: str | None = Field(default=None, max_length=200)
    details: dict[str, Any] = Field(default_factory=dict)


class Actor(BaseModel):
    by: str | None = Field(default=None, max_length=200, description="who acts (shown in the escalation)")


def register(api: APIRouter, runtime: Runtime) -> None:
    def service() -> Escalations:
        svc: Escalations | None = getattr(runtime, "escalations", None)
        if svc is None:
            raise HTTPException(503, "escalations are not running yet")
        return svc

    async def one(svc: Escalations, esc_id: str, found: Any) -> dict[str, Any]:
        if found is None:
            raise HTTPException(404, f"no escalation with id {esc_id!r}")
        return (await svc.describe([found]))[0]

    @api.get("/escalations")
    async def list_escalations(
        status: Literal["open", "acknowledged", "resolved"] | None = None,
        run_id: str | None = None,
        rule: str | None = None,
        dead: bool | None = None,
        limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        svc = service()
        run_id = await filter_id(runtime.engine, "run", run_id)
        found = await svc.store.search(status=status, run_id=run_id, rule=rule, dead=dead, limit=limit)
        return {"items": await svc.describe(found), "summary": svc.summary()}

    @api.post("/escalations", status_code=201)
    async def create_escalation(body: NewEscalation) -> dict[str, Any]:
        svc = service()
        try:
            esc = await svc.create(rule=body.rule, reason=body.reason, run_id=body.run_id, agent=body.agent,
                                   details=body.details)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        return await one(svc, esc.id, esc)

    @api.get("/escalations/health")
    async def escalations_health() -> dict[str, Any]:
        return await service().health()

    @api.get("/escalations/{esc_id}")
    async def get_escalation(esc_id: str) -> dict[str, Any]:
        svc = service()
        return await one(svc, esc_id, await svc.store.get(esc_id))

    @api.post("/escalations/{esc_id}/ack")
    async def ack_escalation(esc_id: str, body: Actor | None = None) -> dict[str, Any]:
        svc = service()
        return await one(svc, esc_id, await svc.ack(esc_id, by=(body.by if body else None) or "api"))

    @api.post("/escalations/{esc_id}/resolve")
    async def resolve_escalation(esc_id: str, body: Actor | None = None) -> dict[str, Any]:
        svc = service()
        return await one(svc, esc_id, await svc.resolve(esc_id, by=(body.by if body else None) or "api"))
