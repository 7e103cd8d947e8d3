"""Gemini through Interlock with the real `google-genai` SDK, against a fake upstream that speaks the
Gemini wire format (generateContent JSON, streamGenerateContent `?alt=sse`, countTokens)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from google import genai
from google.genai import errors, types

from proxy.call import Message, ToolCall
from proxy.providers.gemini import PROVIDER
from proxy.providers.openai import OpenAIChat
from proxy.redact import api_key_hash
from tests.fake_upstream import Ctx, FakeUpstream, Json, Reply
from tests.fake_upstream import ToolCall as FakeToolCall
from tests.providers.factory import blank_call
from tests.proxyserver import ProxyServer

RULES = """
rules:
  - {name: run-budget, kind: budget, scope: run, limit_tokens: 300, action: deny}
"""
SMALL = types.GenerateContentConfig(max_output_tokens=100)  # what the budget reserves for the answer
_MODEL = re.compile(r"/models/([^/:]+):")


class GeminiWire:
    """The Gemini API's answers (ai.google.dev/api/generate-content), rendered from a `Reply`."""

    stream_type = b"text/event-stream"

    def claims(self, path: str) -> bool:
        return path.startswith(("/v1beta/", "/v1/models/"))

    def streams(self, path: str, req: Json) -> bool:
        return path.endswith(":streamGenerateContent")

    @staticmethod
    def _model(path: str) -> str:
        m = _MODEL.search(path)
        return m.group(1) if m else "gemini"

    def _chunk(self, path: str, ctx: Ctx, parts: list[Json], usage: Json, finish: str | None) -> Json:
        candidate: Json = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": self._model(path) + "-001",
                "responseId": "resp-" + str(ctx.input_tokens)}

    def _usage(self, ctx: Ctx) -> Json:
        return {"promptTokenCount": ctx.input_tokens, "candidatesTokenCount": ctx.output_tokens,
                "totalTokenCount": ctx.input_tokens + ctx.output_tokens}

    def _calls(self, ctx: Ctx) -> list[Json]:
        return [{"functionCall": {"name": t.name, "args": orjson.loads(t.arguments_json)}} for t in ctx.reply.tool_calls]

    def body(self, path: str, ctx: Ctx) -> Json:
        if path.endswith(":countTokens"):
            return {"totalTokens": ctx.input_tokens}
        parts = ([{"text": ctx.text}] if ctx.text else []) + self._calls(ctx)
        return self._chunk(path, ctx, parts, self._usage(ctx), ctx.reply.finish_reason or "STOP")

    def events(self, path: str, ctx: Ctx) -> list[bytes]:
        chunks = [self._chunk(path, ctx, [{"text": p}], {"promptTokenCount": ctx.input_tokens,
                                                         "totalTokenCount": ctx.input_tokens}, None)
                  for p in ctx.pieces]
        chunks.append(self._chunk(path, ctx, self._calls(ctx) or [{"text": ""}], self._usage(ctx), "STOP"))
        return [b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks]

    def error(self, status: int, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        return orjson.dumps({"error": {"code": status, "message": message, "status": "INTERNAL"}}), []


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(wire=GeminiWire()) as up:
        yield up


@pytest.fixture
def px(tmp_path: Path, upstream: FakeUpstream) -> Iterator[ProxyServer]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "test.yaml").write_text(RULES)
    with ProxyServer(tmp_path, "http://127.0.0.1:9", upstream_gemini=upstream.url, rules_dir=rules) as server:
        yield server


def _client(px: ProxyServer, run: str, agent: str = "planner", key: str = "gk-one") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(
        base_url=px.url, headers={"X-Interlock-Run": run, "X-Interlock-Agent": agent}))


def test_generate_content_is_recorded_with_model_tokens_agent_and_hashed_key(
        px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="Otters hold hands.", input_tokens=42, output_tokens=7))

    client = _client(px, "g-run")
    answer = client.models.generate_content(
        model="gemini-2.0-flash", contents="Tell me about otters",
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=64))

    assert answer.text == "Otters hold hands."
    assert upstream.last.header("x-goog-api-key") == "gk-one"  # forwarded untouched
    (call,) = px.wait_calls(1)
    assert (call["provider"], call["operation"], call["model_requested"]) == (
        "gcp.gemini", "chat", "gemini-2.0-flash")
    assert call["model_served"] == "gemini-2.0-flash-001"
    assert (call["input_tokens"], call["output_tokens"]) == (42, 7)
    assert call["agent"] == "planner" and call["run_id"] == "g-run"
    assert re.fullmatch(r"/v1(beta)?/models/gemini-2\.0-flash:generateContent", call["path"])  # no key in it
    assert call["input_tokens_counted"] > 0 and "input_tokens_estimated" in call["flags"]
    full = px.api(f"/api/calls/{call['id']}")
    assert "gk-one" not in orjson.dumps(full).decode()
    assert full["api_key_hash"] == api_key_hash("gk-one")


