"""Interlock's HTTP/1.1 server over real loopback sockets: framing, keep-alive, pipelining,
100-continue, HEAD, bad requests, client disconnects, backpressure, lifespan, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from proxy.extensions import DISCONNECT_HOOK
from proxy.server import Limits, Server
from proxy.serving import ThreadedServer


class EchoApp:
    """/echo: the body back with its length; /stream: N chunks; /slow: waits for `release`;
    /hold: waits for the client to go (records http.disconnect); /boom: raises."""

    def __init__(self) -> None:
        self.disconnects = 0
        self.gone = threading.Event()
        self.release = threading.Event()
        self.seen: list[dict[str, Any]] = []
        self.lifespan: list[str] = []
        self.fail_startup = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        self.seen.append(scope)
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("boom")
        body = b""
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for i in range(int(body or b"3")):
                await send({"type": "http.response.body", "body": b"chunk%d;" % i, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif path == "/slow":
            await asyncio.to_thread(self.release.wait, 10)
            await self._reply(send, b"slow done")
        elif path == "/hold":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            msg = await receive()
            if msg["type"] == "http.disconnect":
                self.disconnects += 1
                self.gone.set()
        elif path == "/blob":  # 1 MiB in one message
            await self._reply(send, b"y" * (1 << 20))
        elif path == "/big":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for _ in range(200):
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await self._reply(send, b"%d:%s" % (len(body), body[:64]), path=path)

    async def _reply(self, send: Any, body: bytes, path: str = "") -> None:
        await send({"type": "http.response.start", "status": 201 if path == "/created" else 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self.lifespan.append("startup")
                if self.fail_startup:
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                await send({"type": "lifespan.startup.complete"})
            else:
                self.lifespan.append("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return


@pytest.fixture
def app() -> EchoApp:
    return EchoApp()


@pytest.fixture
def served(app: EchoApp) -> Iterator[ThreadedServer]:
    with ThreadedServer(app, graceful_timeout_s=3) as s:
        yield s


def raw(served: ThreadedServer, data: bytes, *, read_until_close: bool = True, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", served.port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                part = sock.recv(65536)
            except TimeoutError:
                break
            if not part:
                break
            out += part
            if not read_until_close and out.endswith(b"\r\n\r\n") is False and b"\r\n\r\n" in out:
                break
        return out


def test_content_length_body_round_trip(served: ThreadedServer) -> None:
    r = httpx.post(served.url + "/echo", content=b"hello")
    assert r.status_code == 200 and r.content == b"5:hello"
    assert r.headers["content-length"] == "7"


def test_chunked_request_body_is_reassembled(served: ThreadedServer) -> None:
    r = httpx.post(served.url + "/echo", content=iter([b"ab", b"cd", b"ef"]))
    assert r.content == b"6:abcdef"


def test_streamed_response_is_chunked_and_every_chunk_arrives(served: ThreadedServer) -> None:
    with httpx.stream("POST", served.url + "/stream", content=b"5") as r:
        assert r.headers["transfer-encoding"] == "chunked"
        assert b"".join(r.iter_raw()) == b"chunk0;chunk1;chunk2;chunk3;chunk4;"


def test_keep_alive_serves_many_requests_on_one_connection(served: ThreadedServer) -> None:
    with httpx.Client() as client:
        for i in range(5):
            assert client.post(served.url + "/echo", content=b"x" * i).content == b"%d:%s" % (i, b"x" * i)
    assert len({s["client"] for s in served.server.app.seen}) == 1  # type: ignore[attr-defined]


def test_pipelined_requests_answered_in_order(served: ThreadedServer) -> None:
    req = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\n"
    out = raw(served, req + b"one" + req + b"two" + b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b"3:one") < out.index(b"3:two") < out.index(b"0:")


def test_expect_100_continue_gets_an_interim_response(served: ThreadedServer) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"data")
        assert b"4:data" in sock.recv(1024)


def test_head_response_has_headers_but_no_body(served: ThreadedServer) -> None:
    out = raw(served, b"HEAD /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 2" in head
    assert body == b""


def test_malformed_request_is_a_400_and_the_server_keeps_serving(served: ThreadedServer) -> None:
    out = raw(served, b"NOT HTTP AT ALL\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request")
    assert httpx.post(served.url + "/echo", content=b"ok").content == b"2:ok"


H2C = b"connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"


def test_h2c_upgrade_with_a_body_is_ignored_and_served_as_http_1_1(served: ThreadedServer) -> None:
    """What `curl --http2 -d ...` sends on http://: no 101, a plain answer with the whole body."""
    out = raw(served, b"POST /echo HTTP/1.1\r\nhost: x\r\n" + H2C + b"content-length: 5\r\n\r\nhello")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"5:hello")
    assert b"connection: close" in out.lower()


