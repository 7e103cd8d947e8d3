"""Gemini API (Google AI Studio): generateContent, streamGenerateContent (SSE), countTokens.

    POST /v1beta/models/{model}:generateContent             GenerateContentResponse (JSON)
    POST /v1beta/models/{model}:streamGenerateContent?alt=sse  `data: {GenerateContentResponse}` events
    POST /v1beta/models/{model}:countTokens                 {"totalTokens": N}
    (and the same under /v1/)

The model is in the path.  The key is the `x-goog-api-key` header or the `?key=` query parameter
(hashed; the query is never part of the recorded path).  Turns are `contents[].parts[]`: `text`,
`functionCall {name, args, id?}` (role `model`) and `functionResponse {name, response, id?}`;
they become assistant tool calls and role=tool messages, linked by id, else by function name
(the Gemini API often sends no id).  Each stream chunk carries the cumulative `usageMetadata`.
Tokens are not counted with tiktoken (Gemini's tokenizer is not public): an o200k_base estimate,
flagged `input_tokens_estimated`; `:countTokens` through the proxy gives the real count.
Refusals: `{"error": {"code", "message", "status", "details": [ErrorInfo]}}`, as Google APIs do.
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
    stream_error_status,
)
from proxy.sse import Event

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
           "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
           "IMAGE_SAFETY": "content_filter", "MALFORMED_FUNCTION_CALL": "error"}
# google.rpc.Code names by HTTP status (https://cloud.google.com/apis/design/errors)
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
           500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
# Gemini's tokenizer is SentencePiece-based and not public; o200k_base lands within ~10% on English
# prose, so counts stay an estimate (guards and dashboards); the reported usageMetadata is the truth.
GEMINI_FACTOR = 1.1


def _error(status: int, code: str | None, message: str) -> dict[str, Any]:
    err: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
    if code:
        err["details"] = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": code.upper(),
                           "domain": "interlock"}]
    return {"error": err}


def _parts(role: str, parts: Any) -> list[Message]:
    """One Gemini turn as messages: text and function calls in one, each function response its own."""
    out: list[Message] = []
    texts: list[str] = []
    calls: list[ToolCall] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        if isinstance(text := part.get("text"), str):
            if not part.get("thought"):
                texts.append(text)
        elif isinstance(fc := part.get("functionCall"), dict):
            name = str(fc.get("name") or "")
            calls.append(ToolCall(as_str(fc.get("id"), empty=False) or name, name, orjson.dumps(fc.get("args") or {}).decode()))
        elif isinstance(fr := part.get("functionResponse"), dict):
            name = str(fr.get("name") or "")
            result = fr.get("response")
            out.append(Message("tool", orjson.dumps(result).decode() if result is not None else "", [],
                               as_str(fr.get("id"), empty=False) or name, name or None))
    if texts or calls or not out:
        out.append(Message("assistant" if role == "model" else role, "".join(texts), calls))
    return out


def _system(body: dict[str, Any]) -> str | None:
    si = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(si, dict):
        return "\n".join(m.text for m in _parts("system", si.get("parts")))
    if isinstance(si, str):
        return si
    return None


def _usage(call: Call, meta: Any) -> None:
    if not isinstance(meta, dict):
        return
    u = call.usage
    prompt = as_int(meta.get("promptTokenCount"))
    if prompt is not None:
        u.input_tokens = prompt + (as_int(meta.get("toolUsePromptTokenCount")) or 0)
    u.cached_tokens = as_int(meta.get("cachedContentTokenCount")) or u.cached_tokens
    out, thoughts = as_int(meta.get("candidatesTokenCount")), as_int(meta.get("thoughtsTokenCount"))
    if out is not None or thoughts is not None:
        u.output_tokens = (out or 0) + (thoughts or 0)  # thinking is billed as output
    if thoughts is not None:
        u.reasoning_tokens = thoughts


class _Response:
    """What one GenerateContentResponse (a whole answer or one stream chunk) says."""

    @staticmethod
    def apply(call: Call, data: dict[str, Any]) -> tuple[str, list[ToolCall]]:
        call.model_served = as_str(data.get("modelVersion"), empty=False) or call.model_served
        call.completion.response_id = as_str(data.get("responseId"), empty=False) or call.completion.response_id
        _usage(call, data.get("usageMetadata"))
        text, calls = "", []
        candidates = data.get("candidates")
        if isinstance(candidates, list) and candidates and isinstance(first := candidates[0], dict):
            reason = first.get("finishReason")
            if isinstance(reason, str):
                call.finish_reason = _FINISH.get(reason, reason.lower())
            content = first.get("content")
            if isinstance(content, dict):
                msgs = _parts("model", content.get("parts"))
                text = "".join(m.text for m in msgs if m.role == "assistant")
                calls = [tc for m in msgs for tc in m.tool_calls]
        elif isinstance(feedback := data.get("promptFeedback"), dict) and feedback.get("blockReason"):
            call.finish_reason = "content_filter"
        return text, calls


class GeminiGenerate(Provider):
    name = "gcp.gemini"

    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        call.model_requested = as_str(body.get("model"), empty=False)
        config = body.get("generationConfig") or body.get("generation_config") or {}
        if isinstance(config, dict):
            call.max_tokens = as_int(config.get("maxOutputTokens")) or as_int(config.get("max_output_tokens"))
            n = as_int(config.get("candidateCount"))
            if call.max_tokens is not None and n and n > 1:
                call.max_tokens *= n
        call.system = _system(body)
        messages: list[Message] = []
        for turn in body.get("contents") or ():
            if isinstance(turn, dict):
                messages.extend(_parts(str(turn.get("role") or "user"), turn.get("parts")))
        call.messages = messages
        call.tools = [str(d["name"]) for t in body.get("tools") or () if isinstance(t, dict)
                      for d in t.get("functionDeclarations") or t.get("function_declarations") or ()
                      if isinstance(d, dict) and isinstance(d.get("name"), str)]

    def parse_body(self, call: Call, body: bytes) -> None:
        data = loads(body)
        if isinstance(data, dict) and "error" not in data:
            call.completion.text, call.completion.tool_calls = _Response.apply(call, data)
        elif isinstance(data, list):  # streamGenerateContent without alt=sse: a JSON array of chunks
            texts: list[str] = []
            for chunk in data:
                if isinstance(chunk, dict):
                    text, calls = _Response.apply(call, chunk)
                    texts.append(text)
                    call.completion.tool_calls.extend(calls)
            call.completion.text = "".join(texts)

    def parse_usage(self, call: Call, usage: dict[str, Any]) -> None:
        _usage(call, usage)

    def stream_parser(self, call: Call) -> StreamParser:
        return _GenerateStream(call)

    def error_body(self, status: int, etype: str, code: str | None, message: str) -> bytes:
        return orjson.dumps(_error(status, code or etype, message))

    def error_event(self, etype: str, code: str | None, message: str) -> bytes:
        status = stream_error_status(etype)
        return b"data: " + orjson.dumps(_error(status, code or etype, message)) + b"\r\n\r\n"


class _GenerateStream(StreamParser):
    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self._text: list[str] = []
        self._calls: list[ToolCall] = []

    def on_event(self, event: Event) -> Chunk | None:
        data = loads(event.data)
        if not isinstance(data, dict) or "error" in data:
            return None
        text, calls = _Response.apply(self.call, data)
        self._calls.extend(calls)
        if text:
            if self.text_chars < self.text_limit:
                self._text.append(text)
            else:
                self.capped = True
            self.text_chars += len(text)
        return Chunk(event.raw, text)

    def finish(self) -> None:
        self.call.completion.text = "".join(self._text)[: self.text_limit]
        self.call.completion.tool_calls = self._calls


class GeminiCountTokens(GeminiGenerate):
    """`:countTokens`: contents (or a whole generateContentRequest) in, `{"totalTokens": N}` out."""

    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        inner = body.get("generateContentRequest")
        super().parse_request(call, inner if isinstance(inner, dict) else body)
        call.max_tokens = None

    def parse_body(self, call: Call, body: bytes) -> None:
        data = loads(body)
        if isinstance(data, dict):
            call.usage.input_tokens = as_int(data.get("totalTokens"))


class GeminiGeneric(GeminiGenerate):
    """Any other Gemini path (models list, embedContent, files...): forwarded as-is."""

    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        call.model_requested = as_str(body.get("model"), empty=False)

    def parse_body(self, call: Call, body: bytes) -> None:
        return None



_GENERATE, _COUNT, _GENERIC = GeminiGenerate(), GeminiCountTokens(), GeminiGeneric()

PROVIDER = ProviderSpec(
    name="gemini",
    system="gcp.gemini",
    default_upstream="https://generativelanguage.googleapis.com",
    endpoints=tuple(
        ep
        for version in ("/v1beta", "/v1")
        for ep in (
            Endpoint(version + "/models/{model}:generateContent", "chat", _GENERATE),
            Endpoint(version + "/models/{model}:streamGenerateContent", "chat", _GENERATE, stream=True),
            Endpoint(version + "/models/{model}:countTokens", "count_tokens", _COUNT),
            Endpoint(version + "/models", "models", _GENERIC, json_body=False),
            Endpoint(version + "/models/{model}", "models", _GENERIC, json_body=False),
        )
    ),
    generic=_GENERIC,
    prefixes=("/v1beta/", "/v1/"),  # on /v1/ only with its key header (else OpenAI's, then Anthropic's)
    key_headers=(b"x-goog-api-key",),
    key_query=("key",),
    marker_headers=(b"x-goog-api-key",),
    token_factor=GEMINI_FACTOR,
    order=30,
)