def test_stream_usage_and_text_are_parsed(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(chunks=["Otters ", "float ", "asleep."], input_tokens=30, output_tokens=5))

    client = _client(px, "g-stream")
    pieces = list(client.models.generate_content_stream(
        model="gemini-2.5-pro", contents="How do otters sleep?", config=SMALL))

    assert "".join(p.text or "" for p in pieces) == "Otters float asleep."
    assert upstream.last.query == "alt=sse"
    (call,) = px.wait_calls(1)
    assert call["stream"] is True and call["outcome"] == "ok"
    assert (call["input_tokens"], call["output_tokens"]) == (30, 5)
    assert call["finish_reason"] == "stop"
    assert orjson.loads(px.api(f"/api/calls/{call['id']}")["response_content"])["text"] == "Otters float asleep."


def test_budget_refusal_is_a_gemini_error_the_sdk_raises(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(text="a", input_tokens=200, output_tokens=150))
    client = _client(px, "g-budget")
    client.models.generate_content(model="gemini-2.0-flash", contents="one", config=SMALL)

    with pytest.raises(errors.ClientError) as err:
        client.models.generate_content(model="gemini-2.0-flash", contents="two", config=SMALL)
    with pytest.raises(errors.ClientError) as streamed:
        list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="three", config=SMALL))

    for e in (err.value, streamed.value):
        assert (e.code, e.status) == (429, "RESOURCE_EXHAUSTED")
        assert "budget" in (e.message or "")
    assert len(upstream.requests) == 1, "a refused request reached the upstream"
    assert len(px.wait_calls(1, status="denied")) == 2


def test_query_key_is_hashed_like_the_header_and_never_recorded(px: ProxyServer, upstream: FakeUpstream) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 50}}
    r = httpx.post(px.url + "/v1beta/models/gemini-2.0-flash:generateContent?key=gk-secret", json=body)

    assert r.status_code == 200 and upstream.last.query == "key=gk-secret"  # the upstream needs it
    (call,) = px.wait_calls(1)
    full = px.api(f"/api/calls/{call['id']}")
    assert "gk-secret" not in orjson.dumps(full).decode()
    assert full["api_key_hash"] == api_key_hash("gk-secret")


def test_count_tokens_records_the_upstream_count(px: ProxyServer, upstream: FakeUpstream) -> None:
    upstream.script(Reply(input_tokens=17))

    client = _client(px, "g-count")
    counted = client.models.count_tokens(model="gemini-2.0-flash", contents="How many?")

    assert counted.total_tokens == 17
    (call,) = px.wait_calls(1)
    assert (call["operation"], call["input_tokens"]) == ("count_tokens", 17)


def test_a_planners_text_fed_to_a_writer_links_them(px: ProxyServer, upstream: FakeUpstream) -> None:
    plan = "Plan: describe how sea otters use kelp forests to anchor themselves while they sleep at night."
    upstream.script(Reply(text=plan, input_tokens=20, output_tokens=20), Reply(text="done", input_tokens=40,
                                                                               output_tokens=2))
    planner, writer = _client(px, "g-graph", "planner"), _client(px, "g-graph", "writer")
    planner.models.generate_content(model="gemini-2.0-flash", contents="Make a plan", config=SMALL)
    writer.models.generate_content(model="gemini-2.0-flash", contents=plan, config=SMALL)

    px.wait_calls(2)
    for _ in range(100):
        graph = px.api("/api/runs/g-graph/graph")
        if graph["agent_edges"]:
            break
        time.sleep(0.05)
    assert {(e["source"], e["target"]) for e in graph["agent_edges"]} >= {("planner", "writer")}


def test_function_calls_and_responses_normalise_like_openai_tool_calls() -> None:
    """The graph linker and the loop guards read Call.messages: a Gemini history with a function
    call and its response becomes what the same OpenAI chat history becomes."""
    gemini = {"contents": [
        {"role": "user", "parts": [{"text": "Weather in Oslo?"}]},
        {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "weather", "args": {"city": "Oslo"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "weather",
                                                         "response": {"temp": 3}}}]},
    ], "tools": [{"functionDeclarations": [{"name": "weather"}]}]}
    openai = {"model": "gpt-4o", "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "weather", "content": '{"temp":3}'},
    ], "tools": [{"type": "function", "function": {"name": "weather"}}]}
    g, o = blank_call(), blank_call()
    PROVIDER.endpoints[0].adapter.parse_request(g, gemini)
    OpenAIChat().parse_request(o, openai)

    assert g.messages == o.messages
    assert g.tools == o.tools == ["weather"]
    assert g.messages[1].tool_calls == [ToolCall("c1", "weather", '{"city":"Oslo"}')]
    assert g.messages[2] == Message("tool", '{"temp":3}', [], "c1", "weather")


