"""Upstream forwarding behind one narrow seam.

    Forwarder.send(method, url, headers, body) -> UpstreamResponse      raises UpstreamError
        UpstreamResponse: status, headers (raw bytes pairs), aiter_raw(), aclose(abort=False)

Three implementations (`make_forwarder` picks one; `INTERLOCK_UPSTREAM_CLIENT` = raw | aiohttp):
- `RawForwarder` (default, "raw"): HTTP/1.1 on asyncio.Protocol + httptools, with its own
  keep-alive pool.  It does only what a transparent proxy needs: the request goes out as one
  buffer, the response is parsed in C, body pieces are handed over as they arrive, and the read
  timeout is one lazily re-armed timer per connection.  `bench/forward_micro.py` (20,000 chat
  completions at C=16 against ../shared/bench/fake_upstream.py, client process CPU, medians of 3
  rounds on the 2-core bench VM): aiohttp 123 µs CPU/request, raw 36 µs (uvloop; 121 vs 33 µs
  on the plain asyncio loop), and ~2x the requests per second.  aiohttp's request path (yarl URLs,
  tracing hooks, cookie and header multidicts, timers per read) was ~15 % of the proxy's CPU.
- `AiohttpForwarder` ("aiohttp"): aiohttp's connection pool used directly; the previous default,
  kept selectable as a fallback should an upstream trip the raw client.  (Measured earlier:
  httpx's request/URL/cookie layers cost ~0.2 ms CPU per call on top of the transport, and
  httpx's own pool collapses at concurrency 64, hence no httpx by default.)
- `HttpxForwarder`: any `httpx.AsyncBaseTransport` (tests pass `httpx.MockTransport`; a
  deployment may pass a proxy-aware transport).  Same contract, same error mapping.  A transport
  passed to `make_forwarder` wins over the setting.

Bodies are streamed: `send()` returns once status and headers arrived; callers iterate
`aiter_raw()` (bytes exactly as received after de-chunking, never decompressed) and must
`aclose()`.  `abort=True` closes the upstream connection, so the upstream sees the cancel; a body
not read to its end is never pooled either.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol, cast
from urllib.parse import quote, urlsplit

import httptools

from proxy.settings import Settings

if TYPE_CHECKING:  # imported where used: neither serves the default client, both cost start-up time
    import aiohttp
    import httpx


class UpstreamError(Exception):
    """The upstream could not be reached, timed out, or broke the connection."""

    def __init__(self, message: str, *, timeout: bool) -> None:
        super().__init__(message)
        self.timeout = timeout


class UpstreamResponse(Protocol):
    status: int
    headers: list[tuple[bytes, bytes]]

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aclose(self, abort: bool = False) -> None: ...


class Forwarder(Protocol):
    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamResponse:
        """Request path: returns after the status line and headers; raises UpstreamError."""
        ...

    async def aclose(self) -> None: ...


def make_forwarder(settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> Forwarder:
    if transport is not None:
        return HttpxForwarder(settings, transport)
    if settings.upstream_client == "aiohttp":
        return AiohttpForwarder(settings)
    return RawForwarder(settings)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text and text != name else name


# ---------------------------------------------------------------- raw (default)

_HIGH_WATER = 256 * 1024  # buffered body bytes above which reading from the upstream pauses
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # send Content-Length: 0 when their body is empty
_TARGET_SAFE = "/?&=%:@!$'()*+,;~#[]"  # kept as is when a target needs quoting
_ORIGIN_CACHE_MAX = 256


class _Origin:
    """Where a request goes: parsed once per `scheme://netloc` prefix and cached by RawForwarder."""

    __slots__ = ("key", "host", "port", "tls", "host_header", "label")

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.key = (scheme, host, port)
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        shown = f"[{host}]" if ":" in host else host
        default = 443 if self.tls else 80
        text = shown if port == default else f"{shown}:{port}"
        self.host_header = text.encode("ascii") if text.isascii() else text.encode("idna")
        self.label = f"{shown}:{port}"


def _parse_origin(url: str) -> tuple[_Origin, str, str]:
    """Slow path of RawForwarder._route: (origin, its `scheme://netloc` prefix, request target)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise UpstreamError(f"bad upstream URL {url!r}: {exc}", timeout=False) from None
    if parts.scheme not in ("http", "https") or not host or "@" in parts.netloc:
        raise UpstreamError(f"unsupported upstream URL {url!r}", timeout=False)
    origin = _Origin(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return origin, f"{parts.scheme}://{parts.netloc}", target


def _target_bytes(target: str) -> bytes:
    """The request target as sent: ASCII as is, anything else percent-encoded (as yarl would)."""
    if target.isascii() and target.isprintable() and " " not in target:
        return target.encode("ascii")
    return quote(target, safe=_TARGET_SAFE).encode("ascii")


def _request_bytes(method: str, target: bytes, origin: _Origin, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> bytes:
    """Request line, Host, the given headers verbatim, Content-Length, and the body: one buffer."""
    parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nHost: ", origin.host_header]
    for name, value in headers:
        parts += (b"\r\n", name, b": ", value)
    if body or method in _BODY_METHODS:
        parts += (b"\r\nContent-Length: ", b"%d" % len(body))
    parts += (b"\r\n\r\n", body)
    return b"".join(parts)


def _connect_error(origin: _Origin, exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {origin.label}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {origin.host!r}: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {origin.label} failed: {exc.reason or exc}"
    return f"cannot connect to {origin.label}: {exc.strerror or exc}"


class _Conn(asyncio.Protocol):
    """One upstream HTTP/1.1 connection and the response currently being read from it.

    Owned by RawForwarder: idle in its pool (`idle`) or serving one request at a time.  Parser
    callbacks (`on_*`) run inside `data_received` and only record state; the reading side
    (`exchange`, `_RawResponse.__anext__`) is woken at most once per `data_received`.
    """

    __slots__ = (
        "owner", "origin", "loop", "idle", "idle_since", "reused", "counted", "status", "headers",
        "headers_done", "complete", "keep_alive", "chunks", "buffered", "failure", "got_bytes",
        "_transport", "_parser", "_head", "_interim", "_lost", "_paused", "_waiter", "_timer", "_deadline",
        "_read_timeout",
    )

    def __init__(self, owner: RawForwarder, origin: _Origin, loop: asyncio.AbstractEventLoop,
                 read_timeout: float) -> None:
        self.owner = owner
        self.origin = origin
        self.loop = loop
        self.idle = False
        self.idle_since = 0.0
        self.reused = False
        self.counted = True
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.failure: tuple[str, bool] | None = None  # (message, timeout)
        self.got_bytes = False
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._head = False
        self._interim = False
        self._lost = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._read_timeout = read_timeout

    # -------------------------------------------------- reading side (the request's task)

    @property
    def usable(self) -> bool:
        """Still open and not broken: may carry a new request."""
        return not self._lost and self._transport is not None and not self._transport.is_closing()

    def reusable(self) -> bool:
        """At check-in: the response was read to its end and both sides keep the connection."""
        return self.complete and self.keep_alive and self.failure is None and not self.chunks and self.usable

    async def exchange(self, payload: bytes, head: bool) -> None:
        """Send one request and return once its status line and headers were parsed.

        Raises UpstreamError (timeout or connection ended); CancelledError passes through.  Either
        way the caller discards the connection.
        """
        self._begin(head)
        assert self._transport is not None
        self._transport.write(payload)
        while not self.headers_done:
            self.raise_failure()
            await self.wait()

    def _begin(self, head: bool) -> None:
        """Reset the per-response state; a parser left waiting for a HEAD body is replaced."""
        if self._head:
            self._parser = httptools.HttpResponseParser(self)
        self._head = head
        self.status = 0
        self.headers = []
        self.headers_done = self.complete = self.keep_alive = self.got_bytes = self._interim = False
        self.failure = None
        self.chunks.clear()
        self.buffered = 0

    def raise_failure(self) -> None:
        if self.failure is not None:
            message, timeout = self.failure
            raise UpstreamError(message, timeout=timeout)

    async def wait(self) -> None:
        """Park the reader until data, the end, or a failure; (re)starts the read-timeout window.

        The timer is armed lazily: one `call_at` per connection that, when it fires early because
        the window moved on, re-arms itself for the current deadline instead of being rescheduled
        on every read.
        """
        loop = self.loop
        self._waiter = waiter = loop.create_future()
        self._deadline = loop.time() + self._read_timeout
        if self._timer is None:
            self._timer = loop.call_at(self._deadline, self._on_timer)
        try:
            await waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        """Hand everything buffered to the reader; resumes reading if flow control paused it."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self._paused:
            self._paused = False
            if self.usable:
                assert self._transport is not None
                self._transport.resume_reading()
        return data

    def close(self) -> None:
        """Drop the connection now (no graceful drain): the upstream sees the close at once (idempotent)."""
        self._lost = True
        self._cancel_timer()
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                transport.abort()

    # -------------------------------------------------- event-loop callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        """Runs per socket read: parse, wake the reader once, pause if the reader lags."""
        if self.idle or self._lost:
            self.close()  # bytes nobody asked for: the connection is out of step
            if self.idle:
                self.owner.lost_idle(self)
            return
        if self.complete:
            self.keep_alive = False  # more than the response: never reuse this connection
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.complete:
                self.failure = (f"{self.origin.label} sent an invalid HTTP response ({exc!r})", False)
                self.close()
        self._wake()
        if self.buffered > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._ended(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        self._lost = True
        self._cancel_timer()
        if self.idle:
            self.owner.lost_idle(self)

    def _ended(self, exc: Exception | None) -> None:
        """The upstream closed (or reset) the connection: either the body's natural end, or a failure."""
        if self.idle or self.complete or self.failure is not None:
            return
        if exc is None and self.headers_done and self._close_delimited():
            self.complete = True
            self.keep_alive = False
        else:
            how = "reset" if exc is not None else "closed"
            if not self.got_bytes:
                where = "before sending a response"
            elif not self.headers_done:
                where = "in the middle of the response headers"
            else:
                where = "before the response body ended"
            self.failure = (f"{self.origin.label} {how} the connection {where}", False)
        self._wake()

    def _close_delimited(self) -> bool:
        """No Content-Length and not chunked: the body ends when the connection does (rare path)."""
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length" or (lower == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timer(self) -> None:
        """Runs when the read-timeout timer fires: re-arm if the window moved, else fail the read."""
        self._timer = None
        if self._waiter is None:
            return  # nobody is reading; the next wait() arms a fresh timer
        if self._deadline - self.loop.time() > 0.005:  # early (coarse loop clocks): re-arm
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        gap = f"{self._read_timeout:g} s"
        if self.headers_done:
            self.failure = (f"no data from {self.origin.label} for {gap} (read timeout)", True)
        else:
            self.failure = (f"no response from {self.origin.label} within {gap} (read timeout)", True)
        self.close()
        self._wake()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -------------------------------------------------- httptools callbacks (inside feed_data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:  # chunked trailers come later; they are not headers
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.headers_done:  # a second response in one read: the upstream is out of step
            self.keep_alive = False
            return
        status = self._parser.get_status_code()
        if status < 200:  # interim 1xx (100 Continue, 103 Early Hints): its own message, no body
            self.headers = []
            self._interim = True
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self.headers_done = True
        if self._head:  # llhttp cannot be told to skip the body announced for a HEAD
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.chunks.append(body)
            self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True


class _RawResponse:
    """What RawForwarder.send returns; iterating it reads the body, `aclose` gives the connection back."""

    __slots__ = ("status", "headers", "_conn", "_owner")

    def __init__(self, owner: RawForwarder, conn: _Conn) -> None:
        self._owner = owner
        self._conn: _Conn | None = conn
        self.status = conn.status
        self.headers = conn.headers

    def aiter_raw(self) -> _RawResponse:
        return self

    def __aiter__(self) -> _RawResponse:
        return self

    async def __anext__(self) -> bytes:
        """Everything buffered so far, as one piece; waits (read timeout) when nothing is."""
        conn = self._conn
        if conn is None:
            raise StopAsyncIteration
        while not conn.chunks:
            if conn.complete:
                raise StopAsyncIteration
            conn.raise_failure()
            await conn.wait()
        return conn.take()

    async def aclose(self, abort: bool = False) -> None:
        """Pool the connection when the body was read to its end and `abort` is false; else close it."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._owner.checkin(conn, reuse=not abort)


class RawForwarder:
    """HTTP/1.1 client on asyncio.Protocol + httptools: a keep-alive pool and nothing else.

    Pools are per (scheme, host, port), idle connections reused last-in first-out and closed after
    `idle_timeout_s`; at most `upstream_max_connections` are open at once (a request waits for a
    slot, or closes another upstream's idle connection to make one).  Loop-bound state is created
    on the first `send`, so the forwarder can be built outside the loop that uses it.  `ssl_context`
    replaces the default TLS context (a private CA, a client certificate).
    """

    def __init__(self, settings: Settings, *, idle_timeout_s: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._cap = settings.upstream_max_connections
        self._connect_timeout = settings.connect_timeout_s
        self._read_timeout = settings.read_timeout_s
        self._idle_timeout = idle_timeout_s
        self._sweep_every = max(0.05, min(10.0, idle_timeout_s / 4))
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._ssl = ssl_context  # None: the system's default trust store, made on the first https call
        self._closed = False

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamResponse:
        """Request path: returns after the status line and headers; raises UpstreamError.

        A pooled connection that the upstream closed before answering (the keep-alive race) is
        retried once on a new connection; any other failure or a cancellation closes it.
        """
        if self._closed:
            raise UpstreamError("the upstream client is closed", timeout=False)
        if self._loop is not asyncio.get_running_loop():
            self._bind()
        origin, target = self._route(url)
        payload = _request_bytes(method, target, origin, headers, body)
        head = method == "HEAD"
        conn = await self._checkout(origin, fresh=False)
        try:
            try:
                await conn.exchange(payload, head)
            except UpstreamError as exc:
                if not conn.reused or conn.got_bytes or exc.timeout:
                    raise
                self._discard(conn)
                conn = await self._checkout(origin, fresh=True)
                await conn.exchange(payload, head)
        except BaseException:
            self._discard(conn)
            raise
        return _RawResponse(self, conn)

    async def aclose(self) -> None:
        """Close every idle connection; in-flight ones close when their response is closed."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.idle = False
                self._discard(conn)
        self._idle.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._wake_waiter(every=True)

    # -------------------------------------------------- routing

    def _route(self, url: str) -> tuple[_Origin, bytes]:
        """(origin, request target): a dict hit on the `scheme://netloc` prefix in the common case."""
        cut = url.find("/", 8)
        origin = self._origins.get(url[:cut] if cut >= 0 else url)
        if origin is not None:
            return origin, _target_bytes(url[cut:] if cut >= 0 else "/")
        origin, prefix, target = _parse_origin(url)
        if prefix == (url[:cut] if cut >= 0 else url):
            if len(self._origins) >= _ORIGIN_CACHE_MAX:
                self._origins.clear()
            self._origins[prefix] = origin
        return origin, _target_bytes(target)

    # -------------------------------------------------- the pool

    def _bind(self) -> None:
        """First send on this loop: forget connections that belong to another (earlier) loop."""
        self._loop = asyncio.get_running_loop()
        self._idle = {}
        self._open = 0
        self._waiters = collections.deque()
        self._sweeper = None

    async def _checkout(self, origin: _Origin, *, fresh: bool) -> _Conn:
        """A connection for `origin`: the newest idle one (unless `fresh`), else a new one within the cap."""
        while True:
            if self._closed:
                raise UpstreamError("the upstream client is closed", timeout=False)
            idle = None if fresh else self._idle.get(origin.key)
            while idle:
                conn = idle.pop()
                conn.idle = False
                if conn.usable:
                    conn.reused = True
                    return conn
                self._discard(conn)
            if self._open < self._cap or self._evict_idle():
                return await self._connect(origin)
            await self._wait_slot()

    async def _connect(self, origin: _Origin) -> _Conn:
        """Open a connection (counted against the cap from the start); raises UpstreamError."""
        assert self._loop is not None
        loop = self._loop
        conn = _Conn(self, origin, loop, self._read_timeout)
        self._open += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                if origin.tls:
                    await loop.create_connection(lambda: conn, origin.host, origin.port, ssl=self._tls(),
                                                 server_hostname=origin.host)
                else:
                    await loop.create_connection(lambda: conn, origin.host, origin.port)
        except TimeoutError:
            self._discard(conn)
            raise UpstreamError(f"no connection to {origin.label} within {self._connect_timeout:g} s",
                                timeout=True) from None
        except OSError as exc:
            self._discard(conn)
            raise UpstreamError(_connect_error(origin, exc), timeout=False) from exc
        except BaseException:
            self._discard(conn)
            raise
        return conn

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def checkin(self, conn: _Conn, *, reuse: bool) -> None:
        """Runs when a response is closed: pool its connection if reusable, else close it."""
        if not (reuse and not self._closed and conn.loop is self._loop and conn.reusable()):
            self._discard(conn)
            return
        assert self._loop is not None
        conn.idle = True
        conn.idle_since = self._loop.time()
        self._idle.setdefault(conn.origin.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)
        self._wake_waiter()

    def lost_idle(self, conn: _Conn) -> None:
        """Runs when an idle connection closes or misbehaves: it leaves the pool for good."""
        conns = self._idle.get(conn.origin.key)
        if conns is not None and conn in conns:
            conns.remove(conn)
        conn.idle = False
        self._discard(conn)

    def _discard(self, conn: _Conn) -> None:
        """Close a connection and free its slot (idempotent)."""
        conn.close()
        if conn.counted:
            conn.counted = False
            if conn.loop is self._loop:
                self._open -= 1
                self._wake_waiter()

    def _evict_idle(self) -> bool:
        """At the cap: close the longest-idle connection of any upstream to make room."""
        oldest: list[_Conn] | None = None
        for conns in self._idle.values():
            if conns and (oldest is None or conns[0].idle_since < oldest[0].idle_since):
                oldest = conns
        if oldest is None:
            return False
        conn = oldest.pop(0)
        conn.idle = False
        self._discard(conn)
        return True

    def _sweep(self) -> None:
        """Runs every few seconds while anything is idle: closes connections idle too long."""
        assert self._loop is not None
        self._sweeper = None
        cutoff = self._loop.time() - self._idle_timeout
        for conns in self._idle.values():
            while conns and conns[0].idle_since <= cutoff:
                conn = conns.pop(0)
                conn.idle = False
                self._discard(conn)
        if any(self._idle.values()):
            self._sweeper = self._loop.call_later(self._sweep_every, self._sweep)

    async def _wait_slot(self) -> None:
        """Wait until a connection closes or turns idle; passes the wake-up on if cancelled meanwhile."""
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake_waiter()
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _wake_waiter(self, every: bool = False) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not every:
                    return



# ---------------------------------------------------------------- aiohttp


class _AiohttpResponse:
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = list(resp.raw_headers)

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        import aiohttp

        content = self._resp.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(_describe(exc), timeout=False) from exc
        except TimeoutError as exc:
            raise UpstreamError("no data within the read timeout", timeout=True) from exc

    async def aclose(self, abort: bool = False) -> None:
        if abort:
            self._resp.close()
        else:
            self._resp.release()


class AiohttpForwarder:
    def __init__(self, settings: Settings) -> None:
        import aiohttp

        self._limit = settings.upstream_max_connections
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout_s, sock_read=settings.read_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=60, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._timeout, auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type"), cookie_jar=aiohttp.DummyCookieJar(),
        )
        return self._session

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamResponse:
        import aiohttp

        session = self._session or self._open()
        hdrs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        try:
            resp = await session.request(method, url, headers=hdrs, data=body or None, allow_redirects=False,
                                         compress=False)
        except TimeoutError as exc:
            raise UpstreamError("no response within the timeout", timeout=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(_describe(exc), timeout=False) from exc
        return _AiohttpResponse(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


# ---------------------------------------------------------------- httpx


class _HttpxResponse:
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers = list(resp.headers.raw)

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamError(_describe(exc), timeout=True) from exc
        except httpx.TransportError as exc:
            raise UpstreamError(_describe(exc), timeout=False) from exc

    async def aclose(self, abort: bool = False) -> None:
        await self._resp.aclose()


class HttpxForwarder:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport) -> None:
        import httpx

        self._timeout = httpx.Timeout(connect=settings.connect_timeout_s, read=settings.read_timeout_s,
                                      write=settings.read_timeout_s, pool=settings.connect_timeout_s)
        self._client = httpx.AsyncClient(transport=transport, timeout=self._timeout)

    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamResponse:
        import httpx

        request = httpx.Request(method, url, headers=headers, content=body or None)
        request.extensions["timeout"] = self._timeout.as_dict()
        try:
            return _HttpxResponse(await self._client.send(request, stream=True))
        except httpx.TimeoutException as exc:
            raise UpstreamError(_describe(exc), timeout=True) from exc
        except httpx.TransportError as exc:
            raise UpstreamError(_describe(exc), timeout=False) from exc

    async def aclose(self) -> None:
        await self._client.aclose()


__all__ = ["Forwarder", "UpstreamError", "UpstreamResponse", "make_forwarder"]
