"""End to end: the real openai / anthropic SDKs → Interlock (real loopback HTTP) → fake upstream."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest

from proxy.relay import _shielded
from tests.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.proxyserver import ProxyServer, create_test_database, drop_test_database

KEY = "sk-proj-TESTSECRETabcdefghijklmnopqrstuvwxyz0123456789"
ANTH_KEY = "sk-ant-api03-SECRETabcdefghijklmnopqrstuvwxyz0123456789"


def oai(px: ProxyServer, agent: str | None = None) -> openai.OpenAI:
    base = f"{px.url}/agents/{agent}/v1" if agent else f"{px.url}/v1"
    return openai.OpenAI(base_url=base, api_key=KEY, max_retries=0, timeout=20)


def anth(px: ProxyServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=px.url, api_key=ANTH_KEY, max_retries=0, timeout=20)


def test_chat_completion_passes_through_and_is_recorded(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(
        Reply(text="Paris.", input_tokens=21, output_tokens=2, cached_tokens=8, reasoning_tokens=1)
    )
    out = oai(proxy, agent="planner").chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert out.choices[0].message.content == "Paris."
    assert upstream.last.header("authorization") == f"Bearer {KEY}"
    assert upstream.last.path == "/v1/chat/completions"
    [row] = proxy.wait_calls(1)
    assert row["agent"] == "planner" and row["model_requested"] == "gpt-4o-mini"
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"], row["reasoning_tokens"]) == (
        21,
        2,
        8,
        1,
    )
    assert row["status"] == 200 and row["outcome"] == "ok" and row["finish_reason"] == "stop"
    assert row["input_tokens_counted"] and row["input_tokens_counted"] > 0
    assert row["latency_ms"] is not None


def test_chat_stream_relays_every_chunk_and_hides_usage_not_asked_for(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    upstream.script(Reply(chunks=["one ", "two ", "three"], input_tokens=11, output_tokens=3))
    chunks = list(
        oai(proxy).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "count"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three"
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk leaked to a client that did not ask"
    assert upstream.last.json["stream_options"] == {"include_usage": True}
    [row] = proxy.wait_calls(1)
    assert (row["input_tokens"], row["output_tokens"]) == (11, 3)
    assert row["stream"] is True and row["outcome"] == "ok"


def test_chat_stream_keeps_usage_for_a_client_that_asked(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["a", "b"], input_tokens=5, output_tokens=2))
    chunks = list(
        oai(proxy).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2


def test_streamed_bytes_reach_the_client_unchanged(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    upstream.script(Reply(chunks=["x", "y"]), Reply(chunks=["x", "y"]))
    direct = httpx.post(upstream.url + "/v1/chat/completions", json=body).content
    via = httpx.post(proxy.url + "/v1/chat/completions", json=body).content
    ids = re.compile(rb'"chatcmpl-[^"]+"')  # the fake numbers its responses; all else must match
    assert ids.sub(b"ID", via) == ids.sub(b"ID", direct)
    assert via.count(b"data: ") == direct.count(b"data: ") >= 4


def test_tool_calls_and_n_choices(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"})]))
    out = oai(proxy).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    )
    tc = out.choices[0].message.tool_calls
    assert tc is not None and tc[0].function.name == "get_weather"
    upstream.script(Reply(text="same", n=2))
    two = oai(proxy).chat.completions.create(model="gpt-4o", n=2, messages=[{"role": "user", "content": "x"}])
    assert len(two.choices) == 2
    rows = proxy.wait_calls(2)
    assert {r["finish_reason"] for r in rows} == {"tool_calls", "stop"}


def test_responses_api_plain_and_streaming(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    client = oai(proxy)
    upstream.script(Reply(text="first", input_tokens=7, output_tokens=1))
    r = client.responses.create(model="gpt-4.1", instructions="You are the supervisor.", input="start")
    assert r.output_text == "first"
    upstream.script(Reply(chunks=["str", "eam"], input_tokens=9, output_tokens=2))
    with client.responses.stream(model="gpt-4.1", input="go on", previous_response_id=r.id) as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert text == "stream"
    rows = sorted(proxy.wait_calls(2), key=lambda c: c["started_at"])
    assert [r["operation"] for r in rows] == ["responses", "responses"]
    assert (rows[1]["input_tokens"], rows[1]["output_tokens"]) == (9, 2)


def test_anthropic_messages_plain_stream_and_count_tokens(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    client = anth(proxy)
    upstream.script(Reply(text="Hello from Claude", input_tokens=12, output_tokens=4))
    msg = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert msg.content[0].text == "Hello from Claude"  # type: ignore[union-attr]
    sent = upstream.last.header("x-api-key") or upstream.last.header("authorization") or ""
    assert sent.removeprefix("Bearer ") == ANTH_KEY  # newer SDKs send it as a bearer token
    upstream.script(Reply(tool_calls=[ToolCall("lookup", {"q": "x"})], input_tokens=30, output_tokens=9))
    with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "use it"}],
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
    ) as s:
        final = s.get_final_message()
    assert final.content[-1].type == "tool_use" and final.stop_reason == "tool_use"
    n = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert n.input_tokens > 0
    rows = sorted(proxy.wait_calls(3), key=lambda c: c["started_at"])
    assert [r["provider"] for r in rows] == ["anthropic"] * 3
    assert [r["operation"] for r in rows] == ["messages", "messages", "count_tokens"]
    assert (rows[1]["input_tokens"], rows[1]["output_tokens"], rows[1]["finish_reason"]) == (
        30,
        9,
        "tool_calls",
    )


def test_embeddings_and_models_pass_through_as_generic_calls(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    client = oai(proxy)
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2
    assert len(list(client.models.list())) > 0
    ops = {r["operation"] for r in proxy.wait_calls(2)}
    assert ops == {"embeddings", "models"}


def test_upstream_error_passes_through_verbatim(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(status=429, error="Rate limit reached for gpt-4o"))
    with pytest.raises(openai.RateLimitError) as err:
        oai(proxy).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert "Rate limit reached for gpt-4o" in str(err.value)
    [row] = proxy.wait_calls(1)
    assert row["status"] == 429 and row["outcome"] == "upstream_error"


def test_unreachable_upstream_is_a_native_502_naming_it(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with ProxyServer(tmp_path, dead) as px:
        with pytest.raises(openai.APIStatusError) as err:
            oai(px).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert err.value.status_code == 502
        assert "upstream 'openai'" in err.value.message and dead in err.value.message
        with pytest.raises(anthropic.APIStatusError) as aerr:
            anth(px).messages.create(
                model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert aerr.value.status_code == 502
        assert aerr.value.body["type"] == "error"  # type: ignore[index]
        rows = px.wait_calls(2)
        assert {r["outcome"] for r in rows} == {"unreachable"}


def test_upstream_timeout_is_a_504(tmp_path: Path, upstream: FakeUpstream) -> None:
    upstream.script(Reply(hang=True))
    with ProxyServer(tmp_path, upstream.url, read_timeout_s=0.3) as px:
        with pytest.raises(openai.APIStatusError) as err:
            oai(px).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert err.value.status_code == 504
        [row] = px.wait_calls(1)
        assert row["outcome"] == "timeout"


def test_first_chunk_reaches_client_before_upstream_produces_the_last(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    upstream.script(Reply(chunks=["early ", "late"], gate_after=2))
    stream = oai(proxy).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
    )
    it = iter(stream)
    first = next(it)
    while not (first.choices and first.choices[0].delta.content):
        first = next(it)
    assert first.choices[0].delta.content == "early "
    assert upstream.gate_reached.wait(5) and not upstream.last.completed  # the gate holds the last chunk
    upstream.release()
    rest = "".join(c.choices[0].delta.content or "" for c in it if c.choices)
    assert rest == "late"


def test_client_disconnect_cancels_upstream_and_records_cancelled(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    upstream.script(Reply(chunks=["w"] * 50, chunk_delay=0.05, output_tokens=50, input_tokens=10))
    with httpx.stream(
        "POST",
        proxy.url + "/v1/chat/completions",
        timeout=10,
        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as r:
        for got, _ in enumerate(r.iter_raw(), 1):
            if got >= 3:
                break
    assert upstream.wait_cancel(5), "upstream never saw the cancel"
    [row] = proxy.wait_calls(1)
    assert row["outcome"] == "cancelled"
    assert row["output_tokens"] is None, "usage must never be invented for a cancelled stream"


def test_stream_cut_by_upstream_ends_cleanly_with_an_error_event(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    upstream.script(Reply(chunks=["a", "b", "c", "d"], cut_after=2))
    with pytest.raises(openai.APIError) as err:
        for _ in oai(proxy).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass
    assert "ended the stream early" in str(err.value)
    [row] = proxy.wait_calls(1)
    assert row["outcome"] == "upstream_cut"


def test_invalid_json_is_refused_natively_and_recorded(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    r = httpx.post(
        proxy.url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "interlock_invalid_json"
    r2 = httpx.post(proxy.url + "/v1/messages", content=b"[", headers={"anthropic-version": "2023-06-01"})
    assert r2.status_code == 400 and r2.json()["type"] == "error"
    assert upstream.requests == []
    rows = proxy.wait_calls(2)
    assert {r["outcome"] for r in rows} == {"bad_request"}


def test_oversized_body_is_a_clear_413(tmp_path: Path, upstream: FakeUpstream) -> None:
    with ProxyServer(tmp_path, upstream.url, max_body_bytes=2048) as px:
        big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(px.url + "/v1/chat/completions", json=big)
        assert r.status_code == 413 and "2048-byte limit" in r.json()["error"]["message"]
        assert upstream.requests == []
        [row] = px.wait_calls(1)
        assert row["outcome"] == "too_large"


def test_interlock_and_hop_by_hop_headers_are_not_forwarded(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    httpx.post(
        proxy.url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={
            "X-Interlock-Agent": "coder",
            "X-Interlock-Run": "run-42",
            "Authorization": f"Bearer {KEY}",
            "Proxy-Authorization": "Basic abc",
            "X-Custom": "kept",
        },
    )
    h = upstream.last.headers
    assert not any(k.lower().startswith("x-interlock") for k in h)
    assert "proxy-authorization" not in {k.lower() for k in h}
    assert upstream.last.header("x-custom") == "kept"
    [row] = proxy.wait_calls(1)
    assert row["agent"] == "coder" and row["run_hint"] == "run-42"


def test_headers_named_in_connection_are_hop_by_hop_both_ways(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="ok", headers={"Connection": "X-Upstream-Hop", "X-Upstream-Hop": "1",
                                              "X-Upstream-Kept": "1"}))
    r = httpx.post(
        proxy.url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        headers={"Connection": "keep-alive, X-Client-Hop", "X-Client-Hop": "1", "X-Custom": "kept"},
    )
    assert r.status_code == 200
    assert upstream.last.header("x-client-hop") is None and upstream.last.header("x-custom") == "kept"
    assert "x-upstream-hop" not in r.headers and r.headers["x-upstream-kept"] == "1"


def test_h2c_upgrade_from_curl_http2_is_served_as_http_1_1(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "via curl --http2"}]}'
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(head + body)
        out = b""
        while part := sock.recv(65536):
            out += part
    assert out.startswith(b"HTTP/1.1 200 OK") and b"ok: via curl --http2" in out
    assert upstream.last.header("upgrade") is None and upstream.last.header("http2-settings") is None


def test_no_credential_is_stored_in_clear(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text=f"echoing your key {KEY}"))
    oai(proxy).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": f"my key is {KEY} and Bearer {ANTH_KEY}"}]
    )
    anth(proxy).messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    rows = proxy.wait_calls(2)
    raw = asyncio.run(_dump_database(proxy.settings.database_url))
    if proxy.settings.database_url.startswith("sqlite"):
        db = Path(proxy.settings.database_url.split("///", 1)[1])
        raw += b"".join(p.read_bytes() for p in db.parent.glob("interlock.db*"))
    assert b"my key is" in raw
    for secret in (KEY, ANTH_KEY, KEY[8:30], ANTH_KEY[14:40]):
        assert secret.encode() not in raw
    hashes = {r["api_key_hash"] for r in rows}
    assert len(hashes) == 2 and all(h and len(h) == 12 for h in hashes)
    detail = proxy.api(f"/api/calls/{[r for r in rows if r['provider'] == 'openai'][0]['id']}")
    assert "my key is" in detail["request_content"]


def test_a_key_in_the_query_or_the_path_is_never_stored_in_clear(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    google_key = "AIzaSyD-TESTSECRETabcdefghijklmnopqrstu"
    for target in (f"/v1/models?key={google_key}", f"/v1/models%3Fkey={google_key}",
                   f"/agents/a/v1/models;key={google_key}"):
        httpx.get(proxy.url + target, headers={"Authorization": f"Bearer {KEY}"})
    rows = proxy.wait_calls(2)
    assert sorted(r["path"] for r in rows) == ["/v1/models", "/v1/models;key=[REDACTED]"]
    raw = asyncio.run(_dump_database(proxy.settings.database_url))
    assert google_key[8:30].encode() not in raw


def test_concurrent_streams_are_all_recorded(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            list(
                oai(proxy).chat.completions.create(
                    model="gpt-4o", stream=True, messages=[{"role": "user", "content": f"n{i}"}]
                )
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(proxy.wait_calls(20)) == 20


def test_api_calls_filters_and_pagination(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    for agent in ("a", "b", "a"):
        oai(proxy, agent).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": agent}]
        )
    proxy.wait_calls(3)
    only_a = proxy.api("/api/calls", agent="a")["items"]
    assert len(only_a) == 2
    page1 = proxy.api("/api/calls", limit=2)
    page2 = proxy.api("/api/calls", limit=2, cursor=page1["next_cursor"])
    ids = [c["id"] for c in page1["items"] + page2["items"]]
    assert len(ids) == 3 == len(set(ids))


def test_refuses_admin_api_without_token(tmp_path: Path, upstream: FakeUpstream) -> None:
    with ProxyServer(tmp_path, upstream.url, admin_token="s3cret") as px:
        assert httpx.get(px.url + "/api/calls").status_code == 401
        ok = httpx.get(px.url + "/api/calls", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert httpx.get(px.url + "/healthz").json()["status"] == "ok"


def test_request_bytes_sent_upstream_unchanged_when_no_metering_edit(
    proxy: ProxyServer, upstream: FakeUpstream
) -> None:
    raw = b'{"model":"gpt-4o",  "messages":[{"role":"user","content":"spacing kept"}]}'
    httpx.post(proxy.url + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert upstream.last.body == raw
    assert orjson.loads(upstream.last.body)["messages"][0]["content"] == "spacing kept"


async def _dump_database(url: str) -> bytes:
    """Every row of every Interlock table, as text."""
    import sqlalchemy as sa

    from proxy.store.db import make_engine
    from proxy.store.models import Base

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            out = []
            for table in Base.metadata.sorted_tables:
                out += [repr(tuple(r)) for r in (await conn.execute(sa.select(table))).all()]
        return "\n".join(out).encode()
    finally:
        await engine.dispose()


def test_stalled_database_does_not_slow_requests_and_records_arrive_later(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    """A real PostgreSQL table lock stalls every write; agents keep being served, records spool
    to disk and all arrive, once each, when the lock goes away."""
    import asyncpg

    url = create_test_database()
    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    with ProxyServer(tmp_path, upstream.url, database_url=url, writer_timeout_s=0.5) as px:
        oai(px).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "warm"}])
        px.wait_calls(1)
        lock_held = asyncio.Event()
        release = asyncio.Event()

        async def hold_lock() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                tx = conn.transaction()
                await tx.start()
                await conn.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
                lock_held.set()
                await release.wait()
                await tx.rollback()
            finally:
                await conn.close()

        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_until_complete, args=(hold_lock(),), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not lock_held.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lock_held.is_set()
        started = time.monotonic()
        for i in range(30):
            oai(px).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"q{i}"}])
        served_in = time.monotonic() - started
        time.sleep(1.5)  # the stalled write times out; new records go to the spool
        health = httpx.get(px.url + "/healthz").json()["writer"]
        loop.call_soon_threadsafe(release.set)
        thread.join(10)
        assert served_in < 10, f"30 requests took {served_in:.1f}s while the database was stalled"
        assert health["spooled"] > 0
        rows = px.wait_calls(31, timeout=30)
        assert len(rows) == 31 == len({r["id"] for r in rows})
    drop_test_database(url)


class _TcpGate:
    """A loopback port that refuses connections until opened, then forwards to PostgreSQL."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def open(self) -> None:
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._pipe, "127.0.0.1", self.port), self.loop).result(5)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", 5432)

        async def copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.close()

        await asyncio.gather(copy(reader, up_w), copy(up_r, writer), return_exceptions=True)


