import orjson

from proxy.providers.openai import OpenAIChat, OpenAIResponses
from proxy.sse import SSESplitter
from tests.providers.factory import blank_call

CHAT_REQ = {
    "model": "gpt-4o-mini",
    "stream": True,
    "max_tokens": 100,
    "messages": [
        {"role": "system", "content": "You are the planner."},
        {"role": "user", "content": [{"type": "text", "text": "plan it"}, {"type": "image_url", "image_url": {"url": "data:x"}}]},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{\"q\":1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "result text"},
    ],
    "tools": [{"type": "function", "function": {"name": "search", "parameters": {}}}],
}


def _chunk(**kw: object) -> bytes:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024"}
    base.update(kw)
    return b"data: " + orjson.dumps(base) + b"\n\n"


def test_chat_request_is_normalised() -> None:
    call = blank_call()
    OpenAIChat().parse_request(call, CHAT_REQ)
    assert call.model_requested == "gpt-4o-mini" and call.stream and call.max_tokens == 100
    assert call.system == "You are the planner."
    assert [m.role for m in call.messages] == ["system", "user", "assistant", "tool"]
    assert call.messages[1].text == "plan it"
    assert call.messages[2].tool_calls[0].name == "search"
    assert call.messages[3].tool_call_id == "call_1"
    assert call.tools == ["search"]
    assert call.client_wants_usage is False


def test_usage_is_requested_upstream_only_when_client_did_not() -> None:
    provider = OpenAIChat()
    call = blank_call()
    provider.parse_request(call, CHAT_REQ)
    sent = orjson.loads(provider.upstream_body(call, CHAT_REQ, orjson.dumps(CHAT_REQ)))
    assert sent["stream_options"] == {"include_usage": True}
    asked = dict(CHAT_REQ, stream_options={"include_usage": True})
    raw = orjson.dumps(asked)
    call2 = blank_call()
    provider.parse_request(call2, asked)
    assert provider.upstream_body(call2, asked, raw) is raw


def test_usage_chunk_is_hidden_from_a_client_that_did_not_ask() -> None:
    provider = OpenAIChat()
    call = blank_call()
    provider.parse_request(call, CHAT_REQ)
    stream = (
        _chunk(choices=[{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}], usage=None)
        + _chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}], usage=None)
        + _chunk(choices=[], usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11})
        + b"data: [DONE]\n\n"
    )
    parser = provider.stream_parser(call)
    relayed = b""
    for ev in SSESplitter().feed(stream):
        out = provider.filter_event(call, ev)
        relayed += out or b""
        parser.on_event(ev)
    parser.finish()
    assert b'"usage"' not in relayed
    assert relayed.count(b"data: ") == 3
    assert call.usage.input_tokens == 9 and call.usage.output_tokens == 2
    assert call.completion.text == "Hi" and call.finish_reason == "stop"


def test_chat_stream_assembles_tool_call_arguments() -> None:
    call = blank_call()
    parser = OpenAIChat().stream_parser(call)
    tc1 = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{\"a\""}}
    tc2 = {"index": 0, "function": {"arguments": ":1}"}}
    for ev in SSESplitter().feed(
        _chunk(choices=[{"index": 0, "delta": {"tool_calls": [tc1]}}])
        + _chunk(choices=[{"index": 0, "delta": {"tool_calls": [tc2]}, "finish_reason": "tool_calls"}])
    ):
        parser.on_event(ev)
    parser.finish()
    assert [(t.id, t.name, t.arguments) for t in call.completion.tool_calls] == [("call_9", "lookup", '{"a":1}')]
    assert call.finish_reason == "tool_calls"


def test_chat_body_usage_with_cached_and_reasoning_tokens() -> None:
    call = blank_call()
    body = {
        "id": "chatcmpl-2", "object": "chat.completion", "model": "o3-2025",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "done"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70,
                  "prompt_tokens_details": {"cached_tokens": 32},
                  "completion_tokens_details": {"reasoning_tokens": 12}},
    }
    OpenAIChat().parse_body(call, orjson.dumps(body))
    u = call.usage
    assert (u.input_tokens, u.output_tokens, u.cached_tokens, u.reasoning_tokens) == (50, 20, 32, 12)
    assert call.finish_reason == "length" and call.model_served == "o3-2025" and call.completion.text == "done"


def test_responses_request_and_stream() -> None:
    call = blank_call(operation="responses", path="/v1/responses")
    provider = OpenAIResponses()
    provider.parse_request(call, {
        "model": "gpt-4.1", "instructions": "You are the supervisor.", "previous_response_id": "resp_0",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "go"}]},
                  {"type": "function_call_output", "call_id": "fc_1", "output": "42"}],
        "stream": True,
    })
    assert call.system == "You are the supervisor." and call.previous_response_id == "resp_0"
    assert [(m.role, m.text) for m in call.messages] == [("user", "go"), ("tool", "42")]
    parser = provider.stream_parser(call)
    done = {"type": "response.completed", "response": {
        "id": "resp_1", "model": "gpt-4.1-2025", "status": "completed",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hello"}]}],
        "usage": {"input_tokens": 12, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}}}}
    stream = (b"event: response.output_text.delta\ndata: " + orjson.dumps({"type": "response.output_text.delta", "delta": "Hello"})
              + b"\n\nevent: response.completed\ndata: " + orjson.dumps(done) + b"\n\n")
    chunks = [parser.on_event(ev) for ev in SSESplitter().feed(stream)]
    parser.finish()
    assert chunks[0] is not None and chunks[0].text_delta == "Hello"
    assert call.usage.input_tokens == 12 and call.usage.output_tokens == 3
    assert call.completion.response_id == "resp_1" and call.completion.text == "Hello"
    assert call.finish_reason == "stop"


def test_openai_error_shapes() -> None:
    p = OpenAIChat()
    body = orjson.loads(p.error_body(429, "interlock_budget_exceeded", "interlock_budget_exceeded", "stop"))
    assert body == {"error": {"message": "stop", "type": "interlock_budget_exceeded", "param": None,
                              "code": "interlock_budget_exceeded"}}
    ev = p.error_event("t", "c", "m")
    assert ev.startswith(b"data: ") and ev.endswith(b"\n\n")
