"""create_app(): builds everything in the lifespan and routes between relay and API.

    ASGI ──▶ InterlockApp ──┬─ /v1/*, /agents/{name}/v1/* ──▶ Relay (raw ASGI, hot path)
                            └─ everything else ───────────▶ FastAPI (/api, /healthz, /metrics)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from proxy.api import build_api
from proxy.providers import Router
from proxy.relay import Relay
from proxy.runtime import Runtime
from proxy.settings import Settings, load_settings

log = logging.getLogger("interlock")


class InterlockApp:
    """The ASGI entry point.  Proxy paths skip the framework entirely (speed)."""

    def __init__(self, api: FastAPI, runtime: Runtime) -> None:
        self.api = api
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/v1/") or path.startswith("/agents/"):
                relay = self.runtime.relay
                if relay is not None:
                    await relay(scope, receive, send)
                    return
        await self.api(scope, receive, send)


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
