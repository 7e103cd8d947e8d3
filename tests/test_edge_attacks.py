"""Hostile clients against a real `interlock serve` process, over raw sockets (issue 13).

    FakeUpstream (thread) ◀── interlock serve (subprocess, RSS measured) ◀── raw socket (the attacker)

Pipelining clients that never read must not grow the proxy (< 64 MB); request-smuggling shapes
are refused with 400 and nothing of them reaches the upstream; and a property-based fuzzer sends
hostile spellings of the model routes through a deny-everything budget: a spelling either is
refused, or is guarded, or reaches the upstream exactly as it was routed.
"""

from __future__ import annotations

import os
import posixpath
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.paths import PathError, canonicalise
from tests.fake_upstream import FakeUpstream, Reply
from tests.test_paths import GUARDED, near_guarded, spellings

DENY_CHAT = "rules:\n  - {name: none-left, kind: budget, scope: global, limit_tokens: 1, action: deny}\n"
BIG = b'{"object": "list", "data": [], "pad": "' + b"x" * (1024 * 1024) + b'"}'
GROWTH_LIMIT_MB = 64
DENIED = tuple(r for r in GUARDED if r != "/v1/messages/count_tokens")  # routes the budget denies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Served:
    """`interlock serve` in a subprocess on a free port, with rules and an upstream."""

    def __init__(self, tmp: Path, upstream: str, rules: str = "") -> None:
        (tmp / "rules").mkdir(exist_ok=True)
        if rules:
            (tmp / "rules" / "rules.yaml").write_text(rules)
        self.port = free_port()
        env = {**os.environ, "INTERLOCK_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/i.db",
               "INTERLOCK_HOST": "127.0.0.1", "INTERLOCK_PORT": str(self.port),
               "INTERLOCK_RULES_DIR": str(tmp / "rules"), "INTERLOCK_SPOOL_DIR": str(tmp / "spool"),
               "INTERLOCK_UPSTREAM_OPENAI": upstream, "INTERLOCK_UPSTREAM_ANTHROPIC": upstream,
               "INTERLOCK_LOG_LEVEL": "warning"}
        self.log = open(tmp / "serve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve"], env=env, cwd=tmp,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"interlock serve did not start: {(tmp / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            return exchange(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200
        except OSError:
            return False

    @property
    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


