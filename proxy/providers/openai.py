"""OpenAI wire formats: Chat Completions, Responses, and any other /v1/* path (generic).

Chat streams are metered by asking upstream for `stream_options.include_usage`.  A client
that did not ask for it must not see it: the final usage-only chunk is dropped and the
`"usage":null` member the option adds to every other chunk is cut from the bytes (a byte
edit, not a re-serialisation).
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

_FINISH = {"max_output_tokens": "length", "content_filter": "content_filter"}


class _OpenAIErrors:
    def error_body(self, status: int, etype: str, code: str | None, message: str) -> bytes:
        return orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}})

    def error_event(self, etype: str, code: str | None, message: str) -> bytes:
        err = {"message": message, "type": etype, "param": None, "code": code}
        return b"data: " + orjson.dumps({"error": err}) + b"\n\n"


# ---------------------------------------------------------------- chat completions


def _chat_messages(body: dict[str, Any]) -> tuple[str | None, list[Message]]:
    system: list[str] = []
    out: list[Message] = []
    for m in body.get("messages") or ():
        if not isinstance(m, dict):
            continue
        role = str(m.get("role") or "user")
        text = text_of(m.get("content"))
        if role in ("system", "developer"):
            system.append(text)
        calls = [
            ToolCall(str(tc.get("id") or ""), str(fn.get("name") or ""), str(fn.get("arguments") or ""))
            for tc in m.get("tool_calls") or ()
            if isinstance(tc, dict) and isinstance(fn := tc.get("function") or {}, dict)
        ]
        name = m.get("name")
        out.append(Message(role, text, calls, m.get("tool_call_id"), name if isinstance(name, str) else None))
    return ("\n".join(system) if system else None), out


def _tool_names(body: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for t in body.get("tools") or ():
        if isinstance(t, dict):
            fn = t.get("function")
            name = fn.get("name") if isinstance(fn, dict) else t.get("name")
            if isinstance(name, str):
                names.append(name)
    return names


def _usage(call: Call, usage: Any, inp: str, out: str) -> None:
    """Usage in either OpenAI shape: `prompt_/completion_tokens` (chat) or `input_/output_tokens`
    (Responses), each with `*_details` for cached and reasoning tokens."""
    if not isinstance(usage, dict):
        return
    u = call.usage
    u.input_tokens = as_int(usage.get(inp))
    u.output_tokens = as_int(usage.get(out))
    details = usage.get(inp + "_details")
    if isinstance(details, dict):
        u.cached_tokens = as_int(details.get("cached_tokens"))
    details = usage.get(out + "_details")
    if isinstance(details, dict):
        u.reasoning_tokens = as_int(details.get("reasoning_tokens"))


def _chat_usage(call: Call, usage: Any) -> None:
    _usage(call, usage, "prompt_tokens", "completion_tokens")


class OpenAIChat(_OpenAIErrors, Provider):
    name = "openai"

    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        call.model_requested = as_str(body.get("model"))
        call.stream = body.get("stream") is True
        call.max_tokens = as_int(body.get("max_completion_tokens")) or as_int(body.get("max_tokens"))
        n = as_int(body.get("n"))
        if call.max_tokens is not None and n and n > 1:
            call.max_tokens *= n
        call.system, call.messages = _chat_messages(body)
        call.tools = _tool_names(body)
        opts = body.get("stream_options")
        call.client_wants_usage = isinstance(opts, dict) and opts.get("include_usage") is True

    def upstream_body(self, call: Call, body: dict[str, Any], raw: bytes) -> bytes:
        if not call.stream or call.client_wants_usage:
            return raw
        opts = body.get("stream_options")
        patched = dict(body)
        patched["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        return orjson.dumps(patched)

    def needs_filter(self, call: Call) -> bool:
        return call.stream and not call.client_wants_usage

    def filter_event(self, call: Call, event: Event) -> bytes | None:
        if b'"usage":' not in event.raw:
            return event.raw
        if (b'"choices":[]' in event.data or b'"choices": []' in event.data) and b'"usage":null' not in event.data \
                and b'"usage": null' not in event.data:
            return None  # the usage-only chunk this client never asked for (not Azure's prompt-filter chunk)
        return event.raw.replace(b',"usage":null', b"").replace(b', "usage": null', b"")

    def parse_body(self, call: Call, body: bytes) -> None:
        data = loads(body)
        if not isinstance(data, dict):
            return
        call.model_served = as_str(data.get("model"))
        call.completion.response_id = as_str(data.get("id"))
        _chat_usage(call, data.get("usage"))
        choices = data.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            first = choices[0]
            call.finish_reason = as_str(first.get("finish_reason"))
            msg = first.get("message") or {}
            if isinstance(msg, dict):
                call.completion.text = text_of(msg.get("content"))
                call.completion.tool_calls = _chat_messages({"messages": [msg]})[1][0].tool_calls

    def parse_usage(self, call: Call, usage: dict[str, Any]) -> None:
        _chat_usage(call, usage)

    def stream_parser(self, call: Call) -> StreamParser:
        return _ChatStream(call)


class _ChatStream(StreamParser):
    end_marker = b"data: [DONE]"

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self._tools: dict[int, ToolCall] = {}
        self._args: dict[int, list[str]] = {}
        self._text: list[str] = []

    def on_event(self, event: Event) -> Chunk | None:
        if event.data == b"[DONE]":
            return None
        data = loads(event.data)
        if not isinstance(data, dict):
            return None
        call = self.call
        if call.model_served is None:
            call.model_served = as_str(data.get("model"))
            call.completion.response_id = as_str(data.get("id"))
        if data.get("usage"):
            _chat_usage(call, data["usage"])
        delta_text = ""
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                call.finish_reason = str(choice["finish_reason"])
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                delta_text = self._delta(delta)
        self.text_chars += len(delta_text)
        return Chunk(event.raw, delta_text)

    def _delta(self, delta: dict[str, Any]) -> str:
        text = delta.get("content")
        for tc in delta.get("tool_calls") or ():
            if isinstance(tc, dict):
                self._tool_delta(tc)
        if isinstance(text, str):
            if self.text_chars < self.text_limit:  # past it (by at most this delta): counted only
                self._text.append(text)
            else:
                self.capped = True
            return text
        return ""

    def _tool_delta(self, tc: dict[str, Any]) -> None:
        idx = tc.get("index", 0)
        fn = tc.get("function") or {}
        cur = self._tools.setdefault(idx, ToolCall("", "", ""))
        cur.id = cur.id or str(tc.get("id") or "")
        cur.name = cur.name or str(fn.get("name") or "")
        args = fn.get("arguments")
        if args:
            self.keep(self._args.setdefault(idx, []), str(args))

    def finish(self) -> None:
        self.call.completion.text = "".join(self._text)[: self.text_limit]
        for idx, parts in self._args.items():
            self._tools[idx].arguments = "".join(parts)
        self.call.completion.tool_calls = [self._tools[i] for i in sorted(self._tools)]


# ---------------------------------------------------------------- responses API


def _responses_input(body: dict[str, Any]) -> list[Message]:
    items = body.get("input")
    if isinstance(items, str):
        return [Message("user", items)]
    out: list[Message] = []
    for it in items or ():
        if not isinstance(it, dict):
            continue
        kind = it.get("type")
        if kind == "function_call":
            tc = ToolCall(str(it.get("call_id") or ""), str(it.get("name") or ""), str(it.get("arguments") or ""))
            out.append(Message("assistant", "", [tc]))
        elif kind == "function_call_output":
            out.append(Message("tool", text_of(it.get("output")), [], as_str(it.get("call_id"))))
        elif "role" in it:
            out.append(Message(str(it["role"]), text_of(it.get("content"))))
    return out


def _responses_usage(call: Call, usage: Any) -> None:
    _usage(call, usage, "input_tokens", "output_tokens")


def _responses_object(call: Call, resp: Any) -> None:
    if not isinstance(resp, dict):
        return
    call.model_served = as_str(resp.get("model")) or call.model_served
    call.completion.response_id = as_str(resp.get("id"))
    _responses_usage(call, resp.get("usage"))
    status = resp.get("status")
    details = resp.get("incomplete_details")
    if status == "incomplete" and isinstance(details, dict):
        reason = str(details.get("reason") or "incomplete")
        call.finish_reason = _FINISH.get(reason, reason)
    elif isinstance(status, str):
        call.finish_reason = "stop" if status == "completed" else status
    texts: list[str] = []
    tools: list[ToolCall] = []
    for item in resp.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            texts.append(text_of(item.get("content")))
        elif item.get("type") == "function_call":
            tools.append(
                ToolCall(str(item.get("call_id") or ""), str(item.get("name") or ""), str(item.get("arguments") or ""))
            )
    if tools and call.finish_reason == "stop":
        call.finish_reason = "tool_calls"
    call.completion.text = "".join(texts)
    call.completion.tool_calls = tools


class OpenAIResponses(_OpenAIErrors, Provider):
    name = "openai"

    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        call.model_requested = as_str(body.get("model"))
        call.stream = body.get("stream") is True
        call.max_tokens = as_int(body.get("max_output_tokens"))
        instructions = body.get("instructions")
        call.system = instructions if isinstance(instructions, str) else None
        call.messages = _responses_input(body)
        call.tools = _tool_names(body)
        call.previous_response_id = as_str(body.get("previous_response_id"))

    def parse_body(self, call: Call, body: bytes) -> None:
        _responses_object(call, loads(body))

    def parse_usage(self, call: Call, usage: dict[str, Any]) -> None:
        _responses_usage(call, usage)

    def stream_parser(self, call: Call) -> StreamParser:
        return _ResponsesStream(call)

    def error_event(self, etype: str, code: str | None, message: str) -> bytes:
        err = {"message": message, "type": etype, "param": None, "code": code}
        payload = {"type": "error", "code": code, "message": message, "param": None, "error": err}
        return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"


class _ResponsesStream(StreamParser):
    end_marker = b"event: response.completed"

    def on_event(self, event: Event) -> Chunk | None:
        data = loads(event.data)
        if not isinstance(data, dict):
            return None
        kind = data.get("type") or event.name
        if kind == "response.output_text.delta":
            delta = data.get("delta")
            text = delta if isinstance(delta, str) else ""
            self.text_chars += len(text)
            return Chunk(event.raw, text)
        if kind == "response.function_call_arguments.delta":
            delta = data.get("delta")
            return Chunk(event.raw, delta if isinstance(delta, str) else "")
        if kind in ("response.completed", "response.incomplete", "response.failed", "response.created"):
            _responses_object(self.call, data.get("response"))
            text = self.call.completion.text
            if len(text) > self.text_limit:
                self.call.completion.text, self.capped = text[: self.text_limit], True
        return None


# ---------------------------------------------------------------- anything else under /v1


class OpenAIGeneric(_OpenAIErrors, Provider):
    """Embeddings, models, files...: forwarded as-is; model and usage read where present."""

    name = "openai"

    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        call.model_requested = as_str(body.get("model"))
        call.stream = body.get("stream") is True

    def parse_body(self, call: Call, body: bytes) -> None:
        if not body.startswith(b"{"):
            return
        data = loads(body)
        if isinstance(data, dict):
            call.model_served = as_str(data.get("model"))
            usage = data.get("usage")
            if isinstance(usage, dict):
                self.parse_usage(call, usage)

    def parse_usage(self, call: Call, usage: dict[str, Any]) -> None:
        call.usage.input_tokens = as_int(usage.get("prompt_tokens")) or as_int(usage.get("input_tokens"))

    def stream_parser(self, call: Call) -> StreamParser:
        return _ChatStream(call)



_GENERIC = OpenAIGeneric()

PROVIDER = ProviderSpec(
    name="openai",
    system="openai",
    default_upstream="https://api.openai.com",
    endpoints=(
        Endpoint("/v1/chat/completions", "chat", OpenAIChat()),
        Endpoint("/v1/responses", "responses", OpenAIResponses()),
        Endpoint("/v1/embeddings", "embeddings", _GENERIC, json_body=False),
        Endpoint("/v1/models", "models", _GENERIC, json_body=False),
        Endpoint("/v1/models/{model}", "models", _GENERIC, json_body=False),
    ),
    generic=_GENERIC,
    prefixes=("/v1/",),
    key_headers=(b"authorization",),
    order=10,
)