def test_database_down_at_start_is_served_and_caught_up(tmp_path: Path, upstream: FakeUpstream) -> None:
    """The proxy starts and serves while PostgreSQL is unreachable; when it comes back the
    schema is migrated and every spooled call is written."""
    url = create_test_database()
    gate = _TcpGate()
    gated = url.replace("127.0.0.1:5432", f"127.0.0.1:{gate.port}")
    with ProxyServer(tmp_path, upstream.url, database_url=gated, writer_timeout_s=0.5) as px:
        for i in range(5):
            out = oai(px).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"q{i}"}])
            assert out.choices[0].message.content
        deadline = time.monotonic() + 10
        while httpx.get(px.url + "/healthz").json()["writer"]["spooled"] < 5 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert httpx.get(px.url + "/healthz").json()["writer"]["spooled"] >= 5
        gate.open()
        deadline = time.monotonic() + 40
        items: list[dict[str, object]] = []
        while len(items) < 5 and time.monotonic() < deadline:
            r = httpx.get(px.url + "/api/calls", params={"limit": 100})
            assert r.status_code in (200, 503), r.text  # 503 until the database is back and migrated
            items = r.json()["items"] if r.status_code == 200 else []
            time.sleep(0.2)
        assert len({c["id"] for c in items}) == 5
    drop_test_database(url)


