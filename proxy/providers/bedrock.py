"""Amazon Bedrock Runtime: Converse and ConverseStream.

    POST /model/{modelId}/converse          ConverseResponse (JSON)
    POST /model/{modelId}/converse-stream   application/vnd.amazon.eventstream: binary frames
    anything else under /model/             (InvokeModel...) forwarded as-is, refused in Bedrock's shape

Requests are SigV4-signed by the SDK.  Interlock forwards the signed headers and the body byte for
byte and sets Host to the configured upstream (INTERLOCK_UPSTREAM_BEDROCK), so the signature holds
only when the client signed for that host: give the SDK the Bedrock endpoint as its endpoint and
send the request to Interlock (README, Providers).  The key hashed is the access key id of the
`Credential=` in Authorization (a bearer API key: the key), never the per-request signature.

Event-stream framing (one message): total length (4 bytes, big-endian), headers length (4),
prelude CRC32 (4), headers (name length 1, name, type 1, value: strings and bytes with a 2-byte
length), payload, message CRC32 (4).  `:message-type` is `event` (`:event-type` names it:
messageStart, contentBlockStart/Delta/Stop, messageStop, metadata) or `exception`
(`:exception-type`); payloads are JSON.  The relay passes the frames on untouched; this module only
reads them, and writes one for an error that ends a stream.

Refusals: `{"message": ...}` with `x-amzn-ErrorType`.  A 429 would be retried by botocore (standard
and legacy modes retry any 429), and a refusal cannot be fixed by retrying: budgets and loop
refusals are answered 400 `ServiceQuotaExceededException`.  Tokens are estimated (the models behind
Bedrock use their own tokenizers): o200k_base × 1.2, flagged `input_tokens_estimated`.
"""

from __future__ import annotations

import struct
from binascii import crc32
from collections.abc import Sequence
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
    stream_error_status,
    text_of,
)
from proxy.sse import Event, Oversized

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
           "guardrail_intervened": "content_filter", "content_filtered": "content_filter"}
_ERRORS = {400: "ValidationException", 401: "AccessDeniedException", 403: "AccessDeniedException",
           404: "ResourceNotFoundException", 408: "ModelTimeoutException", 413: "ValidationException",
           429: "ServiceQuotaExceededException", 500: "InternalServerException",
           502: "ServiceUnavailableException", 503: "ServiceUnavailableException", 504: "ModelTimeoutException"}
_STREAM_ERRORS = {429: "throttlingException", 502: "serviceUnavailableException"}
_ERROR_NAMESPACE = b":http://internal.amazon.com/coral/com.amazon.bedrock/"
_PRELUDE = 12
# Fixed value sizes of event-stream header types (0/1 booleans, 2 byte, 3 short, 4 int, 5 long,
# 8 timestamp, 9 uuid); 6 (bytes) and 7 (string) carry a 2-byte length.
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
BEDROCK_FACTOR = 1.2


# ---------------------------------------------------------------- event-stream framing


def frame(headers: Sequence[tuple[str, str]], payload: bytes) -> bytes:
    """One event-stream message with string headers."""
    hb = b"".join(bytes([len(n)]) + n.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
                  for n, v in headers)
    prelude = struct.pack(">II", _PRELUDE + len(hb) + len(payload) + 4, len(hb))
    message = prelude + struct.pack(">I", crc32(prelude)) + hb + payload
    return message + struct.pack(">I", crc32(message))


