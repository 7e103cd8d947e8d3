"""Bedrock Converse / ConverseStream through Interlock with the real `boto3` `bedrock-runtime` client
(SigV4 with dummy credentials), against a fake upstream that speaks the Bedrock wire format
(JSON, and AWS event-stream binary frames for the stream) and whose requests are checked to still
carry a valid signature after Interlock forwarded them."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EventStreamError

from proxy.call import Message, ToolCall
from proxy.providers.anthropic import AnthropicMessages
from proxy.providers.bedrock import PROVIDER, EventStreamSplitter, frame
from proxy.redact import api_key_hash
from tests.fake_upstream import Ctx, FakeUpstream, Json, Recorded, Reply
from tests.fake_upstream import ToolCall as FakeToolCall
from tests.providers.factory import blank_call
from tests.proxyserver import ProxyServer

KEY_ID, SECRET, REGION = "AKIDINTERLOCKTEST", "interlock-test-secret", "us-east-1"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
RULES = """
rules:
  - {name: run-budget, kind: budget, scope: run, limit_tokens: 300, action: deny}
"""
SMALL = {"maxTokens": 100}


def _event(kind: str, body: Json) -> bytes:
    return frame([(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
                 orjson.dumps(body))


class BedrockWire:
    """The Bedrock Runtime Converse API (rest-json; ConverseStream as application/vnd.amazon.eventstream)."""

    stream_type = b"application/vnd.amazon.eventstream"

    def claims(self, path: str) -> bool:
        return path.startswith("/model/")

    def streams(self, path: str, req: Json) -> bool:
        return path.endswith("/converse-stream")

    def _usage(self, ctx: Ctx) -> Json:
        return {"inputTokens": ctx.input_tokens, "outputTokens": ctx.output_tokens,
                "totalTokens": ctx.input_tokens + ctx.output_tokens}

    def _stop(self, ctx: Ctx) -> str:
        return ctx.reply.finish_reason or ("tool_use" if ctx.reply.tool_calls else "end_turn")

    def body(self, path: str, ctx: Ctx) -> Json:
        content: list[Json] = [{"text": ctx.text}] if ctx.text else []
        content += [{"toolUse": {"toolUseId": ctx.call_ids[i], "name": t.name, "input": orjson.loads(t.arguments_json)}}
                    for i, t in enumerate(ctx.reply.tool_calls)]
        return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": self._stop(ctx),
                "usage": self._usage(ctx), "metrics": {"latencyMs": 12}}

    def events(self, path: str, ctx: Ctx) -> list[bytes]:
        out = [_event("messageStart", {"role": "assistant"})]
        out += [_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in ctx.pieces]
        out.append(_event("contentBlockStop", {"contentBlockIndex": 0}))
        for i, t in enumerate(ctx.reply.tool_calls, start=1):
            out.append(_event("contentBlockStart", {"contentBlockIndex": i, "start": {
                "toolUse": {"toolUseId": ctx.call_ids[i - 1], "name": t.name}}}))
            out.append(_event("contentBlockDelta", {"contentBlockIndex": i, "delta": {
                "toolUse": {"input": t.arguments_json}}}))
            out.append(_event("contentBlockStop", {"contentBlockIndex": i}))
        out.append(_event("messageStop", {"stopReason": self._stop(ctx)}))
        out.append(_event("metadata", {"usage": self._usage(ctx), "metrics": {"latencyMs": 12}}))
        return out

    def error(self, status: int, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        return orjson.dumps({"message": message}), [(b"x-amzn-errortype", b"InternalServerException")]


def signature_holds(rec: Recorded) -> bool:
    """Recompute the SigV4 signature of a request as the upstream received it."""
    auth = rec.header("authorization") or ""
    names = re.search(r"SignedHeaders=([^,]+)", auth)
    sig = re.search(r"Signature=([0-9a-f]+)", auth)
    assert names and sig, auth
    path = "/".join(quote(seg, safe="~") for seg in rec.path.split("/"))
    req = AWSRequest(method=rec.method, url=f"http://{rec.header('host')}{path}", data=rec.body,
                     headers={h: rec.headers[h] for h in names.group(1).split(";")})
    req.context["timestamp"] = rec.header("x-amz-date")
    signer = SigV4Auth(Credentials(KEY_ID, SECRET), "bedrock", REGION)
    return signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req) == sig.group(1)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(wire=BedrockWire()) as up:
        yield up


@pytest.fixture
def px(tmp_path: Path, upstream: FakeUpstream) -> Iterator[ProxyServer]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "test.yaml").write_text(RULES)
    with ProxyServer(tmp_path, "http://127.0.0.1:9", upstream_bedrock=upstream.url, rules_dir=rules) as server:
        yield server


def _client(px: ProxyServer, upstream: FakeUpstream, run: str, agent: str = "researcher") -> Any:
    """Signed for the configured Bedrock endpoint (the fake upstream), sent to Interlock; the
    Interlock headers go on after signing (they are not forwarded, so they must not be signed)."""
    client = boto3.Session(aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name=REGION).client(
        "bedrock-runtime", endpoint_url=upstream.url)

    def to_interlock(request: Any, **_: Any) -> None:
        request.url = request.url.replace(upstream.url, px.url, 1)
        request.headers["X-Interlock-Run"], request.headers["X-Interlock-Agent"] = run, agent

    client.meta.events.register("before-send.bedrock-runtime.*", to_interlock)
    return client


def _say(text: str) -> list[Json]:
    return [{"role": "user", "content": [{"text": text}]}]


def test_converse_is_recorded_and_the_signature_survives(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="Kelp.", input_tokens=33, output_tokens=4))

    answer = _client(px, upstream, "b-run").converse(modelId=MODEL, messages=_say("What do otters eat?"),
                                                      system=[{"text": "Be brief."}], inferenceConfig=SMALL)

    assert answer["output"]["message"]["content"] == [{"text": "Kelp."}]
    rec = upstream.last
    assert rec.path == f"/model/{MODEL}/converse" and "x-interlock-run" not in rec.headers
    assert signature_holds(rec), "Interlock changed a signed part of the request"
    (call,) = px.wait_calls(1)
    assert (call["provider"], call["operation"], call["model_requested"]) == ("aws.bedrock", "chat", MODEL)
    assert (call["input_tokens"], call["output_tokens"], call["finish_reason"]) == (33, 4, "stop")
    assert (call["agent"], call["run_id"], call["upstream"]) == ("researcher", "b-run", "bedrock")
    assert "input_tokens_estimated" in call["flags"]
    stored = px.api(f"/api/calls/{call['id']}")
    assert stored["api_key_hash"] == api_key_hash(KEY_ID)  # the access key id, not the signature
    assert SECRET not in orjson.dumps(stored).decode()


def test_converse_stream_frames_reach_the_sdk_and_usage_is_parsed(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["Otters ", "hold ", "hands."], input_tokens=21, output_tokens=3))

    out = _client(px, upstream, "b-stream").converse_stream(modelId=MODEL, messages=_say("Sleep?"),
                                                            inferenceConfig=SMALL)
    events = list(out["stream"])

    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Otters hold hands."
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 3
    assert signature_holds(upstream.last)
    (call,) = px.wait_calls(1)
    assert (call["stream"], call["outcome"], call["input_tokens"], call["output_tokens"]) == (True, "ok", 21, 3)
    assert orjson.loads(px.api(f"/api/calls/{call['id']}")["response_content"])["text"] == text


def test_budget_refusal_is_a_bedrock_error_boto3_raises_once(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="a", input_tokens=200, output_tokens=150))
    client = _client(px, upstream, "b-budget")
    sent: list[Any] = []
    client.meta.events.register("before-send.bedrock-runtime.*", lambda request, **_: sent.append(request))
    client.converse(modelId=MODEL, messages=_say("one"), inferenceConfig=SMALL)

    with pytest.raises(ClientError) as err:
        client.converse(modelId=MODEL, messages=_say("two"), inferenceConfig=SMALL)
    with pytest.raises(ClientError) as streamed:
        client.converse_stream(modelId=MODEL, messages=_say("three"), inferenceConfig=SMALL)

    for e in (err.value, streamed.value):
        assert e.response["Error"]["Code"] == "ServiceQuotaExceededException"
        assert "budget" in e.response["Error"]["Message"]
    assert isinstance(err.value, client.exceptions.ServiceQuotaExceededException)
    assert len(sent) == 3, "boto3 retried a refusal that retrying cannot fix"
    assert len(upstream.requests) == 1
    assert {c["status"] for c in px.wait_calls(1, status="denied")} == {400}


def test_a_stream_cut_by_a_guard_ends_in_an_event_stream_exception(upstream: FakeUpstream, tmp_path: Path) -> None:
    rules = tmp_path / "cut-rules"
    rules.mkdir()
    (rules / "cut.yaml").write_text(
        "rules:\n  - {name: tight, kind: budget, scope: run, limit_tokens: 300, cutoff: true, action: deny}\n")
    upstream.script(Reply(chunks=["lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2] * 40,
                          input_tokens=10, output_tokens=900))
    with ProxyServer(tmp_path, "http://127.0.0.1:9", upstream_bedrock=upstream.url, rules_dir=rules) as px:
        out = _client(px, upstream, "b-cut").converse_stream(modelId=MODEL, messages=_say("Go on"),
                                                             inferenceConfig={"maxTokens": 250})
        seen: list[Json] = []
        with pytest.raises(EventStreamError) as err:
            for event in out["stream"]:
                seen.append(event)
        assert err.value.response["Error"]["Code"] == "throttlingException"
        assert "ran out mid-stream" in err.value.response["Error"]["Message"]
        assert any("contentBlockDelta" in e for e in seen)  # what came before the cut reached the client
        (call,) = px.wait_calls(1)
        assert call["outcome"] == "denied"


def test_tool_use_and_results_normalise_like_anthropic_messages() -> None:
    """Converse is Anthropic's Messages in other words: the linker and guards see the same messages."""
    converse = {"messages": [
        {"role": "user", "content": [{"text": "Weather in Oslo?"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Oslo"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "3 C"}]}}]},
    ], "toolConfig": {"tools": [{"toolSpec": {"name": "weather", "inputSchema": {"json": {}}}}]}}
    messages = {"model": "claude", "max_tokens": 9, "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "3 C"}]},
    ], "tools": [{"name": "weather", "input_schema": {}}]}
    b, a = blank_call(), blank_call()
    PROVIDER.endpoints[0].adapter.parse_request(b, converse)
    AnthropicMessages().parse_request(a, messages)

    assert b.messages == a.messages and b.tools == a.tools == ["weather"]
    assert b.messages[1].tool_calls == [ToolCall("t1", "weather", '{"city":"Oslo"}')]
    assert b.messages[2] == Message("tool", "3 C", [], "t1")


def test_tool_use_streamed_is_recorded_and_continued_calls_link(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(tool_calls=[FakeToolCall("weather", {"city": "Oslo"}, id="tu-1")], input_tokens=12,
                          output_tokens=5),
                    Reply(text="3 degrees.", input_tokens=30, output_tokens=3))
    client = _client(px, upstream, "b-tools")
    first = list(client.converse_stream(modelId=MODEL, messages=_say("Weather in Oslo?"),
                                        inferenceConfig=SMALL)["stream"])
    assert any("toolUse" in e.get("contentBlockStart", {}).get("start", {}) for e in first)
    client.converse(modelId=MODEL, inferenceConfig=SMALL, messages=[
        *_say("Weather in Oslo?"),
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tu-1", "name": "weather", "input": {"city": "Oslo"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "tu-1", "content": [{"json": {"temp": 3}}]}}]}])

    one, two = sorted(px.wait_calls(2), key=lambda c: c["started_at"])
    assert one["finish_reason"] == "tool_calls"
    assert orjson.loads(px.api(f"/api/calls/{one['id']}")["response_content"])["tool_calls"] == [
        {"id": "tu-1", "name": "weather", "arguments": '{"city":"Oslo"}'}]
    for _ in range(100):
        edges = px.api("/api/runs/b-tools/graph")["edges"]
        if edges:
            break
        time.sleep(0.05)
    assert (one["id"], two["id"]) in {(e["source"], e["target"]) for e in edges}


def test_the_splitter_gives_the_same_events_however_the_bytes_are_cut() -> None:
    stream = b"".join([_event("messageStart", {"role": "assistant"}),
                       _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hi"}}),
                       _event("metadata", {"usage": {"inputTokens": 1, "outputTokens": 1}})])
    whole = EventStreamSplitter(1 << 20).feed(stream)
    assert [e.name for e in whole] == ["messageStart", "contentBlockDelta", "metadata"]
    for size in (1, 7, 13, 64):
        s = EventStreamSplitter(1 << 20)
        got = [e for i in range(0, len(stream), size) for e in s.feed(stream[i : i + size])]
        assert [(e.name, e.data, e.raw) for e in got] == [(e.name, e.data, e.raw) for e in whole]
    small = EventStreamSplitter(40)
    pieces = small.feed(stream)
    assert b"".join(p.raw for p in pieces) == stream and small.oversized >= 2  # passed on, not assembled


GUARDS = f"""
rules:
  - {{name: retries, kind: loop, detect: retry, window: 10m, max_repeats: 2, action: deny}}
  - name: fits
    kind: context
    action: deny
    models: {{"{MODEL}": {{context_window: 300, max_output: 100}}}}
"""


def test_loop_and_context_refusals_are_bedrock_errors(upstream: FakeUpstream, tmp_path: Path) -> None:
    rules = tmp_path / "guard-rules"
    rules.mkdir()
    (rules / "guards.yaml").write_text(GUARDS)
    with ProxyServer(tmp_path, "http://127.0.0.1:9", upstream_bedrock=upstream.url, rules_dir=rules) as px:
        client = _client(px, upstream, "b-guards")
        for _ in range(2):
            client.converse(modelId=MODEL, messages=_say("Are we there yet?"), inferenceConfig={"maxTokens": 10})
        with pytest.raises(ClientError) as loop:
            client.converse(modelId=MODEL, messages=_say("Are we there yet?"), inferenceConfig={"maxTokens": 10})
        with pytest.raises(ClientError) as context:
            client.converse(modelId=MODEL, messages=_say("otters " * 400), inferenceConfig={"maxTokens": 10})

    assert loop.value.response["Error"]["Code"] == "ServiceQuotaExceededException"
    assert "retries" in loop.value.response["Error"]["Message"]
    assert context.value.response["Error"]["Code"] == "ValidationException"
    assert context.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert len(upstream.requests) == 2