def test_h2c_upgrade_without_a_body_is_served_and_the_server_keeps_serving(served: ThreadedServer) -> None:
    out = raw(served, b"GET /echo HTTP/1.1\r\nhost: x\r\n" + H2C + b"\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"0:")
    assert httpx.post(served.url + "/echo", content=b"ok").content == b"2:ok"


def test_h2c_upgrade_body_arriving_in_pieces_is_reassembled(served: ThreadedServer) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\n" + H2C + b"content-length: 6\r\n\r\nab")
        time.sleep(0.05)
        sock.sendall(b"cdef" + b"GET /ignored HTTP/1.1\r\n\r\n")
        out = b""
        while part := sock.recv(65536):
            out += part
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"6:abcdef")


def test_connect_and_chunked_upgrades_are_still_refused(served: ThreadedServer) -> None:
    assert raw(served, b"CONNECT api.openai.com:443 HTTP/1.1\r\nhost: x\r\n\r\n").startswith(b"HTTP/1.1 400")
    chunked = b"POST /echo HTTP/1.1\r\nhost: x\r\n" + H2C + b"transfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n"
    assert raw(served, chunked).startswith(b"HTTP/1.1 400")


def test_app_error_before_response_is_a_500(served: ThreadedServer) -> None:
    r = httpx.get(served.url + "/boom")
    assert r.status_code == 500
    assert httpx.get(served.url + "/echo").status_code == 200