def _headers(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    i = 0
    while i < len(data):
        n = data[i]
        name = data[i + 1 : i + 1 + n].decode("utf-8", "replace")
        i += 1 + n
        if i >= len(data):
            break
        kind = data[i]
        i += 1
        if kind in (6, 7):
            size = struct.unpack_from(">H", data, i)[0]
            if kind == 7:
                out[name] = data[i + 2 : i + 2 + size].decode("utf-8", "replace")
            i += 2 + size
        else:
            i += _FIXED.get(kind, len(data))
    return out


class EventStreamSplitter:
    """Cuts AWS event-stream bytes into messages however they were chunked; `Event.name` is the
    event (or exception) type, `data` the payload, `raw` the frame.  A message longer than
    `max_event_bytes` (or a framing that makes no sense) is passed on as `Oversized` pieces and
    counted, never assembled; `feed` never raises."""

    __slots__ = ("_buf", "_skip", "_limit", "_broken", "oversized")

    def __init__(self, max_event_bytes: int) -> None:
        self._buf = b""
        self._skip = 0  # bytes of an oversized message still to pass on
        self._limit = max_event_bytes
        self._broken = False
        self.oversized = 0

    def feed(self, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        if self._broken:
            return [Oversized(chunk)] if chunk else []
        if self._skip:
            take = min(self._skip, len(chunk))
            self._skip -= take
            out.append(Oversized(chunk[:take]))
            chunk = chunk[take:]
        buf = self._buf + chunk if self._buf else chunk
        at = 0
        while len(buf) - at >= _PRELUDE:
            total, hlen = struct.unpack_from(">II", buf, at)
            if total < _PRELUDE + 4 + hlen:
                self._broken = True
                self.oversized += 1
                out.append(Oversized(buf[at:]))
                self._buf = b""
                return out
            if total > self._limit:
                self.oversized += 1
                piece = buf[at : at + total]
                self._skip = total - len(piece)
                out.append(Oversized(piece))
                at += len(piece)
                continue
            if len(buf) - at < total:
                break
            raw = buf[at : at + total]
            headers = _headers(raw[_PRELUDE : _PRELUDE + hlen])
            name = headers.get(":event-type") or headers.get(":exception-type")
            out.append(Event(name, raw[_PRELUDE + hlen : total - 4], raw))
            at += total
        self._buf = buf[at:]
        return out

    def close(self) -> list[Event]:
        return []


# ---------------------------------------------------------------- Converse


def _blocks(role: str, content: Any) -> list[Message]:
    """One Converse message as messages: text and tool uses in one, each tool result its own."""
    out: list[Message] = []
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if isinstance(text := block.get("text"), str):
            texts.append(text)
        elif isinstance(use := block.get("toolUse"), dict):
            calls.append(ToolCall(str(use.get("toolUseId") or ""), str(use.get("name") or ""),
                                  orjson.dumps(use.get("input") or {}).decode()))
        elif isinstance(result := block.get("toolResult"), dict):
            parts = [p.get("text") if isinstance(p.get("text"), str) else orjson.dumps(p["json"]).decode()
                     for p in result.get("content") or () if isinstance(p, dict) and ("text" in p or "json" in p)]
            out.append(Message("tool", "\n".join(str(p) for p in parts), [], as_str(result.get("toolUseId"), empty=False)))
    if texts or calls or not out:
        out.append(Message(role, "\n".join(texts), calls))
    return out


def _usage(call: Call, usage: Any) -> None:
    if not isinstance(usage, dict):
        return
    u = call.usage
    inp = as_int(usage.get("inputTokens"))
    if inp is not None:
        read = as_int(usage.get("cacheReadInputTokens")) or 0
        u.input_tokens = inp + read + (as_int(usage.get("cacheWriteInputTokens")) or 0)
        u.cached_tokens = read
    u.output_tokens = as_int(usage.get("outputTokens")) or u.output_tokens


def _finish(call: Call, reason: Any) -> None:
    if isinstance(reason, str):
        call.finish_reason = _FINISH.get(reason, reason)


class BedrockConverse(Provider):
    name = "aws.bedrock"

    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        config = body.get("inferenceConfig")
        call.max_tokens = as_int(config.get("maxTokens")) if isinstance(config, dict) else None
        system = body.get("system")
        call.system = "\n".join(text_of([b]) for b in system if isinstance(b, dict)) if isinstance(system, list) else None
        messages: list[Message] = []
        for m in body.get("messages") or ():
            if isinstance(m, dict):
                messages.extend(_blocks(str(m.get("role") or "user"), m.get("content")))
        call.messages = messages
        tools = body.get("toolConfig")
        call.tools = [str(t["toolSpec"]["name"]) for t in (tools.get("tools") or () if isinstance(tools, dict) else ())
                      if isinstance(t, dict) and isinstance(t.get("toolSpec"), dict)
                      and isinstance(t["toolSpec"].get("name"), str)]

    def parse_body(self, call: Call, body: bytes) -> None:
        data = loads(body)
        if not isinstance(data, dict) or "output" not in data:
            return
        _usage(call, data.get("usage"))
        _finish(call, data.get("stopReason"))
        output = data.get("output")
        msg = output.get("message") if isinstance(output, dict) else None
        if isinstance(msg, dict):
            msgs = _blocks("assistant", msg.get("content"))
            call.completion.text = "\n".join(m.text for m in msgs if m.role == "assistant")
            call.completion.tool_calls = [tc for m in msgs for tc in m.tool_calls]

    def parse_usage(self, call: Call, usage: dict[str, Any]) -> None:
        _usage(call, usage)

    def stream_parser(self, call: Call) -> StreamParser:
        return _ConverseStream(call)

    def is_stream(self, content_type: bytes) -> bool:
        return content_type.startswith(b"application/vnd.amazon.eventstream")

    def splitter(self, max_event_bytes: int) -> EventStreamSplitter:
        return EventStreamSplitter(max_event_bytes)

    def error_status(self, status: int) -> int:
        return 400 if status == 429 else status

    def error_headers(self, status: int, etype: str, code: str | None) -> list[tuple[bytes, bytes]]:
        return [(b"x-amzn-errortype", _ERRORS.get(status, "InternalServerException").encode() + _ERROR_NAMESPACE)]

    def error_body(self, status: int, etype: str, code: str | None, message: str) -> bytes:
        return orjson.dumps({"message": message})

    def error_event(self, etype: str, code: str | None, message: str) -> bytes:
        status = stream_error_status(etype)
        return frame([(":message-type", "exception"), (":exception-type", _STREAM_ERRORS.get(status, "internalServerException")),
                      (":content-type", "application/json")], orjson.dumps({"message": message}))


class _ConverseStream(StreamParser):
    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self._text: list[str] = []
        self._tools: dict[int, ToolCall] = {}
        self._args: dict[int, list[str]] = {}

    def on_event(self, event: Event) -> Chunk | None:
        data = loads(event.data) if event.data else None
        if not isinstance(data, dict):
            return None
        kind = event.name
        if kind == "contentBlockDelta":
            return self._delta(event, data)
        if kind == "contentBlockStart":
            start = data.get("start")
            use = start.get("toolUse") if isinstance(start, dict) else None
            if isinstance(use, dict):
                idx = as_int(data.get("contentBlockIndex")) or 0
                self._tools[idx] = ToolCall(str(use.get("toolUseId") or ""), str(use.get("name") or ""), "")
        elif kind == "messageStop":
            _finish(self.call, data.get("stopReason"))
        elif kind == "metadata":
            _usage(self.call, data.get("usage"))
        return None

    def _delta(self, event: Event, data: dict[str, Any]) -> Chunk:
        delta = data.get("delta")
        text = ""
        if isinstance(delta, dict):
            if isinstance(t := delta.get("text"), str):
                text = t
                if self.text_chars < self.text_limit:
                    self._text.append(text)
                else:
                    self.capped = True
                self.text_chars += len(text)
            elif isinstance(use := delta.get("toolUse"), dict) and isinstance(args := use.get("input"), str):
                text = args
                self.keep(self._args.setdefault(as_int(data.get("contentBlockIndex")) or 0, []), args)
        return Chunk(event.raw, text)

    def finish(self) -> None:
        self.call.completion.text = "".join(self._text)[: self.text_limit]
        for idx, parts in self._args.items():
            if idx in self._tools:
                self._tools[idx].arguments = "".join(parts)
        self.call.completion.tool_calls = [self._tools[i] for i in sorted(self._tools)]


class BedrockGeneric(BedrockConverse):
    """InvokeModel and anything else under /model/: forwarded as-is (bodies are each model's own)."""

    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        return None

    def parse_body(self, call: Call, body: bytes) -> None:
        return None


def access_key(values: Sequence[tuple[bytes, str]]) -> str | None:
    """The access key id of a SigV4 Authorization (`Credential=AKID/date/region/...`), or a bearer key."""
    for _, value in values:
        if value.startswith("AWS4-HMAC-SHA256"):
            cred = value.partition("Credential=")[2]
            return cred.split("/", 1)[0] or None
        if value[:7].lower() == "bearer ":
            return value[7:].strip() or None
    return None



_CONVERSE = BedrockConverse()

PROVIDER = ProviderSpec(
    name="bedrock",
    system="aws.bedrock",
    default_upstream="https://bedrock-runtime.us-east-1.amazonaws.com",
    endpoints=(
        Endpoint("/model/{modelId}/converse", "chat", _CONVERSE),
        Endpoint("/model/{modelId}/converse-stream", "chat", _CONVERSE, stream=True),
    ),
    generic=BedrockGeneric(),
    prefixes=("/model/",),
    key_headers=(b"authorization",),
    token_factor=BEDROCK_FACTOR,
    api_key=access_key,
    order=50,
)