async def test_a_settle_that_never_suspends_runs_in_the_callers_task() -> None:
    seen: list[asyncio.Task[object] | None] = []

    async def settle() -> str:
        seen.append(asyncio.current_task())
        return "done"

    assert await _shielded(settle()) == "done"
    assert seen == [asyncio.current_task()]


async def test_a_settle_that_suspends_finishes_even_when_its_caller_is_cancelled() -> None:
    release = asyncio.Event()
    steps: list[str] = []

    async def settle() -> None:
        steps.append("started")
        await release.wait()
        await asyncio.sleep(0)
        steps.append("finished")

    caller = asyncio.create_task(_shielded(settle()))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    for _ in range(100):
        if "finished" in steps:
            break
        await asyncio.sleep(0.001)
    assert steps == ["started", "finished"]


async def test_a_settle_that_suspends_hands_back_its_result_and_its_error() -> None:
    async def answer() -> int:
        await asyncio.sleep(0.001)
        return 42

    async def fail() -> None:
        await asyncio.sleep(0.001)
        raise KeyError("guard")

    assert await _shielded(answer()) == 42
    with pytest.raises(KeyError):
        await _shielded(fail())


def test_an_unreachable_upstream_is_logged_with_the_502(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with caplog.at_level("WARNING", logger="interlock.relay"), ProxyServer(tmp_path, closed) as px:
        r = httpx.post(px.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": []})
    assert r.status_code == 502
    assert f"could not reach upstream 'openai' ({closed})" in caplog.text and "answered 502" in caplog.text
