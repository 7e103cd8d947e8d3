"""Interlock's HTTP/1.1 server: asyncio.Protocol + httptools, speaking ASGI 3 to the app.

    socket ─▶ _Connection (httptools parser) ─▶ one task per request: app(scope, receive, send)
                 │ pipelined requests wait in a queue (at most _PIPELINE_DEPTH parsed, the rest
                 │ of what was read kept unparsed); reading pauses while the app is slow, while
                 │ requests queue, and while the client does not read its answers
                 └─ send() frames the response: Content-Length when the app gave one, else chunked;
                    every body write first waits for the transport's buffer to drain

Why not a maintained server (uvicorn, granian): measured in the whole-proxy bench (bench/README.md,
"Which HTTP server"), four interleaved runs on this shared 2-core machine, small non-streamed
calls at C=16 with recording, graph and default rules: this server 0.54-0.69 ms CPU per request,
uvicorn (httptools, uvloop) 0.62-0.84 (1.06-1.2x this server in the same round), uvicorn with the
limits below added (branch `server-uvicorn`, proxy/edge.py) 0.65-0.69, granian (ASGI) 0.86-0.99;
the goal is <= 0.6, met only by this server (in the quieter runs).  uvicorn's httptools
protocol also has no header/URL size limit and no header or body read timeout, so those would be
hand-written on its internals anyway.  This server keeps only what an HTTP/1.1 reverse proxy
needs: keep-alive, pipelining, chunked and Content-Length bodies both ways, `Expect: 100-continue`,
HEAD, backpressure in both directions, client-disconnect events, an idle timeout, ASGI lifespan and
graceful shutdown.
Anything the app sends is trusted (it is our own app); what clients send is parsed by httptools
and refused with 400 when malformed, and bounded by `Limits`:

    request target + header lines > max_header_bytes ─▶ 431  exact per complete line (on_header),
                                                          and per read while a head is incomplete
                                                          (httptools joins a line's pieces itself:
                                                          an endless line is cut before it grows)
    request target             > max_url_bytes      ─▶ 414
    first byte → end of headers > header_timeout_s  ─▶ 408
    no body byte for              body_timeout_s    ─▶ 408  (not while the server paused reading)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

import httptools

# re-exported (`as`) while proxy/relay.py still imports it from here
from proxy.extensions import DISCONNECT_HOOK

log = logging.getLogger("interlock.server")

Message = MutableMapping[str, Any]
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Awaitable[None]]

_REASONS = {
    100: b"Continue", 200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content", 206: b"Partial Content",
    301: b"Moved Permanently", 302: b"Found", 304: b"Not Modified", 307: b"Temporary Redirect",
    400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 409: b"Conflict", 413: b"Payload Too Large", 414: b"URI Too Long",
    422: b"Unprocessable Entity", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large", 499: b"Client Closed Request", 500: b"Internal Server Error", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 529: b"Overloaded",
}
_STATUS_LINES: dict[int, bytes] = {}
_BODY_HIGH_WATER = 256 * 1024  # request-body bytes buffered before reading pauses
_PIPELINE_DEPTH = 32  # parsed requests waiting behind the one being answered before parsing stops
_FEED_SLICE = 4096  # bytes of request heads parsed at a time (bounds the requests one read can queue)
_DISCONNECT: Message = {"type": "http.disconnect"}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may send and how slowly (README: Edge limits; settings INTERLOCK_MAX_*)."""

    max_header_bytes: int = 64 * 1024  # request line and header section → 431
    max_url_bytes: int = 8 * 1024  # request target → 414
    header_timeout_s: float = 15.0  # first byte of a request to the end of its headers → 408
    body_timeout_s: float = 30.0  # longest wait for the next body byte → 408


class _Refused(Exception):
    """Raised from a parser callback: answer `status` and close."""

    def __init__(self, status: int, text: bytes) -> None:
        super().__init__(status, text)
        self.status, self.text = status, text


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
    return line


def _host_port(addr: Any) -> tuple[Any, ...] | None:
    """ASGI's (host, port) from a socket address (IPv6 ones carry flow info and scope id)."""
    return tuple(addr[:2]) if isinstance(addr, tuple) else None


def _simple_response(status: int, text: bytes) -> bytes:
    return (_status_line(status) + b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % len(text) + text)