def exchange(port: int, data: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send raw bytes, read until the proxy closes; (first status, everything read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while True:
            try:
                part = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not part:
                break
            out += part
    match = re.match(rb"HTTP/1\.[01] (\d{3})", out)
    return (int(match.group(1)) if match else 0), out


def pipeline_unread(port: int, request: bytes, count: int, proc: Served, seconds: float = 6) -> float:
    """Write `count` pipelined requests (as far as the proxy takes them) and never read;
    the proxy's largest RSS growth while it sits there, in MB."""
    base = peak = proc.rss
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little for us
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    pending = memoryview(request * count)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if pending:
                _, writable, _ = select.select([], [sock], [], 0.05)
                if writable:
                    try:
                        pending = pending[sock.send(pending[:65536]):]
                    except BlockingIOError:
                        pass
            else:
                time.sleep(0.05)
            peak = max(peak, proc.rss)
    finally:
        sock.close()
    return peak - base


# --------------------------------------------------------------------------- fixtures
def big_models(req: object, path: str) -> Reply | None:
    return Reply(body=BIG) if path == "/v1/models" else None


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(big_models) as up:
        yield up


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Served]:
    proc = Served(tmp_path_factory.mktemp("edge"), upstream.url, DENY_CHAT)
    yield proc
    proc.stop()


def reached(upstream: FakeUpstream, before: int) -> list[str]:
    time.sleep(0.2)  # anything forwarded would have arrived by now
    return [f"{r.method} {r.path}" for r in upstream.requests[before:]]


# --------------------------------------------------------------------------- pipelining floods
def test_unread_pipelined_openapi_answers_do_not_grow_the_proxy(served: Served) -> None:
    exchange(served.port, b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # built once
    growth = pipeline_unread(served.port, b"GET /api/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n", 3000, served)
    assert growth < GROWTH_LIMIT_MB, f"RSS grew {growth:.0f} MB"


def test_unread_pipelined_1mb_upstream_answers_do_not_grow_the_proxy(served: Served, upstream: FakeUpstream) -> None:
    models = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n\r\n"
    status, body = exchange(served.port, models.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert status == 200 and len(body) > len(BIG)
    growth = pipeline_unread(served.port, models, 300, served)
    assert growth < GROWTH_LIMIT_MB, f"RSS grew {growth:.0f} MB"


def test_refused_endless_headers_do_not_grow_the_proxy(served: Served) -> None:
    """An attacker's loop of header lines that never end: each connection is refused (431) at
    the header limit, and what it sent is let go with it, not at the GC's next collection."""
    endless = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"a" * (60 * 1024)  # just under the limit
    base = served.rss
    refused = 0
    for _ in range(1000):
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(endless)
            try:
                sock.sendall(b"a" * (8 * 1024))  # past it
                refused += sock.recv(64).startswith(b"HTTP/1.1 431")
            except OSError:  # refused and closed before this piece was taken
                refused += 1
    growth = served.rss - base
    assert refused == 1000
    assert growth < 16, f"RSS grew {growth:.0f} MB over 1,000 refused endless headers"


def test_the_proxy_serves_others_after_a_flood(served: Served) -> None:
    assert exchange(served.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200


# --------------------------------------------------------------------------- request smuggling
SMUGGLED = b"GET /v1/models/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n"
SMUGGLING = {
    "cl-and-te": POST + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-and-cl": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "duplicate-cl": POST + b"Content-Length: 0\r\nContent-Length: 46\r\n\r\n" + SMUGGLED,
    "duplicate-cl-same": POST + b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}" + SMUGGLED,
    "cl-list": POST + b"Content-Length: 0, 46\r\n\r\n" + SMUGGLED,
    "obs-fold-te": POST + b"Transfer-Encoding:\r\n chunked\r\nContent-Length: 2\r\n\r\n{}" + SMUGGLED,
    "obs-fold-header": POST + b"Content-Length: 2\r\nX-Folded: a\r\n b\r\n\r\n{}" + SMUGGLED,
    "bare-lf-headers": POST.replace(b"\r\n", b"\n") + b"Content-Length: 2\n\n{}" + SMUGGLED,
    "bare-lf-chunk": POST + b"Transfer-Encoding: chunked\r\n\r\n2\n{}\n0\n\n" + SMUGGLED,
    "bad-chunk-size": POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n" + SMUGGLED,
    "negative-chunk-size": POST + b"Transfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-size-overflow": POST + b"Transfer-Encoding: chunked\r\n\r\n1000000000000000000002\r\n{}\r\n0\r\n\r\n"
    + SMUGGLED,
    "chunk-size-0x": POST + b"Transfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n" + SMUGGLED,
    "te-unknown-coding": POST + b"Transfer-Encoding: gzip\r\n\r\n{}" + SMUGGLED,
    "te-chunked-not-last": POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "space-before-colon": POST + b"Content-Length : 46\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("name", sorted(SMUGGLING))
def test_request_smuggling_shape_is_refused_and_nothing_reaches_the_upstream(
    served: Served, upstream: FakeUpstream, name: str
) -> None:
    before = len(upstream.requests)
    status, answer = exchange(served.port, SMUGGLING[name])
    assert status == 400, (name, answer[:300])
    assert answer.count(b"HTTP/1.1 ") == 1, f"{name}: more than one answer: {answer[:500]!r}"
    assert reached(upstream, before) == []


# --------------------------------------------------------------------------- the path, end to end
def lenient(path: str) -> str:
    """What the most forgiving upstream could resolve a path to (decoded, `\\` as `/`, cut at
    `?`/`#`, dot segments resolved, duplicate and trailing slashes dropped)."""
    p = re.split(r"[?#]", unquote(path).replace("\\", "/"), maxsplit=1)[0]
    p = posixpath.normpath("/" + p)
    return "/" + p.strip("/") if p.strip("/") else "/"


def route_of(path: str) -> str:
    """The route under an `/agents/NAME` prefix; `/` for the prefix alone (a request target is never empty)."""
    return re.sub(r"^/agents/[^/]+", "", path) or "/"


def post_path(path: bytes) -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer sk-test\r\nContent-Length: 2\r\n\r\n{}")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.one_of(spellings, near_guarded))
def test_what_is_routed_is_exactly_what_is_forwarded(served: Served, upstream: FakeUpstream, raw: bytes) -> None:
    raw = raw.replace(b" ", b"%20")  # a space ends the request target (that is a parser test)
    before = len(upstream.requests)
    status, _ = exchange(served.port, post_path(raw))
    seen = reached(upstream, before) if status not in (400, 429) else upstream.requests[before:]
    try:
        routed, forwarded = canonicalise(raw)
    except PathError:
        assert status == 400 and not seen, (raw, status, seen)
        return
    assert canonicalise(forwarded.encode()) == (routed, forwarded), "canonical form is a fixed point"
    assert "//" not in forwarded and not re.search(r"%(2[fF]|3[fF]|23|5[cC])", forwarded)
    assert not {".", ".."} & {unquote(s) for s in forwarded.split("/")}, "no dot segment, however spelt"
    assert routed == lenient(raw.decode("utf-8")), "routed as the most forgiving upstream resolves it"
    if route_of(routed) in DENIED:
        assert status == 429 and not upstream.requests[before:], (raw, status)  # never unguarded
        return
    for req in upstream.requests[before:]:
        assert req.path == route_of(routed), (raw, req.path, routed)
