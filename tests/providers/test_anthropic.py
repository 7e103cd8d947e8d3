import orjson

from proxy.providers.anthropic import AnthropicMessages
from proxy.sse import SSESplitter
from tests.providers.factory import blank_call


def _ev(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: ".encode() + orjson.dumps(dict(data, type=name)) + b"\n\n"


def test_tool_results_become_tool_messages() -> None:
    call = blank_call(provider="anthropic", operation="messages")
    AnthropicMessages().parse_request(call, {
        "model": "claude-sonnet-4-5", "max_tokens": 512, "system": [{"type": "text", "text": "You are the boss."}],
        "messages": [
            {"role": "user", "content": "do it"},
            {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                              {"type": "tool_use", "id": "toolu_1", "name": "worker", "input": {"task": "x"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": [{"type": "text", "text": "worker said hi"}]}]},
        ],
        "tools": [{"name": "worker", "input_schema": {}}],
    })
    assert call.system == "You are the boss." and call.max_tokens == 512 and call.tools == ["worker"]
    assert [(m.role, m.text) for m in call.messages] == [("user", "do it"), ("assistant", "calling"), ("tool", "worker said hi")]
    assert call.messages[1].tool_calls[0].arguments == '{"task":"x"}'
    assert call.messages[2].tool_call_id == "toolu_1"


def test_stream_usage_finish_and_tool_use() -> None:
    call = blank_call(provider="anthropic", operation="messages")
    parser = AnthropicMessages().stream_parser(call)
    stream = (
        _ev("message_start", {"message": {"id": "msg_1", "model": "claude-x", "usage": {
            "input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1}}})
        + _ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        + _ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hel"}})
        + _ev("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "lo"}})
        + _ev("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "f", "input": {}}})
        + _ev("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"k\": 1}"}})
        + _ev("message_delta", {"delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 7}})
        + _ev("message_stop", {})
    )
    for ev in SSESplitter().feed(stream):
        parser.on_event(ev)
    parser.finish()
    assert call.usage.input_tokens == 15 and call.usage.cached_tokens == 5 and call.usage.output_tokens == 7
    assert call.finish_reason == "length"
    assert call.completion.text == "Hello"
    assert [(t.id, t.arguments) for t in call.completion.tool_calls] == [("toolu_2", '{"k": 1}')]


def test_anthropic_error_shape() -> None:
    body = orjson.loads(AnthropicMessages().error_body(400, "interlock_context_overflow", None, "too long"))
    assert body == {"type": "error", "error": {"type": "interlock_context_overflow", "message": "too long"}}
