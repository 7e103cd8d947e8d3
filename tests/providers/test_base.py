"""Bounds shared by every provider adapter (proxy/providers/base.py)."""

from __future__ import annotations

import orjson

from proxy.providers.anthropic import AnthropicMessages
from proxy.providers.base import usage_in_tail
from proxy.providers.openai import OpenAIChat
from proxy.sse import SSESplitter
from tests.providers.factory import blank_call


def _chat_chunk(delta: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps({"id": "c", "model": "m", "choices": [{"index": 0, "delta": delta}]}) + b"\n\n"


def test_usage_is_found_in_the_last_bytes_of_a_body() -> None:
    tail = b'0.5]}],"model":"m","usage":{"prompt_tokens":7,"details":{"x":"a}\\"b"},"total_tokens":7}}'
    assert usage_in_tail(tail) == {"prompt_tokens": 7, "details": {"x": 'a}"b'}, "total_tokens": 7}


def test_usage_cut_off_or_absent_is_none() -> None:
    assert usage_in_tail(b'"usage":{"prompt_tokens":7') is None
    assert usage_in_tail(b'{"data":[1,2,3]}') is None
    assert usage_in_tail(b'"usage":"not an object" {"a":1}') is None


def test_stream_text_past_the_limit_is_counted_not_kept() -> None:
    call = blank_call()
    parser = OpenAIChat().stream_parser(call)
    parser.text_limit = 10
    for ev in SSESplitter().feed(_chat_chunk({"content": "abcdefgh"}) * 3):
        parser.on_event(ev)
    parser.finish()
    assert call.completion.text == "abcdefghab" and parser.capped and parser.text_chars == 24


def test_tool_arguments_count_against_the_same_limit() -> None:
    call = blank_call()
    parser = OpenAIChat().stream_parser(call)
    parser.text_limit = 6
    first = {"tool_calls": [{"index": 0, "id": "t", "function": {"name": "f", "arguments": "{\"a\":"}}]}
    more = {"tool_calls": [{"index": 0, "function": {"arguments": "12345}"}}]}
    for ev in SSESplitter().feed(_chat_chunk(first) + _chat_chunk(more)):
        parser.on_event(ev)
    parser.finish()
    assert call.completion.tool_calls[0].arguments == "{\"a\":1" and parser.capped


def test_anthropic_usage_from_a_tail_counts_cache_reads() -> None:
    call = blank_call(provider="anthropic", operation="messages")
    AnthropicMessages().parse_usage(call, {"input_tokens": 5, "cache_read_input_tokens": 10, "output_tokens": 3})
    assert (call.usage.input_tokens, call.usage.cached_tokens, call.usage.output_tokens) == (15, 10, 3)
