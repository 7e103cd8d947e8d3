"""A fake OpenAI / Anthropic upstream that speaks the real wire formats, for tests and the bench.

    FakeUpstream                      uvicorn in a daemon thread on 127.0.0.1:<free port>
      request ──► Recorded             (up.requests: path, headers, raw body, parsed JSON)
              ──► Reply                first match of: up.script(...) queue (FIFO)
                                                     → responder(json, path) → echo "ok: <user text>"
              ──► rendered by path     /v1/chat/completions  OpenAI chat (JSON | SSE `data:` + [DONE])
                                       /v1/responses         OpenAI Responses (JSON | typed SSE events)
                                       /v1/messages          Anthropic Messages (JSON | typed SSE events)
                                       /v1/messages/count_tokens, /v1/embeddings, /v1/models
              ──► written              delays, gate (up.release()), cut (TCP reset), hang,
                                       client disconnect noticed → up.cancelled / up.cancel_seen

`Reply` is provider-neutral (text, tool calls, usage numbers, failure modes); the path decides the
format.  A stream is a list of pre-rendered SSE events; every failure knob counts *events written*,
the first one included (the role chunk for chat, `message_start` / `response.created` otherwise).

Run as a script (bench, manual tries):
    python tests/fake_upstream.py --port 18000 [--latency-ms N] [--chunk-delay-ms N]
where a request's max_tokens / max_completion_tokens / max_output_tokens sets the number of words,
one per streamed chunk (like ../shared/bench/fake_upstream.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import hashlib
import itertools
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CREATED = 1_700_000_000
Json = dict[str, Any]
Responder = Callable[[Json, str], "Reply | None"]
Send = Callable[[Json], Awaitable[None]]
Receive = Callable[[], Awaitable[Json]]

OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"), 409: ("invalid_request_error", None),
    413: ("invalid_request_error", "request_too_large"), 422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"), 500: ("server_error", None), 502: ("server_error", None),
    503: ("server_error", None),
}
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
    529: "overloaded_error",
}
STOP_LIKE = {"length", "max_tokens", "max_output_tokens"}
WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do")


# --------------------------------------------------------------------------- public types
@dataclass(frozen=True)
class ToolCall:
    """One function/tool call the fake model makes; `arguments` is a dict or a raw JSON string."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return orjson.dumps(dict(self.arguments)).decode()


@dataclass(frozen=True)
class Reply:
    """What the fake model answers to one request; every field has a realistic default.

    Content: `text` (None → "" when there are tool calls, else the echo text), `tool_calls`,
    `finish_reason` (verbatim in the provider's field; default stop / tool_calls, end_turn /
    tool_use), `model` (default: the requested one), `n` (chat choices; default: the request's n).
    Usage (None → estimated: input ≈ prompt chars / 4, output = chunks + argument fragments):
    `input_tokens`, `output_tokens`, `cached_tokens`, `reasoning_tokens`, `cache_creation_tokens`.
    Errors: `status` >= 400 answers the provider's error JSON with `error` as message (`error_type`
    overrides the type); `body` replaces any body verbatim; `headers` are added; `stream_error`
    ends a stream with the provider's in-stream error event instead of the normal end.
    Streaming: `stream` overrides the request's flag; `chunks` gives the text pieces exactly, else
    `chunk_count` pieces, else one per word.
    Timing and failures (seconds; events counted from the first one written):
    `headers_delay` before the status line, `chunk_delay` between events, `cut_after=N` resets the
    TCP connection after N events (non-stream: after half the body), `gate_after=N` waits after N
    events until `up.release()`, `hang=True` never answers (until the client leaves or stop()).
    """

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: str | None = None
    model: str | None = None
    n: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_creation_tokens: int = 0
    status: int = 200
    error: str | None = None
    error_type: str | None = None
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: bool | None = None
    stream_error: str | None = None
    chunks: Sequence[str] | None = None
    chunk_count: int | None = None
    chunk_delay: float | None = None
    headers_delay: float | None = None
    cut_after: int | None = None
    gate_after: int | None = None
    hang: bool = False


