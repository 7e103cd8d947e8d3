"""The fake upstream speaks the real wire formats: the real SDKs, pointed straight at it, accept it."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream, Reply, ToolCall

WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
USER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def oai(up: FakeUpstream) -> openai.OpenAI:
    return openai.OpenAI(base_url=up.url + "/v1", api_key="sk-test-key", max_retries=0)


@pytest.fixture
def claude(up: FakeUpstream) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=up.url, api_key="sk-ant-test", max_retries=0)


def sse_lines(up: FakeUpstream, path: str, body: dict) -> list[str]:
    with httpx.stream("POST", up.url + path, json=body) as resp:
        return [line for line in resp.iter_lines() if line]


# ------------------------------------------------------------------ OpenAI chat
def test_chat_default_reply_echoes_the_last_user_text(up: FakeUpstream, oai: openai.OpenAI) -> None:
    done = oai.chat.completions.create(model="gpt-4o", messages=USER)

    assert done.choices[0].message.content == "ok: What is the weather in Paris?"
    assert done.choices[0].finish_reason == "stop"
    assert done.model == "gpt-4o"


def test_chat_usage_carries_cached_and_reasoning_tokens(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(text="hi", input_tokens=120, output_tokens=7, cached_tokens=100, reasoning_tokens=5))

    usage = oai.chat.completions.create(model="o3", messages=USER).usage

    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (120, 7, 127)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 100
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 5


def test_chat_stream_with_include_usage_ends_with_a_usage_chunk(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(text="one two three", output_tokens=3))

    chunks = list(oai.chat.completions.create(
        model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}))

    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "one two three"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens == 3


def test_chat_stream_without_include_usage_has_no_usage_key(up: FakeUpstream) -> None:
    lines = sse_lines(up, "/v1/chat/completions", {"model": "m", "messages": USER, "stream": True})

    assert lines[-1] == "data: [DONE]"
    assert not any('"usage"' in line for line in lines)


def test_chat_stream_with_include_usage_marks_every_chunk_usage_null(up: FakeUpstream) -> None:
    lines = sse_lines(up, "/v1/chat/completions", {"model": "m", "messages": USER, "stream": True,
                                                   "stream_options": {"include_usage": True}})

    assert all('"usage":null' in line for line in lines[:-2])
    assert '"choices":[]' in lines[-2] and '"prompt_tokens"' in lines[-2]


def test_chat_tool_calls_non_stream(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="call_1")]))

    choice = oai.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL]).choices[0]

    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert (call.id, call.function.name, call.function.arguments) == (  # type: ignore[union-attr]
        "call_1", "get_weather", '{"city":"Paris"}')


def test_chat_tool_call_deltas_assemble_in_the_sdk_stream_helper(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_time", {})]))

    with oai.chat.completions.stream(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL]) as stream:
        final = stream.get_final_completion()

    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [  # type: ignore[union-attr]
        ("get_weather", '{"city":"Paris"}'), ("get_time", "{}")]
    assert calls[0].id != calls[1].id


def test_chat_n_choices_stream_with_indexes(up: FakeUpstream, oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=USER, n=2, stream=True))

    assert {c.choices[0].index for c in chunks} == {0, 1}
    assert len(oai.chat.completions.create(model="gpt-4o", messages=USER, n=3).choices) == 3


def test_chat_stream_error_event_raises_in_the_sdk(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(text="a b c d", stream_error="upstream fell over"))

    with pytest.raises(openai.APIError, match="upstream fell over"):
        list(oai.chat.completions.create(model="gpt-4o", messages=USER, stream=True))


# ------------------------------------------------------------------ OpenAI errors
@pytest.mark.parametrize(("status", "exc"), [
    (400, openai.BadRequestError), (401, openai.AuthenticationError), (404, openai.NotFoundError),
    (429, openai.RateLimitError), (500, openai.InternalServerError),
])
def test_openai_errors_raise_the_sdk_class(up: FakeUpstream, oai: openai.OpenAI, status: int,
                                           exc: type[openai.APIStatusError]) -> None:
    up.script(Reply(status=status, error="nope"))

    with pytest.raises(exc) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=USER)

    assert caught.value.status_code == status
    assert caught.value.message.endswith("nope")


def test_invalid_json_is_refused_in_provider_format(up: FakeUpstream) -> None:
    resp = httpx.post(up.url + "/v1/messages", content=b"{not json", headers={"content-type": "application/json"})

    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


# ------------------------------------------------------------------ OpenAI responses
def test_responses_non_stream_text_and_usage(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(text="hello there", input_tokens=50, output_tokens=2, cached_tokens=10, reasoning_tokens=1))

    resp = oai.responses.create(model="gpt-4o", input="hi")

    assert resp.output_text == "hello there" and resp.status == "completed"
    assert resp.usage and (resp.usage.input_tokens, resp.usage.output_tokens) == (50, 2)
    assert resp.usage.input_tokens_details.cached_tokens == 10
    assert resp.usage.output_tokens_details.reasoning_tokens == 1


def test_responses_stream_deltas_and_completed_usage(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(text="one two three"))

    events = list(oai.responses.create(model="gpt-4o", input="hi", stream=True))

    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three"
    assert events[-1].response.usage.output_tokens == 3  # type: ignore[union-attr]
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_responses_function_call_through_the_sdk_stream_helper(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(text="checking", tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="call_w")]))

    with oai.responses.stream(model="gpt-4o", input="hi") as stream:
        final = stream.get_final_response()

    call = final.output[1]
    assert final.output_text == "checking"
    assert (call.type, call.call_id, call.arguments) == (  # type: ignore[union-attr]
        "function_call", "call_w", '{"city":"Paris"}')


def test_responses_previous_response_id_must_be_known(up: FakeUpstream, oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="gpt-4o", input="hi")

    second = oai.responses.create(model="gpt-4o", input="again", previous_response_id=first.id)

    assert second.previous_response_id == first.id
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model="gpt-4o", input="x", previous_response_id="resp_unknown")


# ------------------------------------------------------------------ Anthropic
def test_messages_non_stream_usage_with_cache(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.script(Reply(text="bonjour", input_tokens=30, output_tokens=4, cached_tokens=20, cache_creation_tokens=5))

    msg = claude.messages.create(model="claude-fake", max_tokens=100, messages=USER)

    assert msg.content[0].text == "bonjour" and msg.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (30, 4)
    assert (msg.usage.cache_read_input_tokens, msg.usage.cache_creation_input_tokens) == (20, 5)


def test_messages_stream_with_tool_use_assembles(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.script(Reply(text="let me look", tool_calls=[ToolCall("get_weather", {"city": "Paris"})], output_tokens=9))

    with claude.messages.stream(model="claude-fake", max_tokens=100, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "let me look"
    tool = final.content[1]
    assert (tool.type, tool.name, tool.input) == ("tool_use", "get_weather", {"city": "Paris"})  # type: ignore[union-attr]
    assert tool.id.startswith("toolu_")  # type: ignore[union-attr]
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 9


def test_messages_raw_stream_event_order(up: FakeUpstream) -> None:
    lines = sse_lines(up, "/v1/messages", {"model": "c", "max_tokens": 5, "messages": USER, "stream": True})

    kinds = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_messages_stream_error_event_raises(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.script(Reply(text="a b c d", stream_error="Overloaded"))

    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        list(claude.messages.create(model="claude-fake", max_tokens=10, messages=USER, stream=True))


@pytest.mark.parametrize(("status", "exc"), [
    (400, anthropic.BadRequestError), (429, anthropic.RateLimitError), (529, anthropic.APIStatusError),
])
def test_anthropic_errors_raise_the_sdk_class(up: FakeUpstream, claude: anthropic.Anthropic, status: int,
                                              exc: type[anthropic.APIStatusError]) -> None:
    up.script(Reply(status=status))

    with pytest.raises(exc) as caught:
        claude.messages.create(model="claude-fake", max_tokens=10, messages=USER)

    assert caught.value.status_code == status
    assert caught.value.body["type"] == "error"  # type: ignore[index]


def test_count_tokens(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    up.script(Reply(input_tokens=42))

    assert claude.messages.count_tokens(model="claude-fake", messages=USER).input_tokens == 42


# ------------------------------------------------------------------ embeddings, models
def test_embeddings_in_base64_decode_in_the_sdk(up: FakeUpstream, oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=4)

    assert [len(d.embedding) for d in result.data] == [4, 4]
    assert up.last.json["encoding_format"] == "base64"


def test_models_list_in_each_provider_shape(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    assert "fake" in [m.id for m in oai.models.list()]
    assert [m.id for m in claude.models.list()] == ["claude-fake"]


# ------------------------------------------------------------------ recording, scripting
def test_requests_are_recorded_with_headers_and_raw_body(up: FakeUpstream, claude: anthropic.Anthropic) -> None:
    claude.messages.create(model="claude-fake", max_tokens=10, messages=USER)

    rec = up.last
    assert (rec.method, rec.path) == ("POST", "/v1/messages")
    assert "sk-ant-test" in (rec.header("x-api-key") or rec.header("authorization") or "")  # SDK 2.x: Bearer
    assert rec.json["messages"] == USER and b"Paris" in rec.body
    assert rec.completed and not rec.cancelled


def test_responder_answers_when_nothing_is_scripted(oai: openai.OpenAI) -> None:
    with FakeUpstream(lambda req, path: Reply(text=f"{path} {req['model']}")) as up:
        client = openai.OpenAI(base_url=up.url + "/v1", api_key="k", max_retries=0)
        up.script(Reply(text="scripted first"))

        texts = [client.chat.completions.create(model="m", messages=USER).choices[0].message.content
                 for _ in range(2)]

    assert texts == ["scripted first", "/v1/chat/completions m"]


# ------------------------------------------------------------------ timing and failure knobs
def test_gate_holds_the_stream_until_release(up: FakeUpstream) -> None:
    up.script(Reply(text="first second third", gate_after=1))

    with httpx.stream("POST", up.url + "/v1/chat/completions",
                      json={"model": "m", "messages": USER, "stream": True}) as resp:
        lines = resp.iter_lines()
        first = next(lines)
        assert up.gate_reached.wait(2) and up.last.events_sent == 1
        up.release()
        rest = [line for line in lines if line]

    assert '"role":"assistant"' in first and rest[-1] == "data: [DONE]"


def test_client_disconnect_mid_stream_is_seen(up: FakeUpstream) -> None:
    up.script(Reply(text="a b c d e f", gate_after=2))

    with httpx.stream("POST", up.url + "/v1/messages",
                      json={"model": "c", "max_tokens": 5, "messages": USER, "stream": True}) as resp:
        next(resp.iter_raw())
        assert up.gate_reached.wait(2)

    assert up.wait_cancel(2)
    assert up.cancelled == [up.last] and not up.last.completed


def test_cut_after_resets_the_connection_mid_stream(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(text="a b c d e f", cut_after=3))

    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(model="m", messages=USER, stream=True):
            received.append(chunk)

    assert len(received) == 3 and up.last.cut


def test_cut_after_on_a_json_reply_truncates_the_body(up: FakeUpstream, oai: openai.OpenAI) -> None:
    up.script(Reply(text="hello", cut_after=0))

    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="m", messages=USER)


def test_hang_until_the_client_gives_up(up: FakeUpstream) -> None:
    up.script(Reply(hang=True))

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(up.url + "/v1/chat/completions", json={"model": "m", "messages": USER}, timeout=0.2)

    assert up.wait_cancel(2) and up.last.cancelled


def test_stop_ends_a_hanging_reply_promptly() -> None:
    up = FakeUpstream().start()
    up.script(Reply(hang=True))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx.post(up.url + "/v1/chat/completions", json={"model": "m", "messages": USER}, timeout=10)
        except httpx.HTTPError as exc:
            errors.append(exc)

    client = threading.Thread(target=call)
    client.start()
    up.wait_requests(1)
    started = time.monotonic()
    up.stop()
    client.join(5)

    assert time.monotonic() - started < 3 and errors


def test_chunk_delay_paces_the_stream(up: FakeUpstream) -> None:
    up.script(Reply(chunks=["a", "b", "c"], chunk_delay=0.05, headers_delay=0.05))

    started = time.monotonic()
    sse_lines(up, "/v1/chat/completions", {"model": "m", "messages": USER, "stream": True})

    assert time.monotonic() - started >= 0.05 + 5 * 0.05  # role, a, b, c, finish, [DONE]


# ------------------------------------------------------------------ script mode
def test_runs_as_a_script_with_max_tokens_words() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(__file__).with_name("fake_upstream.py")
    proc = subprocess.Popen([sys.executable, str(script), "--port", str(port)], stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None and b"fake upstream on" in proc.stderr.readline()
        body = {"model": "fake", "messages": USER, "max_tokens": 5, "stream": True}
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as resp:
            deltas = [line for line in resp.iter_lines() if '"content":"' in line and '"role"' not in line]
        assert len(deltas) == 5
    finally:
        proc.terminate()
        proc.wait(5)


async def test_async_sdk_and_async_waits(up: FakeUpstream) -> None:
    client = openai.AsyncOpenAI(base_url=up.url + "/v1", api_key="k", max_retries=0)
    up.script(Reply(text="a b c", gate_after=1))

    stream = await client.chat.completions.create(model="m", messages=USER, stream=True)
    first = await anext(aiter(stream))
    assert await up.until_gate() and first.choices[0].delta.role == "assistant"
    await stream.close()

    assert await up.until_cancel()
