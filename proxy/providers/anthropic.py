"""Anthropic wire formats: Messages (JSON and SSE), count_tokens, other /v1/* paths.

Tool results arrive inside user turns as `tool_result` blocks; they are normalised to
role=tool messages so the graph and guards see one shape for both providers.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.call import Call, Chunk, Message, ToolCall
from proxy.providers.base import (
    Endpoint,
    Provider,
    ProviderSpec,
    StreamParser,
    as_int,
    as_str,
    loads,
    text_of,
)
from proxy.sse import Event
from proxy.tokens import ANTHROPIC_FACTOR

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def _blocks_to_messages(role: str, content: Any) -> list[Message]:
    if not isinstance(content, list):
        return [Message(role, text_of(content))]
    out: list[Message] = []
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "tool_use":
            args = orjson.dumps(block.get("input") or {}).decode()
            calls.append(ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), args))
        elif kind == "tool_result":
            out.append(Message("tool", text_of(block.get("content")), [], as_str(block.get("tool_use_id"))))
    if texts or calls or not out:
        out.append(Message(role, "\n".join(texts), calls))
    return out


def _usage(call: Call, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    u = call.usage
    inp = as_int(usage.get("input_tokens"))
    if inp is not None:
        cache_read = as_int(usage.get("cache_read_input_tokens")) or 0
        cache_new = as_int(usage.get("cache_creation_input_tokens")) or 0
        u.input_tokens = inp + cache_read + cache_new
        u.cached_tokens = cache_read
    out = as_int(usage.get("output_tokens"))
    if out is not None:
        u.output_tokens = out


class AnthropicMessages(Provider):
    name = "anthropic"

    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        call.model_requested = as_str(body.get("model"))
        call.stream = body.get("stream") is True
        call.max_tokens = as_int(body.get("max_tokens"))
        system = body.get("system")
        call.system = text_of(system) if system is not None else None
        messages: list[Message] = []
        for m in body.get("messages") or ():
            if isinstance(m, dict):
                messages.extend(_blocks_to_messages(str(m.get("role") or "user"), m.get("content")))
        call.messages = messages
        call.tools = [t["name"] for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("name"), str)]

    def parse_body(self, call: Call, body: bytes) -> None:
        data = loads(body)
        if not isinstance(data, dict) or data.get("type") != "message":
            return
        call.model_served = as_str(data.get("model"))
        call.completion.response_id = as_str(data.get("id"))
        _usage(call, data.get("usage"))
        reason = data.get("stop_reason")
        call.finish_reason = _FINISH.get(reason, reason) if isinstance(reason, str) else None
        msgs = _blocks_to_messages("assistant", data.get("content"))
        call.completion.text = "\n".join(m.text for m in msgs if m.role == "assistant")
        call.completion.tool_calls = [tc for m in msgs for tc in m.tool_calls]

    def parse_usage(self, call: Call, usage: dict[str, Any]) -> None:
        _usage(call, usage)

    def stream_parser(self, call: Call) -> StreamParser:
        return _MessagesStream(call)

    def error_body(self, status: int, etype: str, code: str | None, message: str) -> bytes:
        return orjson.dumps({"type": "error", "error": {"type": etype, "message": message}})

    def error_event(self, etype: str, code: str | None, message: str) -> bytes:
        payload = {"type": "error", "error": {"type": etype, "message": message}}
        return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"


class _MessagesStream(StreamParser):
    end_marker = b"event: message_stop"

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self._blocks: dict[int, ToolCall | list[str]] = {}
        self._args: dict[int, list[str]] = {}

    def on_event(self, event: Event) -> Chunk | None:
        data = loads(event.data)
        if not isinstance(data, dict):
            return None
        kind = data.get("type")
        if kind == "content_block_delta":
            return self._delta(event, data)
        if kind == "message_start":
            self._start(data.get("message"))
        elif kind == "content_block_start":
            self._block_start(data)
        elif kind == "message_delta":
            self._message_delta(data)
        return None

    def _start(self, msg: Any) -> None:
        if isinstance(msg, dict):
            self.call.model_served = as_str(msg.get("model"))
            self.call.completion.response_id = as_str(msg.get("id"))
            _usage(self.call, msg.get("usage"))

    def _block_start(self, data: dict[str, Any]) -> None:
        block = data.get("content_block") or {}
        idx = as_int(data.get("index")) or 0
        if isinstance(block, dict) and block.get("type") == "tool_use":
            self._blocks[idx] = ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), "")
        else:
            self._blocks[idx] = []

    def _delta(self, event: Event, data: dict[str, Any]) -> Chunk:
        delta = data.get("delta") or {}
        idx = as_int(data.get("index")) or 0
        target = self._blocks.setdefault(idx, [])
        text = ""
        if isinstance(delta, dict):
            if delta.get("type") == "text_delta" and isinstance(target, list):
                text = str(delta.get("text") or "")
                if self.text_chars < self.text_limit:  # past it (by at most this delta): counted only
                    target.append(text)
                else:
                    self.capped = True
                self.text_chars += len(text)
            elif delta.get("type") == "input_json_delta" and isinstance(target, ToolCall):
                text = str(delta.get("partial_json") or "")
                self.keep(self._args.setdefault(idx, []), text)
        return Chunk(event.raw, text)

    def _message_delta(self, data: dict[str, Any]) -> None:
        delta = data.get("delta") or {}
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if isinstance(reason, str):
            self.call.finish_reason = _FINISH.get(reason, reason)
        _usage(self.call, data.get("usage"))

    def finish(self) -> None:
        texts = ["".join(b) for _, b in sorted(self._blocks.items()) if isinstance(b, list)]
        self.call.completion.text = "\n".join(t for t in texts if t)[: self.text_limit]
        for idx, parts in self._args.items():
            block = self._blocks.get(idx)
            if isinstance(block, ToolCall):
                block.arguments = "".join(parts)
        self.call.completion.tool_calls = [b for _, b in sorted(self._blocks.items()) if isinstance(b, ToolCall)]


class AnthropicCountTokens(AnthropicMessages):
    """`/v1/messages/count_tokens`: request like Messages, answer `{"input_tokens": N}`."""

    def parse_body(self, call: Call, body: bytes) -> None:
        data = loads(body)
        if isinstance(data, dict):
            call.usage.input_tokens = as_int(data.get("input_tokens"))


class AnthropicGeneric(AnthropicMessages):
    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        call.model_requested = as_str(body.get("model"))

    def parse_body(self, call: Call, body: bytes) -> None:
        return None



_GENERIC = AnthropicGeneric()

PROVIDER = ProviderSpec(
    name="anthropic",
    system="anthropic",
    default_upstream="https://api.anthropic.com",
    endpoints=(
        Endpoint("/v1/messages", "messages", AnthropicMessages()),
        Endpoint("/v1/messages/count_tokens", "count_tokens", AnthropicCountTokens()),
        Endpoint("/v1/models", "models", _GENERIC, json_body=False),
        Endpoint("/v1/models/{model}", "models", _GENERIC, json_body=False),
    ),
    generic=_GENERIC,
    prefixes=("/v1/",),
    key_headers=(b"x-api-key", b"authorization"),
    marker_headers=(b"anthropic-version", b"x-api-key"),
    token_factor=ANTHROPIC_FACTOR,
    order=20,
)