@dataclass
class Recorded:
    """One request as received, plus what happened to its response (updated while it is written)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: Any
    reply: Reply | None = None
    events_sent: int = 0
    completed: bool = False
    cancelled: bool = False
    cut: bool = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


# --------------------------------------------------------------------------- request helpers
def _strings(obj: Any, skip: frozenset[str] = frozenset({"role", "type", "id", "name"})) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, list):
        for item in obj:
            yield from _strings(item, skip)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if key not in skip:
                yield from _strings(value, skip)


def prompt_tokens(req: Json) -> int:
    """≈ chars/4 over the prompt-bearing fields of any of the three request shapes."""
    fields = (req.get(k) for k in ("messages", "system", "input", "instructions", "tools"))
    chars = sum(len(s) for f in fields for s in _strings(f))
    return max(1, (chars + 3) // 4)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("text"))
    return ""


def last_user_text(req: Json) -> str:
    items = req.get("messages") or req.get("input") or []
    if isinstance(items, str):
        return items
    users = [m for m in items if isinstance(m, dict) and m.get("role") == "user"]
    return _content_text(users[-1].get("content")) if users else ""


def echo(req: Json, path: str) -> Reply:
    """The default reply: deterministic, short, and shows which request it answers."""
    return Reply(text=f"ok: {last_user_text(req)[:60]}")


def _pieces(reply: Reply, text: str) -> list[str]:
    if reply.chunks is not None:
        return list(reply.chunks)
    words = re.findall(r"\S+\s*|\s+", text)
    if reply.chunk_count is None or not words:
        return words
    size = -(-len(words) // max(1, reply.chunk_count))
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def _fragments(arguments: str) -> list[str]:
    size = max(1, -(-len(arguments) // 3))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


# --------------------------------------------------------------------------- rendering context
@dataclass
class Ctx:
    """Everything a renderer needs, computed once per request."""

    req: Json
    reply: Reply
    ids: Iterator[int]
    model: str
    text: str
    pieces: list[str]
    input_tokens: int
    output_tokens: int
    call_ids: list[str]
    response_id: str | None = None  # set by the Responses renderer, for previous_response_id

    @classmethod
    def build(cls, req: Json, reply: Reply, ids: Iterator[int]) -> Ctx:
        text = reply.text if reply.text is not None else ("" if reply.tool_calls else "ok")
        pieces = _pieces(reply, text)
        frags = sum(len(_fragments(t.arguments_json)) for t in reply.tool_calls)
        return cls(
            req=req, reply=reply, ids=ids, model=reply.model or str(req.get("model") or "fake"),
            text="".join(pieces) if reply.chunks is not None else text, pieces=pieces,
            input_tokens=reply.input_tokens if reply.input_tokens is not None else prompt_tokens(req),
            output_tokens=reply.output_tokens if reply.output_tokens is not None else len(pieces) + frags,
            call_ids=[t.id or f"{next(ids):024d}" for t in reply.tool_calls],
        )

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids):024d}"

    def tool_id(self, tool: ToolCall, index: int, prefix: str) -> str:
        """A unique id per call (`call_…` / `toolu_…`), or exactly `ToolCall.id` when given."""
        return tool.id or prefix + self.call_ids[index]


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _sse_event(name: str, obj: Json) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


# --------------------------------------------------------------------------- OpenAI chat
class OpenAIChat:
    """`/v1/chat/completions`: a chat.completion object or chat.completion.chunk SSE."""

    @staticmethod
    def usage(c: Ctx, n: int) -> Json:
        out = c.output_tokens * n
        return {
            "prompt_tokens": c.input_tokens, "completion_tokens": out, "total_tokens": c.input_tokens + out,
            "prompt_tokens_details": {"cached_tokens": c.reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": c.reply.reasoning_tokens, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
            },
        }

    @staticmethod
    def finish(c: Ctx) -> str:
        return c.reply.finish_reason or ("tool_calls" if c.reply.tool_calls else "stop")

    @staticmethod
    def choices(c: Ctx) -> int:
        return max(1, c.reply.n or int(c.req.get("n") or 1))

    @classmethod
    def body(cls, c: Ctx) -> Json:
        message: Json = {"role": "assistant", "content": c.text or (None if c.reply.tool_calls else ""),
                         "refusal": None, "annotations": []}
        if c.reply.tool_calls:
            message["tool_calls"] = [
                {"id": c.tool_id(t, i, "call_"), "type": "function",
                 "function": {"name": t.name, "arguments": t.arguments_json}}
                for i, t in enumerate(c.reply.tool_calls)
            ]
        n = cls.choices(c)
        return {
            "id": c.new_id("chatcmpl-"), "object": "chat.completion", "created": CREATED, "model": c.model,
            "choices": [{"index": i, "message": message, "logprobs": None, "finish_reason": cls.finish(c)}
                        for i in range(n)],
            "usage": cls.usage(c, n), "service_tier": "default", "system_fingerprint": "fp_fake",
        }

    @classmethod
    def events(cls, c: Ctx) -> list[bytes]:
        so = c.req.get("stream_options")
        include_usage = isinstance(so, dict) and bool(so.get("include_usage"))
        head: Json = {"id": c.new_id("chatcmpl-"), "object": "chat.completion.chunk", "created": CREATED,
                      "model": c.model, "service_tier": "default", "system_fingerprint": "fp_fake"}

        def chunk(index: int, delta: Json, finish: str | None = None) -> bytes:
            body = {**head, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}]}
            return _sse({**body, "usage": None} if include_usage else body)

        n = cls.choices(c)
        deltas: list[Json] = [{"role": "assistant", "content": "", "refusal": None}]
        deltas += [{"content": p} for p in c.pieces]
        for i, t in enumerate(c.reply.tool_calls):
            frags = _fragments(t.arguments_json)
            deltas.append({"tool_calls": [{"index": i, "id": c.tool_id(t, i, "call_"), "type": "function",
                                           "function": {"name": t.name, "arguments": ""}}]})
            deltas += [{"tool_calls": [{"index": i, "function": {"arguments": f}}]} for f in frags]
        out = [chunk(i, d) for d in deltas for i in range(n)]
        out += [chunk(i, {}, cls.finish(c)) for i in range(n)]
        if include_usage:
            out.append(_sse({**head, "choices": [], "usage": cls.usage(c, n)}))
        return out

    @staticmethod
    def end() -> bytes:
        return b"data: [DONE]\n\n"

    @staticmethod
    def stream_error(c: Ctx, message: str) -> bytes:
        return _sse({"error": {"message": message, "type": "server_error", "param": None, "code": None}})


# --------------------------------------------------------------------------- OpenAI responses
class OpenAIResponses:
    """`/v1/responses`: a response object or response.* typed SSE events with sequence numbers."""

    @staticmethod
    def usage(c: Ctx) -> Json:
        return {
            "input_tokens": c.input_tokens, "input_tokens_details": {"cached_tokens": c.reply.cached_tokens},
            "output_tokens": c.output_tokens,
            "output_tokens_details": {"reasoning_tokens": c.reply.reasoning_tokens},
            "total_tokens": c.input_tokens + c.output_tokens,
        }

    @staticmethod
    def obj(c: Ctx, rid: str, status: str, output: list[Json], usage: Json | None) -> Json:
        incomplete = status == "incomplete"
        return {
            "id": rid, "object": "response", "created_at": CREATED, "status": status, "background": False,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": c.req.get("instructions"), "max_output_tokens": c.req.get("max_output_tokens"),
            "model": c.model, "output": output, "parallel_tool_calls": True,
            "previous_response_id": c.req.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default", "store": True,
            "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": c.req.get("tools") or [], "top_p": 1.0, "truncation": "disabled", "usage": usage,
            "user": None, "metadata": c.req.get("metadata") or {},
        }

    @staticmethod
    def status(c: Ctx) -> str:
        return "incomplete" if c.reply.finish_reason in STOP_LIKE else "completed"

    @staticmethod
    def message_item(mid: str, text: str, status: str) -> Json:
        parts = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        return {"type": "message", "id": mid, "status": status, "role": "assistant",
                "content": parts if status == "completed" else []}

    @staticmethod
    def call_item(c: Ctx, t: ToolCall, i: int, arguments: str, status: str) -> Json:
        return {"type": "function_call", "id": "fc_" + c.call_ids[i], "call_id": c.tool_id(t, i, "call_"),
                "name": t.name, "arguments": arguments, "status": status}

    @classmethod
    def output(cls, c: Ctx, mid: str) -> list[Json]:
        items = [cls.message_item(mid, c.text, "completed")] if c.text or not c.reply.tool_calls else []
        return items + [cls.call_item(c, t, i, t.arguments_json, "completed")
                        for i, t in enumerate(c.reply.tool_calls)]

    @classmethod
    def body(cls, c: Ctx) -> Json:
        c.response_id = c.new_id("resp_")
        return cls.obj(c, c.response_id, cls.status(c), cls.output(c, c.new_id("msg_")), cls.usage(c))

    @classmethod
    def events(cls, c: Ctx) -> list[bytes]:
        rid, mid, seq = c.new_id("resp_"), c.new_id("msg_"), itertools.count()
        c.response_id = rid
        out: list[bytes] = []

        def emit(kind: str, **fields: Any) -> None:
            out.append(_sse_event(kind, {"type": kind, "sequence_number": next(seq), **fields}))

        emit("response.created", response=cls.obj(c, rid, "in_progress", [], None))
        emit("response.in_progress", response=cls.obj(c, rid, "in_progress", [], None))
        index = 0
        if c.text or not c.reply.tool_calls:
            cls._message_events(emit, mid, c)
            index = 1
        for i, t in enumerate(c.reply.tool_calls):
            cls._call_events(emit, c, t, i, index + i)
        final = "response.incomplete" if cls.status(c) == "incomplete" else "response.completed"
        emit(final, response=cls.obj(c, rid, cls.status(c), cls.output(c, mid), cls.usage(c)))
        return out

    @classmethod
    def _message_events(cls, emit: Callable[..., None], mid: str, c: Ctx) -> None:
        loc = {"item_id": mid, "output_index": 0, "content_index": 0}
        empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        emit("response.output_item.added", output_index=0, item=cls.message_item(mid, "", "in_progress"))
        emit("response.content_part.added", **loc, part=empty)
        for piece in c.pieces:
            emit("response.output_text.delta", **loc, delta=piece, logprobs=[])
        emit("response.output_text.done", **loc, text=c.text, logprobs=[])
        emit("response.content_part.done", **loc, part={**empty, "text": c.text})
        emit("response.output_item.done", output_index=0, item=cls.message_item(mid, c.text, "completed"))

    @classmethod
    def _call_events(cls, emit: Callable[..., None], c: Ctx, t: ToolCall, i: int, index: int) -> None:
        item_id = "fc_" + c.call_ids[i]
        emit("response.output_item.added", output_index=index, item=cls.call_item(c, t, i, "", "in_progress"))
        for frag in _fragments(t.arguments_json):
            emit("response.function_call_arguments.delta", item_id=item_id, output_index=index, delta=frag)
        emit("response.function_call_arguments.done", item_id=item_id, output_index=index,
             name=t.name, arguments=t.arguments_json)
        emit("response.output_item.done", output_index=index,
             item=cls.call_item(c, t, i, t.arguments_json, "completed"))

    @staticmethod
    def end() -> bytes:
        return b""

    @staticmethod
    def stream_error(c: Ctx, message: str) -> bytes:
        return _sse_event("error", {"type": "error", "code": "server_error", "message": message,
                                    "param": None, "sequence_number": 0})


# --------------------------------------------------------------------------- Anthropic messages
class AnthropicMessages:
    """`/v1/messages`: a message object or message_start … message_stop SSE events."""

    @staticmethod
    def usage(c: Ctx, output_tokens: int) -> Json:
        return {"input_tokens": c.input_tokens, "output_tokens": output_tokens,
                "cache_creation_input_tokens": c.reply.cache_creation_tokens,
                "cache_read_input_tokens": c.reply.cached_tokens, "service_tier": "standard"}

    @staticmethod
    def stop_reason(c: Ctx) -> str:
        return c.reply.finish_reason or ("tool_use" if c.reply.tool_calls else "end_turn")

    @staticmethod
    def tool_block(c: Ctx, t: ToolCall, i: int, full: bool) -> Json:
        args = orjson.loads(t.arguments_json) if full else {}
        return {"type": "tool_use", "id": c.tool_id(t, i, "toolu_"), "name": t.name, "input": args}

    @classmethod
    def message(cls, c: Ctx, mid: str, content: list[Json], stop: str | None, output_tokens: int) -> Json:
        return {"id": mid, "type": "message", "role": "assistant", "model": c.model, "content": content,
                "stop_reason": stop, "stop_sequence": None, "usage": cls.usage(c, output_tokens)}

    @classmethod
    def body(cls, c: Ctx) -> Json:
        text = [{"type": "text", "text": c.text}] if c.text or not c.reply.tool_calls else []
        tools = [cls.tool_block(c, t, i, True) for i, t in enumerate(c.reply.tool_calls)]
        return cls.message(c, c.new_id("msg_"), text + tools, cls.stop_reason(c), c.output_tokens)

    @classmethod
    def events(cls, c: Ctx) -> list[bytes]:
        out: list[bytes] = []

        def emit(kind: str, **fields: Any) -> None:
            out.append(_sse_event(kind, {"type": kind, **fields}))

        emit("message_start", message=cls.message(c, c.new_id("msg_"), [], None, 1))
        index = 0
        if c.text or not c.reply.tool_calls:
            emit("content_block_start", index=0, content_block={"type": "text", "text": ""})
            emit("ping")
            for piece in c.pieces:
                emit("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
            emit("content_block_stop", index=0)
            index = 1
        for i, t in enumerate(c.reply.tool_calls):
            emit("content_block_start", index=index + i, content_block=cls.tool_block(c, t, i, False))
            for frag in _fragments(t.arguments_json):
                emit("content_block_delta", index=index + i,
                     delta={"type": "input_json_delta", "partial_json": frag})
            emit("content_block_stop", index=index + i)
        emit("message_delta", delta={"stop_reason": cls.stop_reason(c), "stop_sequence": None},
             usage={"output_tokens": c.output_tokens})
        return out

    @staticmethod
    def end() -> bytes:
        return _sse_event("message_stop", {"type": "message_stop"})

    @staticmethod
    def stream_error(c: Ctx, message: str) -> bytes:
        return _sse_event("error", {"type": "error", "error": {"type": "overloaded_error", "message": message}})


class Wire(Protocol):
    """Another provider's wire format, given by that provider's tests: `FakeUpstream(wire=...)`
    renders the same provider-neutral `Reply` in it for the paths it `claims`."""

    stream_type: bytes  # content type of a stream

    def claims(self, path: str) -> bool: ...
    def streams(self, path: str, req: Json) -> bool: ...
    def body(self, path: str, ctx: Ctx) -> Json: ...
    def events(self, path: str, ctx: Ctx) -> list[bytes]: ...
    def error(self, status: int, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]: ...


Format = type[OpenAIChat] | type[OpenAIResponses] | type[AnthropicMessages]
STREAM_FORMATS: dict[str, Format] = {
    "/v1/chat/completions": OpenAIChat, "/v1/responses": OpenAIResponses, "/v1/messages": AnthropicMessages,
}
JSON_ROUTES = {*STREAM_FORMATS, "/v1/messages/count_tokens", "/v1/embeddings"}


# --------------------------------------------------------------------------- other routes
def openai_error(status: int, message: str, error_type: str | None = None) -> Json:
    kind, code = OPENAI_ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                                 None))
    return {"error": {"message": message, "type": error_type or kind, "param": None, "code": code}}


def anthropic_error(status: int, message: str, error_type: str | None = None, request_id: str = "") -> Json:
    kind = error_type or ANTHROPIC_ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def embeddings(req: Json, reply: Reply) -> Json:
    raw = req.get("input")
    inputs = [raw] if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)) \
        else list(raw or [])
    dims = int(req.get("dimensions") or 8)
    data = []
    for i, item in enumerate(inputs):
        seed = hashlib.sha256(repr(item).encode()).digest()
        vector = [(seed[j % 32] - 128) / 128.0 for j in range(dims)]
        value: Any = vector
        if req.get("encoding_format") == "base64":
            value = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = reply.input_tokens if reply.input_tokens is not None else \
        max(1, sum(len(s) for s in _strings(inputs)) // 4)
    return {"object": "list", "data": data, "model": reply.model or req.get("model") or "fake",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def models(anthropic: bool) -> Json:
    if anthropic:
        rows = [{"type": "model", "id": "claude-fake", "display_name": "Claude Fake",
                 "created_at": "2025-01-01T00:00:00Z"}]
        return {"data": rows, "has_more": False, "first_id": "claude-fake", "last_id": "claude-fake"}
    return {"object": "list", "data": [{"id": m, "object": "model", "created": CREATED, "owned_by": "fake"}
                                       for m in ("fake", "gpt-4o-mini")]}


# --------------------------------------------------------------------------- uvicorn plumbing
class _Protocol(HttpToolsProtocol):
    """Puts the connection's transport in the scope so a reply can reset the TCP connection."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["fake.transport"] = self.transport  # type: ignore[typeddict-unknown-key]