class Server:
    """Serves one ASGI app.  `serve()` runs until `request_exit()`; then it stops accepting,
    lets requests in flight finish within `graceful_timeout_s`, closes idle connections and runs
    the app's lifespan shutdown.  Built and awaited on the loop that will run it."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 8080,
                 sock: socket.socket | None = None, lifespan: bool = True, keepalive_s: float = 5.0,
                 graceful_timeout_s: float = 10.0, limits: Limits | None = None,
                 on_started: Callable[[], None] | None = None) -> None:
        self.app = app
        self.on_started = on_started  # called once the socket accepts (after lifespan startup)
        self.limits = limits or Limits()
        self.host, self.port, self.sock = host, port, sock
        self.lifespan = lifespan
        self.keepalive_s = keepalive_s
        self.graceful_timeout_s = graceful_timeout_s
        self.started = False
        self.connections: set[_Connection] = set()
        self.state: dict[str, Any] = {}
        self._exit: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lifespan: _Lifespan | None = None
        self.all_closed: asyncio.Event | None = None  # set when the last connection closes (draining)

    def request_exit(self) -> None:
        """Ask a running `serve()` to stop; safe from any thread and from signal handlers."""
        loop, ev = self._loop, self._exit
        if loop is not None and ev is not None:
            loop.call_soon_threadsafe(ev.set)

    async def serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit = asyncio.Event()
        if self.lifespan:
            self._lifespan = _Lifespan(self.app, self.state)
            if not await self._lifespan.startup():
                raise RuntimeError("the application failed to start (see the log above)")
        try:
            server = await self._listen()
        except OSError:
            if self._lifespan is not None:
                await self._lifespan.shutdown()
            raise
        self.started = True
        if self.on_started is not None:
            self.on_started()
        try:
            await self._exit.wait()
        finally:
            server.close()
            await self._drain()
            if self._lifespan is not None:
                await self._lifespan.shutdown()

    async def _listen(self) -> asyncio.base_events.Server:
        loop = asyncio.get_running_loop()

        def factory() -> _Connection:
            return _Connection(self)

        if self.sock is not None:
            return await loop.create_server(factory, sock=self.sock, backlog=2048)
        return await loop.create_server(factory, host=self.host, port=self.port, backlog=2048, reuse_address=True)

    async def _drain(self) -> None:
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections:
            self.all_closed = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.all_closed.wait(), timeout=self.graceful_timeout_s)
        for conn in list(self.connections):
            conn.abort()


class _Lifespan:
    """ASGI lifespan: startup before the socket opens, shutdown after the last request."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        self.app = app
        self.state = state
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.failed = False
        self.task: asyncio.Task[None] | None = None

    async def startup(self) -> bool:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self.task = asyncio.create_task(self._run(scope))
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started.wait()
        return not self.failed

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopped.wait(), timeout=30)

    async def _run(self, scope: MutableMapping[str, Any]) -> None:
        try:
            await self.app(scope, self.inbox.get, self._send)
        except Exception:
            if self.started.is_set() or self.failed:
                log.exception("application lifespan failed")
            else:  # raised without a word: an app without lifespan support (uvicorn's "auto")
                log.debug("the application does not support the ASGI lifespan protocol", exc_info=True)
        finally:
            self.started.set()
            self.stopped.set()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.failed":
            self.failed = True
            log.error("application startup failed: %s", message.get("message", ""))
        if kind.startswith("lifespan.startup"):
            self.started.set()
        elif kind.startswith("lifespan.shutdown"):
            self.stopped.set()


class _NoCallbacks:
    """The protocol of a lost connection's parser: no `on_*` callbacks, no references."""

    __slots__ = ()


