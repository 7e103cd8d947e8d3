"""An ASGI app served by Interlock's server (proxy/server.py) on a loopback port in a daemon
thread: the demo, and the tests that drive real SDKs over real sockets."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvloop

from proxy.server import ASGIApp, Limits, Server
from proxy.settings import Settings


def limits_from(settings: Settings) -> Limits:
    """The server's client limits from INTERLOCK_MAX_HEADER_BYTES, _MAX_URL_BYTES, _HEADER_TIMEOUT_S, _BODY_TIMEOUT_S."""
    return Limits(max_header_bytes=settings.max_header_bytes, max_url_bytes=settings.max_url_bytes,
                  header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s)


class ThreadedServer:
    """`with ThreadedServer(app) as s:` → `s.url`; `s.loop` is the server's event loop.

    The socket is bound with IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections
    (a protocol of 0 left Nagle on: ~40 ms per reused connection)."""

    def __init__(self, app: ASGIApp, *, lifespan: bool = True, graceful_timeout_s: float = 5.0,
                 keepalive_s: float = 5.0, limits: Limits | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = Server(app, sock=self.sock, lifespan=lifespan, graceful_timeout_s=graceful_timeout_s,
                             keepalive_s=keepalive_s, limits=limits)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.loop = uvloop.new_event_loop()  # the loop `interlock serve` runs on
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        except BaseException as exc:  # reported by __enter__
            self.error = exc
        finally:
            self.loop.close()

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the server failed to start: {self.error!r} (see the log above)")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.request_exit()
        self._thread.join(timeout=20)