def _reset(transport: asyncio.Transport | None) -> None:
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        msg = await receive()
        parts.append(msg.get("body", b""))
        if msg["type"] == "http.disconnect" or not msg.get("more_body"):
            return b"".join(parts)


async def _first(*events: asyncio.Event, within: float | None = None) -> None:
    """Return when any event is set or `within` seconds passed."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


@dataclass
class _Exchange:
    """One request in flight on the server loop: the ASGI channels and its 'client is gone' signal."""

    scope: Json
    send: Send
    rec: Recorded
    gone: asyncio.Event
    stop: asyncio.Event

    @property
    def over(self) -> bool:
        return self.gone.is_set() or self.stop.is_set()

    async def pause(self, seconds: float) -> None:
        if seconds > 0:
            await _first(self.gone, self.stop, within=seconds)

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes, more: bool = True) -> None:
        if not more:
            self.rec.completed = True  # before the send, so the disconnect watcher knows it was us
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def cut(self) -> None:
        self.rec.cut = True
        self.rec.completed = True
        _reset(self.scope.get("fake.transport"))
        await asyncio.sleep(0.005)  # let uvicorn see connection_lost, or it logs an incomplete response


# --------------------------------------------------------------------------- the server
class FakeUpstream:
    """A fake model server on a free loopback port, in a background thread.

    `with FakeUpstream() as up:` → `up.url` (http://127.0.0.1:PORT; OpenAI base URL is `up.url + "/v1"`).
    `up.script(Reply(...), ...)` queues replies; `responder` answers when the queue is empty.
    `up.requests` / `up.last` show what arrived; `up.cancelled` and `up.wait_cancel()` show clients
    that left mid-response; `up.gate_reached` + `up.release()` drive `Reply(gate_after=N)`.
    `latency` and `chunk_delay` are defaults for replies that set no `headers_delay` / `chunk_delay`.
    """

    def __init__(self, responder: Responder | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 latency: float = 0.0, chunk_delay: float = 0.0, record: bool = True,
                 use_uvloop: bool = False, wire: Wire | None = None) -> None:
        self.responder = responder
        self.wire = wire
        self.host, self.port = host, port
        self.latency, self.chunk_delay, self.record = latency, chunk_delay, record
        self.use_uvloop = use_uvloop
        self.cancel_seen = threading.Event()
        self.gate_reached = threading.Event()
        self._lock = threading.Lock()
        self._queue: collections.deque[Reply] = collections.deque()
        self._requests: list[Recorded] = []
        self._response_ids: set[str] = set()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._gate: asyncio.Event | None = None

    # ------------------------------------------------------------------ test-facing API
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def script(self, *replies: Reply) -> FakeUpstream:
        with self._lock:
            self._queue.extend(replies)
        return self

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    @property
    def cancelled(self) -> list[Recorded]:
        return [r for r in self.requests if r.cancelled]

    def wait_cancel(self, timeout: float = 5.0) -> bool:
        """True once some response was abandoned by its client (`up.cancelled` says which)."""
        return self.cancel_seen.wait(timeout)

    async def until_cancel(self, within: float = 5.0) -> bool:
        """`wait_cancel` for async tests, without blocking their event loop."""
        return await asyncio.to_thread(self.cancel_seen.wait, within)

    async def until_gate(self, within: float = 5.0) -> bool:
        """True once a `gate_after` reply is waiting for `release()`; for async tests."""
        return await asyncio.to_thread(self.gate_reached.wait, within)

    def wait_requests(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """The requests so far, once there are `count` of them or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.requests

    def release(self) -> None:
        """Open the gate: every reply waiting at (or later reaching) `gate_after` continues."""
        if self._loop and self._gate:
            self._loop.call_soon_threadsafe(self._gate.set)

    def rearm(self) -> None:
        """Close the gate again (and forget that one was reached) for the next gated reply."""
        self.gate_reached.clear()
        if self._loop and self._gate:
            self._loop.call_soon_threadsafe(self._gate.clear)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._requests.clear()
        self.cancel_seen.clear()
        self.rearm()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeUpstream:
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the listening
        # socket says so; with proto 0 every keep-alive reply waits ~40 ms on Nagle + delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, interface="asgi3", lifespan="off", log_level="warning",
                                access_log=False, proxy_headers=False, http=_Protocol, server_header=False,
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, args=(sock,), name="fake-upstream", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError(f"fake upstream did not start on {self.url}")
        return self

    def stop(self) -> None:
        if not (self._server and self._thread and self._loop and self._stop):
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._server.should_exit = True
        self._thread.join(5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, sock: socket.socket) -> None:
        if self.use_uvloop:
            import uvloop

            uvloop.run(self._serve(sock))
        else:
            asyncio.run(self._serve(sock))

    async def _serve(self, sock: socket.socket) -> None:
        self._stop, self._gate = asyncio.Event(), asyncio.Event()
        self._loop = asyncio.get_running_loop()
        assert self._server is not None
        await self._server.serve(sockets=[sock])

    # ------------------------------------------------------------------ ASGI
    async def app(self, scope: Json, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        rec = await self._record(scope, receive)
        assert self._stop is not None
        ex = _Exchange(scope, send, rec, asyncio.Event(), self._stop)
        watcher = asyncio.ensure_future(self._watch(receive, ex))
        try:
            await self._answer(ex)
        finally:
            watcher.cancel()

    async def _record(self, scope: Json, receive: Receive) -> Recorded:
        body = await _read_body(receive)
        try:
            parsed: Any = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            parsed = None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        rec = Recorded(scope["method"], scope["path"], scope["query_string"].decode(), headers, body, parsed)
        if self.record:
            with self._lock:
                self._requests.append(rec)
        return rec

    async def _watch(self, receive: Receive, ex: _Exchange) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not ex.rec.completed:
            ex.rec.cancelled = True
            ex.gone.set()
            self.cancel_seen.set()

    def _next_reply(self, req: Json, path: str) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        reply = self.responder(req, path) if self.responder else None
        return reply or echo(req, path)

    async def _answer(self, ex: _Exchange) -> None:
        path, req = ex.rec.path, ex.rec.json
        anthropic = path.startswith("/v1/messages")
        if path in JSON_ROUTES and not isinstance(req, dict):
            return await self._json(ex, Reply(), 400, self._error_body(
                anthropic, 400, "We could not parse the JSON body of your request.", None))
        reply = self._next_reply(req if isinstance(req, dict) else {}, path)
        ex.rec.reply = reply
        await ex.pause(reply.headers_delay if reply.headers_delay is not None else self.latency)
        if reply.hang:
            await _first(ex.gone, ex.stop)
            return await ex.cut()
        if ex.over:
            return None
        wire = self.wire if self.wire is not None and self.wire.claims(path) else None
        if wire is not None and reply.body is None and reply.status >= 400:
            body, extra = wire.error(reply.status, reply.error or f"fake upstream error {reply.status}")
            headers = [*self._headers(ex, reply, b"application/json"), *extra]
            await ex.start(reply.status, [*headers, (b"content-length", str(len(body)).encode())])
            return await ex.write(body, more=False)
        if reply.body is not None or reply.status >= 400:
            message = reply.error or f"fake upstream error {reply.status}"
            body = reply.body or orjson.dumps(self._error_body(anthropic, reply.status, message, reply.error_type))
            return await self._send_json(ex, reply, reply.status, body)
        return await self._route(ex, reply, req if isinstance(req, dict) else {})

    async def _route(self, ex: _Exchange, reply: Reply, req: Json) -> None:
        path, method = ex.rec.path, ex.rec.method
        if self.wire is not None and self.wire.claims(path):
            return await self._wire(ex, self.wire, Ctx.build(req, reply, self._ids))
        fmt = STREAM_FORMATS.get(path)
        if fmt is not None and method == "POST":
            if fmt is OpenAIResponses and not self._known_previous(req):
                return await self._json(ex, reply, 400, openai_error(
                    400, f"Previous response with id '{req['previous_response_id']}' not found."))
            ctx = Ctx.build(req, reply, self._ids)
            stream = reply.stream if reply.stream is not None else bool(req.get("stream"))
            return await (self._stream(ex, fmt, ctx) if stream else self._whole(ex, fmt, ctx))
        if path == "/v1/messages/count_tokens" and method == "POST":
            tokens = reply.input_tokens if reply.input_tokens is not None else prompt_tokens(req)
            return await self._json(ex, reply, 200, {"input_tokens": tokens})
        if path == "/v1/embeddings" and method == "POST":
            return await self._json(ex, reply, 200, embeddings(req, reply))
        if path == "/v1/models" and method == "GET":
            return await self._json(ex, reply, 200, models("anthropic-version" in ex.rec.headers))
        anthropic = path.startswith("/v1/messages")
        return await self._json(ex, reply, 404, self._error_body(
            anthropic, 404, f"Unknown request URL: {method} {path}.", None))

    def _known_previous(self, req: Json) -> bool:
        previous = req.get("previous_response_id")
        with self._lock:
            return previous is None or previous in self._response_ids

    def _remember(self, ctx: Ctx) -> None:
        if ctx.response_id is not None:
            with self._lock:
                self._response_ids.add(ctx.response_id)

    def _error_body(self, anthropic: bool, status: int, message: str, error_type: str | None) -> Json:
        if anthropic:
            return anthropic_error(status, message, error_type, f"req_fake{next(self._ids):020d}")
        return openai_error(status, message, error_type)

    def _headers(self, ex: _Exchange, reply: Reply, content_type: bytes) -> list[tuple[bytes, bytes]]:
        rid = f"req_fake{next(self._ids):020d}".encode()
        id_header = b"request-id" if ex.rec.path.startswith("/v1/messages") else b"x-request-id"
        extra = [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
        return [(b"content-type", content_type), (id_header, rid), *extra]

    async def _json(self, ex: _Exchange, reply: Reply, status: int, obj: Json) -> None:
        await self._send_json(ex, reply, status, orjson.dumps(obj))

    async def _send_json(self, ex: _Exchange, reply: Reply, status: int, body: bytes) -> None:
        headers = self._headers(ex, reply, b"application/json")
        await ex.start(status, [*headers, (b"content-length", str(len(body)).encode())])
        if reply.cut_after is not None:
            await ex.write(body[: len(body) // 2])
            await asyncio.sleep(0.01)  # let the half body leave before the reset
            return await ex.cut()
        await ex.write(body, more=False)

    async def _whole(self, ex: _Exchange, fmt: Format, ctx: Ctx) -> None:
        obj = fmt.body(ctx)
        self._remember(ctx)
        await self._json(ex, ctx.reply, 200, obj)

    async def _stream(self, ex: _Exchange, fmt: Format, ctx: Ctx) -> None:
        reply = ctx.reply
        events = fmt.events(ctx)
        self._remember(ctx)
        if reply.stream_error is not None:
            events = events[: max(1, len(events) // 2)] + [fmt.stream_error(ctx, reply.stream_error)]
        else:
            events.append(fmt.end())
        headers = self._headers(ex, reply, b"text/event-stream; charset=utf-8")
        await ex.start(200, [*headers, (b"cache-control", b"no-cache")])
        delay = reply.chunk_delay if reply.chunk_delay is not None else self.chunk_delay
        await self._write_events(ex, reply, [e for e in events if e], delay)

    async def _wire(self, ex: _Exchange, wire: Wire, ctx: Ctx) -> None:
        reply, path = ctx.reply, ex.rec.path
        stream = reply.stream if reply.stream is not None else wire.streams(path, ctx.req)
        if not stream:
            return await self._json(ex, reply, 200, wire.body(path, ctx))
        await ex.start(200, self._headers(ex, reply, wire.stream_type))
        delay = reply.chunk_delay if reply.chunk_delay is not None else self.chunk_delay
        await self._write_events(ex, reply, [e for e in wire.events(path, ctx) if e], delay)

    async def _write_events(self, ex: _Exchange, reply: Reply, events: list[bytes], delay: float) -> None:
        assert self._gate is not None
        for i, event in enumerate(events):
            if reply.cut_after is not None and i >= reply.cut_after:
                await asyncio.sleep(0.01)  # let the written events leave before the reset
                return await ex.cut()
            if reply.gate_after is not None and i == reply.gate_after:
                self.gate_reached.set()
                await _first(self._gate, ex.gone, ex.stop)
            if i:
                await ex.pause(delay)
            if ex.over:
                return await ex.cut() if ex.stop.is_set() else None
            await ex.write(event, more=i < len(events) - 1)
            ex.rec.events_sent = i + 1


# --------------------------------------------------------------------------- script mode
def words_responder(req: Json, path: str) -> Reply | None:
    """Bench behaviour: max_tokens (any spelling) = number of words = number of streamed chunks."""
    limit = req.get("max_completion_tokens") or req.get("max_tokens") or req.get("max_output_tokens")
    if not isinstance(limit, int) or limit < 1:
        return None
    return Reply(text="".join(WORDS[i % len(WORDS)] + " " for i in range(limit)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic upstream (tests/fake_upstream.py)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before each response's headers")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between streamed events")
    args = parser.parse_args(argv)
    up = FakeUpstream(words_responder, host=args.host, port=args.port, latency=args.latency_ms / 1000,
                      chunk_delay=args.chunk_delay_ms / 1000, record=False, use_uvloop=True)
    up.start()
    print(f"fake upstream on {up.url} (OpenAI base {up.url}/v1)", file=sys.stderr, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        up.stop()


if __name__ == "__main__":
    main()
