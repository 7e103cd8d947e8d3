"""create_app(): builds everything in the lifespan and routes between relay and API.

    ASGI ──▶ InterlockApp ─▶ canonical path (proxy/paths.py) ──┬─ refused: 400, provider-shaped
                                                                ├─ a provider's paths (/v1/*, /v1beta/*, /openai/*, /model/*...), /agents/{name}/... ──▶ Relay (hot path)
                                                                └─ everything else ───────────▶ FastAPI (/api, /ui, /healthz, /metrics)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from proxy.api import build_api
from proxy.paths import PathError, canonicalise, encode_path
from proxy.providers import Router
from proxy.relay import Relay
from proxy.runtime import Runtime
from proxy.settings import Settings, load_settings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("interlock")


class InterlockApp:
    """The ASGI entry point.  Proxy paths skip the framework entirely (speed)."""

    def __init__(self, api: FastAPI, runtime: Runtime) -> None:
        self.api = api
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                path = _canonicalise(scope)
            except PathError as exc:
                await self._refuse_path(scope, send, str(exc))
                return
            if path.startswith("/agents/") or self.runtime.router.relays(path):
                relay = self.runtime.relay
                if relay is not None:
                    await relay(scope, receive, send)
                    return
        await self.api(scope, receive, send)

    async def _refuse_path(self, scope: Scope, send: Send, why: str) -> None:
        """400 in the shape of the provider the client speaks; nothing is routed or forwarded."""
        router = self.runtime.router
        markers = [k for k, _ in scope["headers"] if k in router.markers]
        provider = router.generic(scope.get("path", ""), markers)
        code = "interlock_invalid_path"
        message = f"Interlock: refused the request path: {why}; nothing was sent upstream."
        body = provider.error_body(400, code, code, message)
        await send({"type": "http.response.start", "status": provider.error_status(400),
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                                (b"x-should-retry", b"false"), *provider.error_headers(400, code, code)]})
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _canonicalise(scope: Scope) -> str:
    """Put the canonical path in `scope`: decoded in `path`, as forwarded in `raw_path`."""
    raw: bytes | None = scope.get("raw_path")
    missing = raw is None  # optional in ASGI: re-encode what the server decoded (encoded delimiters stay refused)
    path, forward = canonicalise(encode_path(scope["path"]).encode("ascii") if raw is None else raw)
    if missing or path is not forward or path != scope["path"]:  # else plain: raw_path is `forward` already
        scope["path"] = path
        scope["raw_path"] = forward.encode("ascii")
    return path


def create_app(
    settings: Settings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    migrate: bool = True,
) -> InterlockApp:
    """Build the app.  `transport` replaces the network to the upstreams (tests)."""
    settings = settings or load_settings()
    runtime = Runtime(settings, Router(settings.all_upstreams()), transport=transport, migrate=migrate)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        await runtime.start()
        try:
            yield {}
        finally:
            await runtime.aclose()

    api = build_api(runtime, lifespan)
    return InterlockApp(api, runtime)


__all__ = ["create_app", "InterlockApp", "Relay"]