class _Connection(asyncio.Protocol):
    """One client connection.  httptools calls the on_* methods while `data_received` feeds it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.addr: tuple[Any, ...] | None = None
        self.client: tuple[Any, ...] | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.current: _Exchange | None = None  # the request being parsed (body still arriving)
        self.active: _Exchange | None = None  # the request whose response is being produced
        self.queue: deque[_Exchange] = deque()
        self.closed = False
        self.closing = False  # shutting down: finish the active exchange, then close
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.idle_deadline: float | None = None  # when an idle connection closes; None: busy
        # An `Upgrade:` request served as plain HTTP/1.1 (llhttp stops at its headers): body bytes
        # still to take from the stream ourselves; -1: refused (CONNECT, chunked); None: no upgrade.
        self.upgrade_left: int | None = None
        self.limits = server.limits
        self.head_bytes: int | None = None  # bytes of the request head fed so far; None: not in a head
        self.heads_done = 0
        self.head_size = 0  # request target and complete header lines of the head being parsed
        self.read_deadline: float | None = None  # when the request being read times out; None: not reading
        self.read_timer: asyncio.TimerHandle | None = None
        self.reading_paused = False  # by the server (backpressure, pipelining): the client is not late
        self.unparsed = b""  # read but not yet parsed: the pipeline was full (_PIPELINE_DEPTH)
        self.declared: bytes | None = None  # the Content-Length of the head being parsed
        self.body_left: int | None = None  # bytes of the Content-Length body being read not yet parsed

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        self.addr = _host_port(transport.get_extra_info("sockname"))
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = _host_port(transport.get_extra_info("peername"))
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # Let go of what a cut request left now: the parser holds this connection's bound methods
        # (a cycle only the GC frees, and its young-generation threshold is high: proxy/cli.py)
        # and up to max_header_bytes of an unfinished head; 1,000 refused endless headers held
        # +60 MB until the next collection.  Nothing is parsed after this.
        self.parser = httptools.HttpRequestParser(_NoCallbacks())
        self.headers, self.url, self.unparsed = [], b"", b""
        self.server.connections.discard(self)
        if not self.server.connections and self.server.all_closed is not None:
            self.server.all_closed.set()
        self._cancel_idle()
        self._cancel_read_timer()
        for ex in (self.active, self.current, *self.queue):
            if ex is not None:
                ex.client_gone()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._disarm_idle()
        if self.unparsed:
            self.unparsed += data
            self.pause_reading()
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Parse what was read: heads `_FEED_SLICE` bytes at a time, a Content-Length body in one
        piece.  Once `_PIPELINE_DEPTH` requests wait, the rest stays unparsed (and reading paused)
        until the queue moves (`_parse_unparsed`): one read cannot queue thousands of requests."""
        if not self.queue and len(data) <= _FEED_SLICE:  # nearly every read: one request, or its body
            self._parse_piece(data, 0)
            return
        view, pos = memoryview(data), 0
        while pos < len(data):
            if len(self.queue) >= _PIPELINE_DEPTH:
                self.unparsed = bytes(view[pos:])
                self.pause_reading()
                return
            end = pos + (self.body_left or _FEED_SLICE)
            if not self._parse_piece(view[pos:end], pos, data):
                return
            pos = end

    def _parse_unparsed(self) -> None:
        data, self.unparsed = self.unparsed, b""
        self._parse(data)

    def _parse_piece(self, piece: bytes | memoryview, pos: int, data: bytes | None = None) -> bool:
        """Feed `piece` (at `pos` in `data`, the read it comes from); False when the rest of the
        stream is not to be parsed as requests."""
        whole = piece if data is None else data
        if self.upgrade_left is not None:
            self._take_upgrade_body(bytes(whole[pos:]))
            return False
        try:
            self._feed(piece)
            return not self.closed and not (self.transport is not None and self.transport.is_closing())
        except httptools.HttpParserUpgrade as exc:
            self._take_upgrade_body(bytes(whole[pos + exc.args[0]:]) if exc.args else b"")
        except _Refused as exc:
            self._refuse(exc.status, exc.text)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refused):  # raised in a callback, wrapped by httptools
                self._refuse(exc.__context__.status, exc.__context__.text)
            else:
                self._refuse(400, b"Invalid HTTP request: " + str(exc).encode("utf-8", "replace"))
        return False

    def _feed(self, data: bytes | memoryview) -> None:
        """Feed the parser, a head never past `max_header_bytes`: a chunk that starts inside a
        head is fed up to the room left, and the rest only if that head ended.  (The part of a
        chunk after a head began is not counted: at most one read, so a head cannot grow
        unbounded between two checks, and httptools' joining of header pieces stays bounded.)"""
        while True:
            room = None if self.head_bytes is None else self.limits.max_header_bytes - self.head_bytes
            if room is None or len(data) <= room:
                if self.head_bytes is not None:
                    self.head_bytes += len(data)
                self.parser.feed_data(data)
                return
            heads, self.head_bytes = self.heads_done, self.limits.max_header_bytes
            self.parser.feed_data(data[:room])
            if self.heads_done == heads:
                raise _Refused(431, b"Request header fields too large (INTERLOCK_MAX_HEADER_BYTES)")
            data = data[room:]

    def eof_received(self) -> bool | None:
        return None  # close our side too; a client that half-closes is gone

    def pause_writing(self) -> None:
        """The transport's write buffer passed its high-water mark: the client reads slower than
        we answer, so read no more requests from it (and every `send` waits in `drain`)."""
        self.write_paused = True
        self.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self.resume_reading()

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.declared = None
        self.head_bytes = self.head_size = 0
        self._read_by(self.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_url_bytes:
            raise _Refused(414, b"Request target too long (INTERLOCK_MAX_URL_BYTES)")
        self.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Exact size check of a complete line (`_feed` bounds a line still arriving)."""
        self.head_size += len(name) + len(value) + 4
        if self.head_size > self.limits.max_header_bytes:
            raise _Refused(431, b"Request header fields too large (INTERLOCK_MAX_HEADER_BYTES)")
        name = name.lower()
        if name == b"content-length":
            self.declared = value
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.head_bytes = None
        self.heads_done += 1
        self._read_by(self.limits.body_timeout_s)
        declared = self.declared  # llhttp refuses a malformed, repeated or chunked Content-Length
        self.body_left = int(declared) if declared is not None and declared.isdigit() else None
        if parser.should_upgrade():
            self.upgrade_left = _upgrade_body_length(parser.get_method(), self.headers)
            if self.upgrade_left < 0:
                return
        url = httptools.parse_url(self.url)
        raw_path: bytes = url.path
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        method = parser.get_method().decode("ascii")
        version = parser.get_http_version()
        scope: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": version,
            "server": self.addr, "client": self.client, "scheme": "http", "method": method, "root_path": "",
            "path": path, "raw_path": raw_path, "query_string": url.query or b"", "headers": self.headers,
            "state": self.server.state.copy(),
        }
        ex = _Exchange(self, scope, keep_alive=parser.should_keep_alive(), head=method == "HEAD",
                       expect_continue=(b"expect", b"100-continue") in self.headers)
        scope["extensions"] = {DISCONNECT_HOOK: ex.on_disconnect}
        self.current = ex
        if self.upgrade_left is not None:
            ex.keep_alive = False  # the bytes after its body are not parsed: close after the response
        if self.active is None:
            self._start(ex)
        else:
            self.queue.append(ex)
            self.pause_reading()  # pipelined: one at a time

    def on_body(self, body: bytes) -> None:
        if self.body_left is not None:
            self.body_left -= len(body)
        self.read_deadline = self.loop.time() + self.limits.body_timeout_s
        ex = self.current
        if ex is not None and not ex.discard_body:
            ex.feed(body)

    def on_message_complete(self) -> None:
        if self.upgrade_left is not None:
            return  # llhttp ends an upgrade request at its headers; its body is taken by _take_upgrade_body
        self.read_deadline = None
        self.body_left = None
        ex = self.current
        if ex is not None:
            ex.body_complete()
        self.current = None

    def _take_upgrade_body(self, data: bytes) -> None:
        """An `Upgrade:` request (h2c from `curl --http2`) is served as HTTP/1.1, the upgrade
        ignored (RFC 9110 §7.8): its Content-Length body is taken here, anything after it is
        dropped and the connection closes after the response."""
        left, ex = self.upgrade_left, self.current
        if left is None or left < 0:
            self._refuse(400, b"Upgrade is not supported for CONNECT or a chunked body")
            return
        if ex is None:
            return  # body complete: the rest is not read
        take = data[:left]
        if take:
            self.read_deadline = self.loop.time() + self.limits.body_timeout_s
        if take and not ex.discard_body:
            ex.feed(take)
        self.upgrade_left = left - len(take)
        if self.upgrade_left == 0:
            self.read_deadline = None
            ex.body_complete()
            self.current = None
            self.pause_reading()

    # ------------------------------------------------------------ exchanges

    def _start(self, ex: _Exchange) -> None:
        self.active = ex
        ex.task = self.loop.create_task(ex.run())

    def exchange_done(self, ex: _Exchange) -> None:
        """The app finished `ex` (response complete or not): next request, idle, or close."""
        self.active = None
        if self.closed:
            return
        if not ex.keep_alive or not ex.response_complete or self.closing or not ex.request_complete:
            self._close()
            return
        if self.queue:
            self._start(self.queue.popleft())
            if self.unparsed:
                self._parse_unparsed()
            self.resume_reading()
        else:
            self._arm_idle()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        if self.write_paused and not self.closed:
            self.drained = self.loop.create_future()
            await self.drained

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed and not self.queue and not self.unparsed \
                and not self.write_paused and not self.transport.is_closing():
            self.reading_paused = False
            if self.read_deadline is not None:  # the client was not late while we did not read
                self.read_deadline = self.loop.time() + self.limits.body_timeout_s
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """Graceful stop: idle connections close now, busy ones after their response."""
        self.closing = True
        if self.active is None:
            self._close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _refuse(self, status: int, text: bytes) -> None:
        if self.active is None or not self.active.response_started:
            self.write(_simple_response(status, text))
        self._close()

    def _close(self) -> None:
        self._cancel_idle()
        self._cancel_read_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _arm_idle(self) -> None:
        """Idle from now: close after `keepalive_s` unless a request comes.  One timer per
        connection, re-armed lazily (`_on_idle_timer`), not one scheduled per request."""
        self.idle_deadline = deadline = self.loop.time() + self.server.keepalive_s
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_at(deadline, self._on_idle_timer)

    def _disarm_idle(self) -> None:
        self.idle_deadline = None

    def _on_idle_timer(self) -> None:
        """Runs when the idle timer fires: close if idle past the deadline, else wait on."""
        self.idle_timer = None
        deadline = self.idle_deadline
        if deadline is None:
            return  # busy: the next _arm_idle starts a timer
        if deadline - self.loop.time() > 0.005:  # idle again since (or a coarse clock): re-arm
            self.idle_timer = self.loop.call_at(deadline, self._on_idle_timer)
            return
        self._close()

    def _read_by(self, timeout_s: float) -> None:
        """The request being read must progress within `timeout_s`.  One timer per connection,
        re-armed lazily (`_on_read_timer`), like the idle timer."""
        self.read_deadline = deadline = self.loop.time() + timeout_s
        timer = self.read_timer
        if timer is not None and timer.when() > deadline:  # due later than this deadline: earlier
            timer.cancel()
            timer = None
        if timer is None:
            self.read_timer = self.loop.call_at(deadline, self._on_read_timer)

    def _on_read_timer(self) -> None:
        self.read_timer = None
        deadline = self.read_deadline
        if deadline is None or self.closed:
            return  # not reading a request: the next one arms a timer
        if self.reading_paused or (self.active is not None and self.active is not self.current):
            # our backpressure, or the client waits for an earlier answer: not late; look again later
            deadline = self.read_deadline = self.loop.time() + self.limits.body_timeout_s
        if deadline - self.loop.time() > 0.005:
            self.read_timer = self.loop.call_at(deadline, self._on_read_timer)
            return
        self._timed_out()

    def _timed_out(self) -> None:
        """408 for the request being read (when nothing else is being answered), then close."""
        ex, active = self.current, self.active
        if active is None or (active is ex and not active.response_started):
            self.write(_simple_response(408, b"Request timed out (INTERLOCK_HEADER_TIMEOUT_S / INTERLOCK_BODY_TIMEOUT_S)"))
        if ex is not None:
            ex.client_gone()
        self._close()

    def _cancel_read_timer(self) -> None:
        self.read_deadline = None
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _cancel_idle(self) -> None:
        self.idle_deadline = None
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None


class _Exchange:
    """One request/response: the ASGI `receive` and `send` the app is given."""

    __slots__ = ("conn", "scope", "keep_alive", "head", "expect_continue", "task", "body", "body_size",
                 "waiter", "gone", "response_started", "response_complete", "chunked",
                 "pending_head", "discard_body", "request_complete", "final_sent", "gone_callback")

    def __init__(self, conn: _Connection, scope: dict[str, Any], *, keep_alive: bool, head: bool,
                 expect_continue: bool) -> None:
        self.conn = conn
        self.scope: dict[str, Any] | None = scope  # until run() hands it to the app
        self.keep_alive = keep_alive
        self.head = head
        self.expect_continue = expect_continue
        self.task: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference
        self.body: list[bytes] = []
        self.body_size = 0
        self.request_complete = False
        self.waiter: asyncio.Future[None] | None = None
        self.gone = False
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.pending_head: bytes | None = None  # status line + headers, sent with the first body
        self.discard_body = False
        self.final_sent = False
        self.gone_callback: Callable[[], None] | None = None

    # ------------------------------------------------------------ from the connection

    def feed(self, data: bytes) -> None:
        self.body.append(data)
        self.body_size += len(data)
        if self.body_size > _BODY_HIGH_WATER:
            self.conn.pause_reading()
        self._wake()

    def body_complete(self) -> None:
        self.request_complete = True
        self._wake()

    def client_gone(self) -> None:
        self.gone = True
        self._wake()
        self._call_gone()

    def on_disconnect(self, callback: Callable[[], None] | None) -> None:
        """The DISCONNECT_HOOK extension: `callback()` runs once, from the connection's event
        (or at once when the client is already gone), unless the response completed first."""
        self.gone_callback = callback
        if self.gone:
            self._call_gone()

    def _call_gone(self) -> None:
        callback, self.gone_callback = self.gone_callback, None
        if callback is not None and not self.response_complete:
            callback()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # ------------------------------------------------------------ the app's side

    async def run(self) -> None:
        # Not kept: scope["extensions"] refers back to this exchange, and a cycle would leave
        # every served request to the garbage collector instead of reference counting.
        scope, self.scope = self.scope, None
        assert scope is not None
        try:
            await self.conn.server.app(scope, self.receive, self.send)
        except Exception:
            log.exception("unhandled error serving %s %s", scope["method"], scope["path"])
            if not self.response_started and not self.gone:
                self.conn.write(_simple_response(500, b"Internal Server Error"))
            self.keep_alive = False
        finally:
            if self.response_started and not self.response_complete:
                self.keep_alive = False
            self.conn.exchange_done(self)

    async def receive(self) -> Message:
        """Body chunks as they arrive; once the body ended, waits for the client to leave or the
        response to finish and then answers `http.disconnect`."""
        if self.expect_continue:
            self.expect_continue = False
            if not self.response_started:
                self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.final_sent:
            while not self.gone and not self.response_complete:
                await self._wait()
            return _DISCONNECT
        while not self.body and not self.request_complete and not self.gone:
            await self._wait()
        if self.body or self.request_complete:
            data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            self.body = []
            if self.body_size > _BODY_HIGH_WATER:
                self.conn.resume_reading()
            self.body_size = 0
            self.final_sent = self.request_complete
            return {"type": "http.request", "body": data, "more_body": not self.request_complete}
        return _DISCONNECT  # the client left mid-body

    async def _wait(self) -> None:
        self.waiter = self.conn.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.response_started:
                raise RuntimeError("http.response.start sent twice")
            self._start(message["status"], message.get("headers") or ())
        elif kind == "http.response.body":
            if not self.response_started:
                raise RuntimeError("http.response.body before http.response.start")
            if self.response_complete or self.gone:
                return
            await self._body(message.get("body", b""), message.get("more_body", False))

    def _start(self, status: int, headers: Any) -> None:
        self.response_started = True
        out = [_status_line(status)]
        length = False
        for name, value in headers:
            low = name.lower()
            if low == b"content-length":
                length = True
            elif low == b"connection":
                if value.lower() == b"close":
                    self.keep_alive = False
                continue
            elif low == b"transfer-encoding":
                continue
            out.append(b"%s: %s\r\n" % (name, value))
        no_body = self.head or status in (204, 304) or status < 200
        if not length and not no_body:
            self.chunked = True
            out.append(b"transfer-encoding: chunked\r\n")
        if not self.request_complete:
            self.keep_alive = False  # answered before the body ended (e.g. 413): the rest is not read
            self.discard_body = True
            self.body = []
        if not self.keep_alive:
            out.append(b"connection: close\r\n")
        out.append(b"\r\n")
        self.pending_head = b"".join(out)

    async def _body(self, data: bytes, more: bool) -> None:
        # Wait before writing, the last piece too: a pipelining client that never reads would
        # otherwise collect every queued answer in the transport's buffer (issue 13 #2).
        await self.conn.drain()
        if self.gone:
            return
        head, self.pending_head = self.pending_head, None
        if self.head:
            data = b""
        if self.chunked:
            payload = (b"%x\r\n%s\r\n" % (len(data), data)) if data else b""
            if not more:
                payload += b"0\r\n\r\n"
        else:
            payload = data
        if head is not None:
            payload = head + payload
        if payload:
            self.conn.write(payload)
        if not more:
            self.response_complete = True
            self._wake()


def _upgrade_body_length(method: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """The body length of a request asking to upgrade; -1 when it cannot be served as HTTP/1.1."""
    lengths = [v for k, v in headers if k == b"content-length"]
    if method == b"CONNECT" or any(k == b"transfer-encoding" for k, _ in headers) or len(lengths) > 1:
        return -1
    if not lengths:
        return 0
    return int(lengths[0]) if lengths[0].isdigit() else -1


async def run(app: ASGIApp, *, host: str, port: int, graceful_timeout_s: float = 10.0,
              limits: Limits | None = None) -> None:
    """`interlock serve`: serve until SIGINT/SIGTERM."""
    server = Server(app, host=host, port=port, graceful_timeout_s=graceful_timeout_s, limits=limits)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, server.request_exit)
    await server.serve()
