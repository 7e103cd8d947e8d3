"""A real webhook receiver for tests: an HTTP server on a loopback port, in a thread.

    with Receiver() as rx:            rx.url; rx.posts (headers, body, json) in arrival order
        Receiver(fail_first=2)        answers 500 to the first two POSTs, then 200
        Receiver(on_post=fn)          calls fn(post) before answering (e.g. acknowledge via the API)
    dead_url()                        a loopback URL where nothing listens (connection refused)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Receiver:
    def __init__(self, *, fail_first: int = 0, status: int = 200,
                 on_post: Callable[[Post], None] | None = None) -> None:
        self.posts: list[Post] = []
        self.fail_first = fail_first
        self.status = status
        self.on_post = on_post
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                post = Post(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                status = rx._record(post)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        return Handler

    def _record(self, post: Post) -> int:
        with self._lock:
            self.posts.append(post)
            n = len(self.posts)
        if self.on_post is not None:
            self.on_post(post)
        return 500 if n <= self.fail_first else self.status

    def wait(self, n: int, timeout: float = 10.0, kind: str | None = None) -> list[Post]:
        """At least n posts (of event `kind` when given), else AssertionError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of(kind)
            if len(found) >= n:
                return found
            time.sleep(0.02)
        raise AssertionError(f"expected {n} webhook posts ({kind or 'any'}), got {[p.json for p in self.posts]}")

    def of(self, kind: str | None) -> list[Post]:
        with self._lock:
            return [p for p in self.posts if kind is None or p.header("x-interlock-event") == kind]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def dead_url() -> str:
    """A loopback URL nobody listens on: every connection is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/hook"