def test_http_1_0_closes_after_the_response(served: ThreadedServer) -> None:
    out = raw(served, b"GET /echo HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in out.lower()


def test_client_leaving_mid_response_reaches_the_app_as_disconnect(served: ThreadedServer, app: EchoApp) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"GET /hold HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"first" in sock.recv(1024)
    assert app.gone.wait(5)
    assert app.disconnects == 1


def test_slow_reader_gets_everything_in_order(served: ThreadedServer) -> None:
    """Backpressure: 12.5 MiB through a reader that pauses; nothing lost or reordered."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        time.sleep(0.5)  # 12.5 MiB does not fit the socket buffers: the server must pause writing
        parts = []
        while True:
            part = sock.recv(1 << 20)
            if not part:
                break
            parts.append(part)
    _, _, body = b"".join(parts).partition(b"\r\n\r\n")
    pieces, pos = [], 0
    while True:
        end = body.index(b"\r\n", pos)
        size = int(body[pos:end], 16)
        if size == 0:
            break
        pieces.append(body[end + 2:end + 2 + size])
        pos = end + 2 + size + 2
    decoded = b"".join(pieces)
    total = len(decoded)
    assert total == 200 * 65536 and set(decoded) == {ord("x")}


def test_pipelined_answers_wait_for_a_client_that_does_not_read(served: ThreadedServer, app: EchoApp) -> None:
    """Backpressure (issue 13 #2): 400 pipelined 1 MiB answers, never read, are produced one at a
    time as the client drains, not all at once into the transport's buffer."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"GET /blob HTTP/1.1\r\nhost: x\r\n\r\n" * 400)
        time.sleep(1.0)
        produced = sum(1 for sc in app.seen if sc["path"] == "/blob")
    assert produced <= 12, f"{produced} answers produced for a client that read nothing"  # kernel buffers: a few MiB


def test_pipelining_depth_is_bounded_and_every_request_is_answered_in_order(
    served: ThreadedServer, app: EchoApp
) -> None:
    """3,000 requests in one write behind a slow answer: at most a pipeline's depth (plus one
    parsed slice) wait parsed; the rest stays unparsed bytes until the queue moves."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n" + b"GET /n HTTP/1.1\r\n\r\n" * 2999
                     + b"GET /last HTTP/1.1\r\nconnection: close\r\n\r\n")
        time.sleep(0.5)
        waiting = max(len(c.queue) for c in list(served.server.connections))
        app.release.set()
        out = b""
        while part := sock.recv(1 << 20):
            out += part
    assert waiting <= 32 + 4096 // 19, f"{waiting} parsed requests queued"
    assert out.count(b"HTTP/1.1 200 OK") == 3001
    assert out.index(b"slow done") < out.index(b"0:", out.index(b"slow done"))


def test_a_large_body_then_pipelined_requests_in_one_write_are_all_answered(served: ThreadedServer) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: parsed in one piece, the heads after it in slices
    req = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    out = raw(served, req + b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc" * 100
              + b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", timeout=10)
    assert out.count(b"HTTP/1.1 200 OK") == 102
    assert out.count(b"3:abc") == 100 and b"1048576:" in out


def test_graceful_stop_finishes_the_request_in_flight(app: EchoApp) -> None:
    s = ThreadedServer(app, graceful_timeout_s=5).__enter__()
    result: dict[str, Any] = {}

    def call() -> None:
        result["r"] = httpx.get(s.url + "/slow", timeout=10)

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 5
    while not any(sc["path"] == "/slow" for sc in app.seen) and time.monotonic() < deadline:
        time.sleep(0.01)
    stopper = threading.Thread(target=s.__exit__)
    stopper.start()
    time.sleep(0.2)
    app.release.set()
    t.join(10)
    stopper.join(10)
    assert result["r"].status_code == 200 and result["r"].content == b"slow done"
    assert app.lifespan == ["startup", "shutdown"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/echo", timeout=2)


def test_failed_startup_stops_the_server_with_the_reason(app: EchoApp) -> None:
    app.fail_startup = True
    with pytest.raises(RuntimeError, match="failed to start"):
        ThreadedServer(app).__enter__()


def test_idle_keep_alive_connection_is_closed_after_the_timeout(app: EchoApp) -> None:
    with ThreadedServer(app, keepalive_s=0.2) as s, socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"200 OK" in sock.recv(1024)
        time.sleep(0.5)
        assert sock.recv(1024) == b""  # closed by the server


def test_idle_timeout_counts_from_the_last_response_not_the_first(app: EchoApp) -> None:
    with ThreadedServer(app, keepalive_s=0.4) as s, socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        for _ in range(4):  # 0.25 s apart: past the first deadline, never idle for 0.4 s
            sock.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")
            assert b"200 OK" in sock.recv(1024)
            time.sleep(0.25)
        sock.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"200 OK" in sock.recv(1024)
        time.sleep(0.8)
        assert sock.recv(1024) == b""  # then closed once idle for longer than the timeout


def test_app_is_called_back_when_the_client_leaves_and_not_after_the_response(app: EchoApp) -> None:
    calls: list[str] = []

    async def hooked(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await app(scope, receive, send)
        await receive()
        scope["extensions"][DISCONNECT_HOOK](lambda: calls.append(scope["path"]))
        if scope["path"] == "/hold":
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with ThreadedServer(hooked) as s:
        assert httpx.get(s.url + "/done").content == b"ok"
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            sock.sendall(b"GET /hold HTTP/1.1\r\nhost: x\r\n\r\n")
            time.sleep(0.2)
        for _ in range(100):
            if calls:
                break
            time.sleep(0.02)
    assert calls == ["/hold"]


def test_server_runs_on_its_own_port(app: EchoApp) -> None:
    async def main() -> int:
        server = Server(app, host="127.0.0.1", port=0)
        task = asyncio.create_task(server.serve())
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        server.request_exit()
        await task
        return len(app.lifespan)

    assert asyncio.run(main()) == 2


def test_port_in_use_raises_after_shutting_the_app_down(app: EchoApp) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def main() -> None:
            await Server(app, host="127.0.0.1", port=port).serve()

        with pytest.raises(OSError):
            asyncio.run(main())
    assert app.lifespan == ["startup", "shutdown"]


# ---------------------------------------------------------------- limits and timeouts (issue 13)

TIGHT = Limits(max_header_bytes=4096, max_url_bytes=1024, header_timeout_s=0.3, body_timeout_s=0.3)


@pytest.fixture
def limited(app: EchoApp) -> Iterator[ThreadedServer]:
    with ThreadedServer(app, graceful_timeout_s=3, limits=TIGHT) as s:
        yield s


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def test_header_section_over_the_limit_is_a_431(limited: ThreadedServer) -> None:
    out = raw(limited, b"GET /echo HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n")
    assert status_of(out) == 431


def test_headers_just_under_the_limit_are_served(limited: ThreadedServer) -> None:
    out = raw(limited, b"GET /echo HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-big: " + b"a" * 3900 + b"\r\n\r\n")
    assert status_of(out) == 200


def test_a_never_ending_header_line_is_cut_at_the_limit(limited: ThreadedServer) -> None:
    """Sent in many small writes: refused once the head passes the limit, not read on forever."""
    with socket.create_connection(("127.0.0.1", limited.port), timeout=5) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\nx-endless: ")
        sent, out = 0, b""
        while sent < 8 * 1024 * 1024 and not out:
            try:
                sock.sendall(b"a" * 1024)
                sent += 1024
                if select.select([sock], [], [], 0.001)[0]:
                    out = sock.recv(65536)
            except OSError:  # refused and closed while we were still writing
                break
    assert status_of(out) == 431
    assert sent < 1024 * 1024, f"the server read {sent} bytes of one header line"


def test_request_target_over_the_limit_is_a_414(limited: ThreadedServer) -> None:
    out = raw(limited, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status_of(out) == 414


def test_headers_arriving_too_slowly_get_a_408_and_the_connection_closes(limited: ThreadedServer) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=5) as sock:
        sock.sendall(b"GET /echo HTTP/1.1\r\nhost: x\r\n")
        started = time.monotonic()
        for _ in range(3):  # slowloris: a byte now and then, never the end of the headers
            time.sleep(0.15)
            with contextlib.suppress(OSError):
                sock.sendall(b"x")
        out = b""
        while part := sock.recv(65536):
            out += part
    assert status_of(out) == 408 and time.monotonic() - started < 2


def test_a_body_that_stops_short_gets_a_408(limited: ThreadedServer) -> None:
    with socket.create_connection(("127.0.0.1", limited.port), timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n" + b"b" * 99)
        out = b""
        while part := sock.recv(65536):
            out += part
    assert status_of(out) == 408


def test_waiting_behind_a_slow_answer_is_not_a_timeout(limited: ThreadedServer, app: EchoApp) -> None:
    """The next request's head may wait while the server is busy with the previous answer."""
    with socket.create_connection(("127.0.0.1", limited.port), timeout=5) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\nPOST /echo HTTP/1.1\r\nhost: x\r\n")
        time.sleep(0.8)  # well past both timeouts
        app.release.set()
        sock.sendall(b"connection: close\r\ncontent-length: 2\r\n\r\nok")
        out = b""
        while part := sock.recv(65536):
            out += part
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.endswith(b"2:ok")


def test_a_slow_app_reading_a_large_body_is_not_a_client_timeout(limited: ThreadedServer) -> None:
    r = httpx.post(limited.url + "/echo", content=b"z" * (2 * 1024 * 1024))
    assert r.status_code == 200 and r.content.startswith(b"2097152:")


def test_a_body_timeout_shorter_than_the_header_timeout_is_kept(app: EchoApp) -> None:
    limits = Limits(header_timeout_s=30, body_timeout_s=0.3)
    with ThreadedServer(app, graceful_timeout_s=3, limits=limits) as served, \
            socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc")
        out = b""
        while part := sock.recv(65536):
            out += part
    assert status_of(out) == 408 and time.monotonic() - started < 2
