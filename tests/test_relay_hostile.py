"""Hostile upstreams against the relay over real loopback sockets (issue 13 #3): floods pass
through with bounded memory, malformed answers end in a clean 502 or a clean cut with the record
kept and marked, and the upstream pool serves the next call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.hostile_upstream import MIB, HostileUpstream
from tests.proxyserver import ProxyServer

KEY = {"authorization": "Bearer sk-test"}


@pytest.fixture
def hostile() -> Iterator[HostileUpstream]:
    with HostileUpstream() as up:
        yield up


@pytest.fixture
def px(tmp_path: Path, hostile: HostileUpstream) -> Iterator[ProxyServer]:
    with ProxyServer(tmp_path, hostile.url, response_parse_max_bytes=1 * MIB, stream_text_max_chars=64 * 1024) as p:
        yield p


def call_row(px: ProxyServer, path: str, n: int = 1) -> dict[str, object]:
    rows = px.wait_calls(n)
    return next(r for r in rows if r["path"] == path)


def response_text(px: ProxyServer, row: dict[str, object]) -> str:
    """The assembled completion text stored for a streamed call."""
    detail = px.api(f"/api/calls/{row['id']}")
    return str(orjson.loads(detail["response_content"])["text"])


def assert_pool_healthy(px: ProxyServer) -> None:
    r = httpx.get(px.url + "/v1/models", headers=KEY, timeout=10)
    assert r.status_code == 200 and r.json()["data"][0]["id"] == "gpt-4o-mini"


def stream_chat(px: ProxyServer, model: str, usage: bool = True) -> bytes:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "go"}],
            "stream_options": {"include_usage": usage}}
    with httpx.stream("POST", px.url + "/v1/chat/completions", json=body, headers=KEY, timeout=30) as r:
        assert r.status_code == 200
        return b"".join(r.iter_raw())


# ---------------------------------------------------------------- floods pass through, bounded


def test_large_download_is_passed_through_whole_and_recorded_truncated(px: ProxyServer) -> None:
    with httpx.stream("GET", px.url + "/v1/files/big/content?mb=24", headers=KEY, timeout=30) as r:
        assert r.headers["content-length"] == str(24 * MIB)
        got = sum(len(piece) for piece in r.iter_raw())
    assert got == 24 * MIB
    row = call_row(px, "/v1/files/big/content")
    assert row["outcome"] == "ok" and row["content_truncated"] is True
    assert "response_unparsed" in row["flags"]


def test_json_body_over_the_parse_cap_still_reports_usage_and_is_flagged(px: ProxyServer) -> None:
    r = httpx.post(px.url + "/v1/embeddings", json={"model": "big-3", "input": "x"}, headers=KEY, timeout=30)
    assert r.status_code == 200 and len(r.content) > 3 * MIB
    assert r.json()["usage"]["prompt_tokens"] == 4242  # every byte arrived, still valid JSON
    row = call_row(px, "/v1/embeddings")
    assert row["input_tokens"] == 4242
    assert "response_unparsed" in row["flags"] and row["content_truncated"] is True


def test_long_stream_reaches_the_client_whole_and_keeps_capped_text_and_usage(px: ProxyServer) -> None:
    data = stream_chat(px, "flood-16")
    assert len(data) > 16 * MIB and data.endswith(b"data: [DONE]\n\n")
    row = call_row(px, "/v1/chat/completions")
    assert row["outcome"] == "ok" and row["output_tokens"] == 777 and row["finish_reason"] == "stop"
    assert "completion_capped" in row["flags"]
    assert 0 < len(response_text(px, row)) <= 64 * 1024


def test_event_over_the_cap_is_relayed_unread_and_flagged(px: ProxyServer) -> None:
    data = stream_chat(px, "huge-event-3", usage=False)  # filtered: events are relayed one by one
    assert data.count(b"z") >= 3 * MIB and data.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in data  # the usage chunk the client did not ask for is still dropped
    row = call_row(px, "/v1/chat/completions")
    assert row["outcome"] == "ok" and row["output_tokens"] == 99
    assert "sse_event_oversized" in row["flags"]


# ---------------------------------------------------------------- malformed answers


@pytest.mark.parametrize("case", ["bad-chunked", "length-lie?kb=1", "garbage-status", "reset?kb=1"])
def test_malformed_answer_before_any_byte_relayed_is_a_clean_502(px: ProxyServer, case: str) -> None:
    r = httpx.get(px.url + "/v1/hostile/" + case, headers=KEY, timeout=10)
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "interlock_upstream_error"
    assert_pool_healthy(px)
    row = call_row(px, "/v1/hostile/" + case.split("?")[0], 2)
    assert row["status"] == 502 and row["outcome"] == "unreachable" and row["error"]


@pytest.mark.parametrize("case", ["length-lie?kb=2048", "reset?kb=2048"])
def test_body_cut_after_relaying_began_cuts_the_client_and_is_recorded(px: ProxyServer, case: str) -> None:
    got = 0
    with pytest.raises(httpx.RemoteProtocolError), \
            httpx.stream("GET", px.url + "/v1/hostile/" + case, headers=KEY, timeout=10) as r:
        assert r.status_code == 200
        for piece in r.iter_raw():
            got += len(piece)
    assert 0 < got < int(r.headers["content-length"])  # never a clean end: the client knows
    assert_pool_healthy(px)
    row = call_row(px, "/v1/hostile/" + case.split("?")[0], 2)
    assert row["outcome"] == "upstream_cut" and "ended the body early" in str(row["error"])


def test_stream_closed_mid_way_ends_with_an_error_event_and_keeps_the_text(px: ProxyServer) -> None:
    data = stream_chat(px, "cut-5")
    assert b"part 4" in data and data.rstrip().endswith(b"}")
    assert b"upstream_stream_cut" in data.rsplit(b"data: ", 1)[1]
    assert_pool_healthy(px)
    row = call_row(px, "/v1/chat/completions", 2)
    assert row["outcome"] == "upstream_cut"
    assert response_text(px, row) == "part 0 part 1 part 2 part 3 part 4 "
