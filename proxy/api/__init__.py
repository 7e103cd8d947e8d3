"""Admin and query API (FastAPI): /api/*, /healthz, /metrics.

Auth: bearer INTERLOCK_ADMIN_TOKEN when set; when unset, loopback clients only.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from proxy.runtime import Runtime


def admin_guard(runtime: Runtime) -> Callable[[Request], None]:
    token = runtime.settings.admin_token

    def check(request: Request) -> None:
        if token:
            got = request.headers.get("authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                raise HTTPException(401, "admin API: missing or wrong bearer token (INTERLOCK_ADMIN_TOKEN)")
            return
        host = request.client.host if request.client else ""
        if not _loopback(host):
            raise HTTPException(403, "admin API is loopback-only while INTERLOCK_ADMIN_TOKEN is unset")

    return check


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")


def build_api(runtime: Runtime, lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]]) -> FastAPI:
    from proxy.api import calls, escalations_api, graph_api, rules_api

    app = FastAPI(title="Interlock", lifespan=lifespan, docs_url="/api/docs", openapi_url="/api/openapi.json")
    guard = Depends(admin_guard(runtime))
    api = APIRouter(prefix="/api", dependencies=[guard])
    calls.register(api, runtime)
    rules_api.register(api, runtime)
    graph_api.register(api, runtime)
    escalations_api.register(api, runtime)
    app.include_router(api)

    async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"database unavailable ({type(exc).__name__}); the proxy keeps "
                                       "serving and spools records until it is back"}, status_code=503)

    app.add_exception_handler(DBAPIError, database_unavailable)
    app.add_exception_handler(OSError, database_unavailable)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        writer = runtime.writer
        body = {"status": "ok", "relay": runtime.relay is not None,
                "writer": _writer_stats(writer) if writer is not None else None}
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics() -> Response:
        if runtime.metrics is None:
            return Response("", media_type="text/plain")
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _writer_stats(writer: Any) -> dict[str, Any]:
    keys = ("queued", "written", "spooled", "replayed", "dropped", "sink_errors", "queue_depth")
    return {k: getattr(writer, k, None) for k in keys}
