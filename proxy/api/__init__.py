"""Admin and query API (FastAPI): /api/*, /healthz, /metrics.

Auth: bearer INTERLOCK_ADMIN_TOKEN when set (scheme case-insensitive; HTTP Basic with the token as
password is accepted too, so the web console at /ui works from the browser's own prompt); when
unset, loopback clients only.  The same for /api/docs and /api/openapi.json.  A browser's
cross-site request that changes state (POST from another origin) is refused either way.  /metrics follows
INTERLOCK_METRICS_PUBLIC: `true` open to all, `loopback` (default) open to loopback clients and
otherwise like /api, `false` like /api.  /healthz is always open.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError

from proxy.ui import ui_router

if TYPE_CHECKING:
    from proxy.runtime import Runtime


def admin_guard(runtime: Runtime) -> Callable[[Request], None]:
    token = runtime.settings.admin_token

    def check(request: Request) -> None:
        _authorise(request, token)
        _same_origin(request)

    return check


def metrics_guard(runtime: Runtime) -> Callable[[Request], None]:
    token, public = runtime.settings.admin_token, runtime.settings.metrics_public

    def check(request: Request) -> None:
        if public == "true" or (public == "loopback" and _loopback(_host(request))):
            return
        _authorise(request, token)

    return check


def _authorise(request: Request, token: str | None) -> None:
    """The admin token when set (any case of `Bearer`), else a loopback client; raises 401/403."""
    if token:
        got = _bearer(request.headers.get("authorization", ""))
        if got is None or not hmac.compare_digest(got.encode(), token.encode()):
            raise HTTPException(401, "admin API: missing or wrong bearer token (INTERLOCK_ADMIN_TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})
        return
    if not _loopback(_host(request)):
        raise HTTPException(403, "admin API is loopback-only while INTERLOCK_ADMIN_TOKEN is unset")


def _bearer(header: str) -> str | None:
    """The credentials of `Bearer <token>`, or the password of `Basic <user:password>` (what a
    browser sends after its login prompt); schemes are case-insensitive (RFC 9110 §11.1)."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return credentials.strip() if scheme.lower() == "bearer" else None


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _same_origin(request: Request) -> None:
    """403 for a browser request from another site that would change state: the browser sends
    stored Basic credentials (and loopback needs none) with a form posted from any page."""
    if request.method in _SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    cross = request.headers.get("sec-fetch-site") == "cross-site"
    if cross or (origin is not None and urlsplit(origin).netloc != request.headers.get("host")):
        raise HTTPException(403, f"admin API: cross-origin {request.method} refused (Origin {origin!r})")


def _host(request: Request) -> str:
    return request.client.host if request.client else ""


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")


def build_api(runtime: Runtime, lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]]) -> FastAPI:
    from proxy.api import calls, escalations_api, graph_api, rules_api

    app = FastAPI(title="Interlock", lifespan=lifespan, docs_url=None, openapi_url=None)
    guard = Depends(admin_guard(runtime))
    api = APIRouter(prefix="/api", dependencies=[guard])
    _docs(api, app)
    calls.register(api, runtime)
    rules_api.register(api, runtime)
    graph_api.register(api, runtime)
    escalations_api.register(api, runtime)
    app.include_router(api)
    app.include_router(ui_router(admin_guard(runtime)))

    async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"database unavailable ({type(exc).__name__}); the proxy keeps "
                                       "serving and spools records until it is back"}, status_code=503)

    app.add_exception_handler(DBAPIError, database_unavailable)
    app.add_exception_handler(OSError, database_unavailable)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        writer, wal = runtime.writer, getattr(runtime, "wal", None)
        body = {"status": "ok", "relay": runtime.relay is not None,
                "writer": _writer_stats(writer) if writer is not None else None,
                "wal": wal.stats() if wal is not None else None}
        return JSONResponse(body)

    @app.get("/metrics", dependencies=[Depends(metrics_guard(runtime))])
    async def metrics() -> Response:
        if runtime.metrics is None:
            return Response("", media_type="text/plain")
        return Response(await runtime.scrape_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def _docs(api: APIRouter, app: FastAPI) -> None:
    """/api/openapi.json and /api/docs behind the admin guard (FastAPI's own are unguarded)."""

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @api.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="Interlock API")


def _writer_stats(writer: Any) -> dict[str, Any]:
    keys = ("queued", "written", "spooled", "replayed", "dropped", "sink_errors", "queue_depth")
    return {k: getattr(writer, k, None) for k in keys}
