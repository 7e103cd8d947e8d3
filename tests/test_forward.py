"""RawForwarder (proxy/forward.py) against real loopback servers.

The project's fake model upstream covers the ordinary JSON and SSE paths; `RawServer` below is a
bare asyncio server, on the test's own loop, for framing and failure cases the fake cannot produce
(close-delimited bodies, silent closes, hangs, truncated bodies) and for counting connections.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.forward import AiohttpForwarder, HttpxForwarder, RawForwarder, UpstreamError, make_forwarder
from proxy.settings import load_settings
from tests.fake_upstream import FakeUpstream, Reply

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[[Reader, Writer], Awaitable[None]]
JSON = [(b"content-type", b"application/json")]


class RawServer:
    """`async with RawServer(handler) as srv:` — srv.url; counts connections, open and peak."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.peak = 0
        self.client_closed = asyncio.Event()  # set when a handler saw EOF from the client
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: Reader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()
            self._tasks.discard(task)

    async def until_client_closed(self, reader: Reader) -> None:
        """Inside a handler: wait for the client to close its side, then note it."""
        while await reader.read(65536):
            pass
        self.client_closed.set()


async def read_request(reader: Reader) -> tuple[bytes, bytes] | None:
    """One request (head, body) off the connection, or None when the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, (await reader.readexactly(length) if length else b"")


def response(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunked_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def forwarder(**overrides: Any) -> RawForwarder:
    return RawForwarder(load_settings(**{"read_timeout_s": 5.0, "connect_timeout_s": 2.0, **overrides}))


async def fetch(fwd: RawForwarder, url: str, method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
    resp = await fwd.send(method, url, [], body)
    try:
        return resp.status, b"".join([c async for c in resp.aiter_raw()])
    finally:
        await resp.aclose()


async def keep_alive(reader: Reader, writer: Writer) -> None:
    """Answers every request on the connection with `ok <n>`."""
    n = 0
    while await read_request(reader) is not None:
        n += 1
        writer.write(response(b"ok %d" % n))
        await writer.drain()


# ------------------------------------------------------------------ ordinary traffic (fake upstream)


async def test_json_round_trip_sends_headers_verbatim_and_returns_the_exact_bytes(upstream: FakeUpstream) -> None:
    payload = b'{"id":"x","choices":[{"message":{"content":"caf\xc3\xa9"}}]}'
    upstream.script(Reply(body=payload, headers={"X-Custom": "yes"}))
    fwd = forwarder()
    body = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    headers = [(b"content-type", b"application/json"), (b"Authorization", b"Bearer sk-1")]
    resp = await fwd.send("POST", upstream.url + "/v1/chat/completions?api-version=2", headers, body)
    got = b"".join([c async for c in resp.aiter_raw()])
    await resp.aclose()
    await fwd.aclose()
    assert resp.status == 200 and got == payload
    assert (b"x-custom", b"yes") in resp.headers and (b"content-length", b"%d" % len(payload)) in resp.headers
    rec = upstream.last
    assert rec.method == "POST" and rec.path == "/v1/chat/completions" and rec.query == "api-version=2"
    assert rec.body == body and rec.header("authorization") == "Bearer sk-1"
    assert rec.header("host") == upstream.url.removeprefix("http://")
    assert rec.header("content-length") == str(len(body))


async def test_sse_chunks_arrive_before_the_upstream_wrote_the_last(upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["early ", "late"], gate_after=2))
    fwd = forwarder()
    body = orjson.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    resp = await fwd.send("POST", upstream.url + "/v1/chat/completions", JSON, body)
    assert dict(resp.headers)[b"content-type"].startswith(b"text/event-stream")
    seen = b""
    it = resp.aiter_raw().__aiter__()
    while b"early" not in seen:
        seen += await it.__anext__()
    assert await upstream.until_gate() and not upstream.last.completed
    upstream.release()
    seen += b"".join([c async for c in it])
    await resp.aclose()
    await fwd.aclose()
    assert b"late" in seen and seen.endswith(b"data: [DONE]\n\n")


# ------------------------------------------------------------------ framing


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close-delimited", "no-content"])
async def test_body_framings(framing: str) -> None:
    parts = [b"alpha ", b"beta ", b"gamma"]
    whole = b"".join(parts)

    async def handler(reader: Reader, writer: Writer) -> None:
        while (req := await read_request(reader)) is not None:
            if not req[0].startswith(b"GET /x "):
                writer.write(response(b"ok"))
            elif framing == "content-length":
                writer.write(response(whole))
            elif framing == "chunked":
                writer.write(chunked_head() + b"".join(chunk(p) for p in parts) + b"0\r\nX-Trailer: t\r\n\r\n")
            elif framing == "close-delimited":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + parts[0])
                await writer.drain()
                await asyncio.sleep(0.02)
                writer.write(b"".join(parts[1:]))
                return
            else:
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
            await writer.drain()

    async with RawServer(handler) as srv:
        fwd = forwarder()
        status, body = await fetch(fwd, srv.url + "/x")
        assert (status, body) == ((204, b"") if framing == "no-content" else (200, whole))
        assert await fetch(fwd, srv.url + "/y") == (200, b"ok")
        await fwd.aclose()
        assert srv.connections == (2 if framing == "close-delimited" else 1)


async def test_head_response_announcing_a_length_has_no_body_and_the_connection_is_reused() -> None:
    async def handler(reader: Reader, writer: Writer) -> None:
        req = await read_request(reader)
        assert req is not None and req[0].startswith(b"HEAD /h HTTP/1.1\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
        await keep_alive(reader, writer)

    async with RawServer(handler) as srv:
        fwd = forwarder()
        resp = await fwd.send("HEAD", srv.url + "/h", [], b"")
        assert resp.status == 200 and (b"Content-Length", b"1234") in resp.headers
        assert [c async for c in resp.aiter_raw()] == []
        await resp.aclose()
        assert await fetch(fwd, srv.url + "/after") == (200, b"ok 1")
        await fwd.aclose()
        assert srv.connections == 1


async def test_a_slow_reader_still_gets_every_byte_of_a_large_body() -> None:
    blob = bytes(range(256)) * 8192  # 2 MiB, well over the pause threshold

    async def handler(reader: Reader, writer: Writer) -> None:
        await read_request(reader)
        writer.write(response(blob))
        await writer.drain()
        await keep_alive(reader, writer)

    async with RawServer(handler) as srv:
        fwd = forwarder()
        resp = await fwd.send("GET", srv.url + "/big", [], b"")
        got = []
        async for piece in resp.aiter_raw():
            got.append(piece)
            await asyncio.sleep(0.01)
        await resp.aclose()
        assert b"".join(got) == blob
        assert await fetch(fwd, srv.url + "/again") == (200, b"ok 1")
        await fwd.aclose()


# ------------------------------------------------------------------ the pool


async def test_sequential_requests_share_one_keep_alive_connection() -> None:
    async with RawServer(keep_alive) as srv:
        fwd = forwarder()
        got = [await fetch(fwd, srv.url + f"/n{i}", "POST", b"{}") for i in range(3)]
        await fwd.aclose()
    assert got == [(200, b"ok 1"), (200, b"ok 2"), (200, b"ok 3")]
    assert srv.connections == 1


async def test_a_pooled_connection_the_server_closed_is_never_used() -> None:
    async def one_shot(reader: Reader, writer: Writer) -> None:
        await read_request(reader)
        writer.write(response(b"once"))
        await writer.drain()

    async with RawServer(one_shot) as srv:
        fwd = forwarder()
        assert await fetch(fwd, srv.url + "/a") == (200, b"once")
        await asyncio.sleep(0.05)  # the close reaches the idle connection
        assert await fetch(fwd, srv.url + "/b") == (200, b"once")
        await fwd.aclose()
        assert srv.connections == 2


async def test_keep_alive_race_is_retried_once_on_a_new_connection() -> None:
    async def answers_once_then_drops_the_next(reader: Reader, writer: Writer) -> None:
        await read_request(reader)
        writer.write(response(b"first"))
        await writer.drain()
        await read_request(reader)  # the next request arrives on the pooled connection: close unanswered

    async with RawServer(answers_once_then_drops_the_next) as srv:
        fwd = forwarder()
        assert await fetch(fwd, srv.url + "/a") == (200, b"first")
        assert await fetch(fwd, srv.url + "/b", "POST", b"{}") == (200, b"first")
        await fwd.aclose()
        assert srv.connections == 2


async def test_a_new_connection_closed_without_a_response_is_an_error_not_a_retry() -> None:
    async def drops(reader: Reader, writer: Writer) -> None:
        await read_request(reader)

    async with RawServer(drops) as srv:
        fwd = forwarder()
        with pytest.raises(UpstreamError) as err:
            await fwd.send("POST", srv.url + "/a", [], b"{}")
        await fwd.aclose()
    assert not err.value.timeout and "before sending a response" in str(err.value)
    assert srv.connections == 1


async def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    async def serve_then_watch(reader: Reader, writer: Writer) -> None:
        await read_request(reader)
        writer.write(response(b"hi"))
        await writer.drain()
        await srv.until_client_closed(reader)

    async with RawServer(serve_then_watch) as srv:
        fwd = RawForwarder(load_settings(), idle_timeout_s=0.2)
        assert await fetch(fwd, srv.url + "/a") == (200, b"hi")
        await asyncio.wait_for(srv.client_closed.wait(), 3)
        await fwd.aclose()


async def test_the_connection_cap_is_honoured_and_waiters_get_served() -> None:
    async def slow(reader: Reader, writer: Writer) -> None:
        while await read_request(reader) is not None:
            await asyncio.sleep(0.1)
            writer.write(response(b"slow"))
            await writer.drain()

    async with RawServer(slow) as srv:
        fwd = forwarder(upstream_max_connections=2)
        got = await asyncio.gather(*(fetch(fwd, srv.url + f"/{i}") for i in range(5)))
        await fwd.aclose()
    assert got == [(200, b"slow")] * 5
    assert srv.peak == 2 and srv.connections == 2


# ------------------------------------------------------------------ failures


async def test_connection_refused_is_an_upstream_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fwd = forwarder()
    with pytest.raises(UpstreamError) as err:
        await fwd.send("GET", f"http://127.0.0.1:{port}/v1/models", [], b"")
    await fwd.aclose()
    assert not err.value.timeout
    assert str(err.value) == f"connection refused by 127.0.0.1:{port}"


async def test_no_status_line_within_the_read_timeout_is_a_timeout() -> None:
    async def hangs(reader: Reader, writer: Writer) -> None:
        await read_request(reader)
        await srv.until_client_closed(reader)

    async with RawServer(hangs) as srv:
        fwd = forwarder(read_timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(UpstreamError) as err:
            await fwd.send("POST", srv.url + "/v1/chat/completions", [], b"{}")
        elapsed = time.monotonic() - started
        await asyncio.wait_for(srv.client_closed.wait(), 3)
        await fwd.aclose()
    assert err.value.timeout and "no response" in str(err.value)
    assert 0.25 <= elapsed < 1.5


async def test_a_gap_mid_stream_longer_than_the_read_timeout_is_a_timeout() -> None:
    async def stalls(reader: Reader, writer: Writer) -> None:
        await read_request(reader)
        writer.write(chunked_head() + chunk(b"data: 1\n\n"))
        await srv.until_client_closed(reader)

    async with RawServer(stalls) as srv:
        fwd = forwarder(read_timeout_s=0.3)
        resp = await fwd.send("GET", srv.url + "/s", [], b"")
        it = resp.aiter_raw().__aiter__()
        assert await it.__anext__() == b"data: 1\n\n"
        started = time.monotonic()
        with pytest.raises(UpstreamError) as err:
            await it.__anext__()
        assert err.value.timeout and 0.25 <= time.monotonic() - started < 1.5
        await resp.aclose(abort=True)
        await asyncio.wait_for(srv.client_closed.wait(), 3)
        await fwd.aclose()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_eof_mid_body_is_an_upstream_error_after_the_bytes_that_came(framing: str) -> None:
    async def truncates(reader: Reader, writer: Writer) -> None:
        await read_request(reader)
        if framing == "content-length":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        else:
            writer.write(chunked_head() + chunk(b"0123456789"))
        await writer.drain()
        await asyncio.sleep(0.05)

    async with RawServer(truncates) as srv:
        fwd = forwarder()
        resp = await fwd.send("GET", srv.url + "/t", [], b"")
        got = b""
        with pytest.raises(UpstreamError) as err:
            async for piece in resp.aiter_raw():
                got += piece
        await resp.aclose()
        await fwd.aclose()
    assert got == b"0123456789"
    assert not err.value.timeout and "before the response body ended" in str(err.value)


# ------------------------------------------------------------------ the client goes away


async def streaming(reader: Reader, writer: Writer, srv: RawServer) -> None:
    """First request: an endless SSE stream (one event per 20 ms) until the client closes."""
    await read_request(reader)
    writer.write(chunked_head())
    watcher = asyncio.ensure_future(srv.until_client_closed(reader))
    try:
        while not watcher.done():
            writer.write(chunk(b"data: tick\n\n"))
            await writer.drain()
            await asyncio.sleep(0.02)
    finally:
        watcher.cancel()


async def test_abort_closes_the_upstream_connection() -> None:
    async with RawServer(lambda r, w: streaming(r, w, srv)) as srv:
        fwd = forwarder()
        resp = await fwd.send("POST", srv.url + "/v1/chat/completions", JSON, b"{}")
        it = resp.aiter_raw().__aiter__()
        assert (await it.__anext__()).startswith(b"data: tick")
        await resp.aclose(abort=True)
        await asyncio.wait_for(srv.client_closed.wait(), 3)
        await fwd.aclose()


async def test_cancelling_the_reader_mid_stream_closes_the_connection_and_never_pools_it() -> None:
    async def handler(reader: Reader, writer: Writer) -> None:
        if srv.connections == 1:
            await streaming(reader, writer, srv)
        else:
            await keep_alive(reader, writer)

    async with RawServer(handler) as srv:
        fwd = forwarder()
        first = asyncio.Event()

        async def consume() -> None:  # what the relay does, with the least careful aclose
            resp = await fwd.send("POST", srv.url + "/v1/chat/completions", JSON, b"{}")
            try:
                async for _ in resp.aiter_raw():
                    first.set()
            finally:
                await resp.aclose()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(srv.client_closed.wait(), 3)
        assert await fetch(fwd, srv.url + "/next") == (200, b"ok 1")
        await fwd.aclose()
        assert srv.connections == 2


async def test_cancelling_while_waiting_for_the_headers_closes_the_connection() -> None:
    async def hangs(reader: Reader, writer: Writer) -> None:
        await read_request(reader)
        await srv.until_client_closed(reader)

    async with RawServer(hangs) as srv:
        fwd = forwarder(upstream_max_connections=1)
        task = asyncio.create_task(fwd.send("POST", srv.url + "/x", [], b"{}"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(srv.client_closed.wait(), 3)
        assert fwd._open == 0  # the slot came back with the connection
        await fwd.aclose()


# ------------------------------------------------------------------ wiring


def test_make_forwarder_defaults_to_raw_and_honours_the_setting_and_a_transport() -> None:
    assert isinstance(make_forwarder(load_settings()), RawForwarder)
    assert isinstance(make_forwarder(load_settings(upstream_client="aiohttp")), AiohttpForwarder)
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    assert isinstance(make_forwarder(load_settings(), mock), HttpxForwarder)


def test_works_on_uvloop(upstream: FakeUpstream) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        fwd = forwarder()
        body = orjson.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]})
        for _ in range(3):
            resp = await fwd.send("POST", upstream.url + "/v1/chat/completions", JSON, body)
            data = b"".join([c async for c in resp.aiter_raw()])
            await resp.aclose()
            assert resp.status == 200 and data.endswith(b"data: [DONE]\n\n")
        status, models = await fetch(fwd, upstream.url + "/v1/models")
        assert status == 200 and orjson.loads(models)["object"] == "list"
        await fwd.aclose()

    uvloop.run(main())
    assert len(upstream.requests) == 4


async def test_https_with_a_private_ca(tmp_path: Path) -> None:
    server_tls, client_tls = self_signed_tls(tmp_path)
    seen: list[bytes] = []

    async def handler(reader: Reader, writer: Writer) -> None:
        while (req := await read_request(reader)) is not None:
            seen.append(req[0])
            writer.write(response(b"secret"))
            await writer.drain()

    server = await asyncio.start_server(lambda r, w: handler(r, w), "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    try:
        fwd = RawForwarder(load_settings(), ssl_context=client_tls)
        for _ in range(2):
            assert await fetch(fwd, f"https://localhost:{port}/v1/models") == (200, b"secret")
        with pytest.raises(UpstreamError) as err:  # the default trust store does not know this CA
            await fetch(RawForwarder(load_settings()), f"https://localhost:{port}/v1/models")
        await fwd.aclose()
    finally:
        server.close()
    assert len(seen) == 2 and f"\r\nHost: localhost:{port}\r\n".encode() in seen[0]
    assert "TLS handshake" in str(err.value) and not err.value.timeout


def self_signed_tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for a throwaway `localhost` certificate."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
