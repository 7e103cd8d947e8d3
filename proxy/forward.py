"""The one upstream HTTP client.

httpx is the interface (its transport is the seam: tests pass `httpx.MockTransport` or any
`AsyncBaseTransport`); the default transport is aiohttp's connection pool through
`httpx-aiohttp`, because httpx's own pool was measured to collapse at concurrency 64 on
these machines.  Bodies are streamed: `send()` returns before the body is read, callers
iterate `aiter_raw()` and must `aclose()` the response.
"""

from __future__ import annotations

import httpx

from proxy.settings import Settings


def default_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(max_connections=settings.upstream_max_connections, keepalive_expiry=60)
    return AiohttpTransport(limits=limits)


class Forwarder:
    """Sends requests upstream.  Runs on the request path; raises httpx.TransportError subclasses."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.read_timeout_s,
            pool=settings.connect_timeout_s,
        )
        self._client = httpx.AsyncClient(transport=transport or default_transport(settings), timeout=self._timeout)

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> httpx.Response:
        """Send and return as soon as the status line and headers arrived (body unread)."""
        request = httpx.Request(method, url, headers=headers, content=body or None)
        request.extensions["timeout"] = self._timeout.as_dict()
        return await self._client.send(request, stream=True)

    async def aclose(self) -> None:
        await self._client.aclose()