def test_a_function_response_continues_the_call_that_asked_for_it(px: ProxyServer, upstream: FakeUpstream) -> None:
    """The Gemini API sends function calls without ids: the response pairs by name, and the graph links
    the call that asked for the tool to the call that brought its result."""
    upstream.script(Reply(tool_calls=[FakeToolCall("weather", {"city": "Oslo"})], input_tokens=10, output_tokens=4),
                    Reply(text="It is 3 degrees in Oslo.", input_tokens=20, output_tokens=6))
    client = _client(px, "g-tools")
    asked = types.Content(role="user", parts=[types.Part(text="What is the weather in Oslo?")])
    first = client.models.generate_content(model="gemini-2.0-flash", contents=[asked], config=SMALL)
    assert first.function_calls and first.function_calls[0].name == "weather"
    result = types.Part.from_function_response(name="weather", response={"temp": 3})
    assert first.candidates and first.candidates[0].content
    client.models.generate_content(model="gemini-2.0-flash", config=SMALL, contents=[
        asked, first.candidates[0].content, types.Content(role="user", parts=[result])])

    one, two = sorted(px.wait_calls(2), key=lambda c: c["started_at"])
    for _ in range(100):
        edges = px.api("/api/runs/g-tools/graph")["edges"]
        if edges:
            break
        time.sleep(0.05)
    assert (one["id"], two["id"]) in {(e["source"], e["target"]) for e in edges}


def test_a_stream_cut_by_a_guard_ends_in_a_gemini_error_the_sdk_raises(upstream: FakeUpstream, tmp_path: Path) -> None:
    rules = tmp_path / "cut-rules"
    rules.mkdir()
    (rules / "cut.yaml").write_text(
        "rules:\n  - {name: tight, kind: budget, scope: run, limit_tokens: 300, cutoff: true, action: deny}\n")
    upstream.script(Reply(chunks=["lorem ipsum dolor sit amet, consectetur adipiscing elit " * 2] * 40,
                          input_tokens=10, output_tokens=900))
    with ProxyServer(tmp_path, "http://127.0.0.1:9", upstream_gemini=upstream.url, rules_dir=rules) as px:
        client = _client(px, "g-cut")
        seen: list[str] = []
        with pytest.raises(errors.ClientError) as err:
            for piece in client.models.generate_content_stream(
                    model="gemini-2.0-flash", contents="Go on", config=types.GenerateContentConfig(max_output_tokens=250)):
                seen.append(piece.text or "")
        assert (err.value.code, err.value.status) == (429, "RESOURCE_EXHAUSTED")
        assert "ran out mid-stream" in (err.value.message or "") and seen  # what came before the cut arrived
        (call,) = px.wait_calls(1)
        assert call["outcome"] == "denied"


GUARDS = """
rules:
  - {name: retries, kind: loop, detect: retry, window: 10m, max_repeats: 2, action: deny}
  - name: fits
    kind: context
    action: deny
    models: {gemini-tiny: {context_window: 300, max_output: 100}}
"""


def test_loop_and_context_refusals_are_gemini_errors(upstream: FakeUpstream, tmp_path: Path) -> None:
    rules = tmp_path / "guard-rules"
    rules.mkdir()
    (rules / "guards.yaml").write_text(GUARDS)
    with ProxyServer(tmp_path, "http://127.0.0.1:9", upstream_gemini=upstream.url, rules_dir=rules) as px:
        client = _client(px, "g-guards")
        for _ in range(2):
            client.models.generate_content(model="gemini-2.0-flash", contents="Are we there yet?", config=SMALL)
        with pytest.raises(errors.ClientError) as loop:
            client.models.generate_content(model="gemini-2.0-flash", contents="Are we there yet?", config=SMALL)
        with pytest.raises(errors.ClientError) as context:
            client.models.generate_content(model="gemini-tiny", contents="otters " * 400, config=SMALL)

    assert (loop.value.code, loop.value.status) == (429, "RESOURCE_EXHAUSTED") and "retries" in (loop.value.message or "")
    assert (context.value.code, context.value.status) == (400, "INVALID_ARGUMENT")
    assert "context" in (context.value.message or "")
    assert len(upstream.requests) == 2
