"""The app's front door over raw sockets: every spelling of a guarded path is refused or guarded."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer

DENY_ALL = "rules:\n  - {name: none-left, kind: budget, scope: global, limit_tokens: 1, action: deny}\n"
CHAT = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]})

# Spellings a lenient upstream resolves to /v1/chat/completions (or a sibling model route).
BYPASS_SPELLINGS = [
    "/v1/chat/completions%3Fx=1",
    "/v1/chat/completions%3fx=1",
    "/v1/chat/completions%23x",
    "/v1/chat/completions/",
    "/v1//chat/completions",
    "//v1/chat/completions",
    "/v1/./chat/completions",
    "/v1/x/../chat/completions",
    "/v1/%2e/chat/completions",
    "/v1/x/%2E%2E/chat/completions",
    "/v1/chat%2fcompletions",
    "/v1/chat%5ccompletions",
    "/v1/chat/completions%00",
    "/v1/chat/completions/.",
    "/agents/a/..%2f..%2fv1/chat/completions",
    "/agents/a/../../v1/chat/completions",
    "/agents/a%2f..%2f..%2fv1/chat/completions",
    "/agents/a/v1/chat/completions%3Fx=1",
    "/agents/a//v1/chat/completions/",
    "/v1/chat%252Fcompletions",
    "/agents/a/..%252f..%252fv1/chat/completions",
]


def exchange(url: str, request: bytes) -> tuple[int, bytes]:
    """Send raw bytes, read until the server closes; (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def post(path: str, body: bytes = CHAT, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", "Connection: close", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Authorization: Bearer sk-test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyServer, FakeUpstream]]:
    """One deny-everything proxy for all spellings (nothing may reach its upstream)."""
    tmp = tmp_path_factory.mktemp("guarded")
    (tmp / "rules").mkdir()
    (tmp / "rules" / "deny.yaml").write_text(DENY_ALL)
    with FakeUpstream() as upstream, ProxyServer(tmp, upstream.url, rules_dir=tmp / "rules") as px:
        yield px, upstream


@pytest.mark.parametrize("path", BYPASS_SPELLINGS)
def test_no_spelling_of_a_model_route_gets_past_a_deny_all_budget(
    guarded: tuple[ProxyServer, FakeUpstream], path: str
) -> None:
    px, upstream = guarded
    status, body = exchange(px.url, post(path))
    assert status in (400, 429), (path, status, body)
    assert orjson.loads(body)["error"]["code"].startswith("interlock_")
    assert upstream.requests == [], f"{path} reached the upstream as {upstream.requests[0]}"


def test_plain_path_is_guarded_as_the_baseline(guarded: tuple[ProxyServer, FakeUpstream]) -> None:
    px, upstream = guarded
    before = len(upstream.requests)
    status, body = exchange(px.url, post("/v1/chat/completions"))
    assert status == 429 and orjson.loads(body)["error"]["code"] == "interlock_budget_exceeded"
    assert len(upstream.requests) == before


def test_folded_spelling_is_forwarded_exactly_as_routed(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    status, _ = exchange(proxy.url, post("/agents/a//v1//chat/completions/"))
    assert status == 200
    [seen] = upstream.requests
    assert (seen.path, seen.query) == ("/v1/chat/completions", "")
    [row] = proxy.wait_calls(1)
    assert (row["operation"], row["path"], row["agent"]) == ("chat", "/v1/chat/completions", "a")


def test_encoded_characters_that_are_not_delimiters_reach_the_upstream_encoded_once(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    status, _ = exchange(proxy.url, post("/v1/files/a%20b%25c/content", b""))
    assert status in (200, 404)
    [seen] = upstream.requests
    assert (seen.path, seen.query) == ("/v1/files/a b%c/content", "")


def test_refused_path_answers_in_the_anthropic_shape_for_an_anthropic_client(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    status, body = exchange(proxy.url, post("/v1/messages%3Fbeta=1", CHAT, "anthropic-version: 2023-06-01"))
    err = orjson.loads(body)
    assert status == 400 and err["type"] == "error"
    assert err["error"]["type"] == "interlock_invalid_path" and "encoded '?'" in err["error"]["message"]
    assert upstream.requests == []


def test_agent_name_is_decoded_once(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    status, _ = exchange(proxy.url, post("/agents/50%25%20off/v1/chat/completions"))
    assert status == 200
    [row] = proxy.wait_calls(1)
    assert row["agent"] == "50% off"
    assert upstream.last.path == "/v1/chat/completions"


def test_edge_limits_come_from_the_settings(tmp_path: Path, upstream: FakeUpstream) -> None:
    with ProxyServer(tmp_path, upstream.url, max_url_bytes=512, max_header_bytes=2048) as px:
        assert exchange(px.url, post("/v1/models/" + "m" * 600))[0] == 414
        assert exchange(px.url, post("/v1/chat/completions", CHAT, "X-Big: " + "b" * 3000))[0] == 431
        assert exchange(px.url, post("/v1/chat/completions"))[0] == 200
    assert len(upstream.requests) == 1


def test_a_body_that_stalls_gets_a_408_and_is_recorded_cancelled(tmp_path: Path, upstream: FakeUpstream) -> None:
    with ProxyServer(tmp_path, upstream.url, body_timeout_s=0.3) as px:
        head = post("/v1/chat/completions", b"").replace(b"Content-Length: 0", b"Content-Length: 100000")
        status, _ = exchange(px.url, head + b"{" + b" " * 50_000)
        assert status == 408
        [row] = px.wait_calls(1)
        assert row["outcome"] == "cancelled" and upstream.requests == []
