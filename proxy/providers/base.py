"""Provider adapters: the only code that knows wire formats.

    request bytes ──parse_request──▶ Call (model, messages, tools, max_tokens, stream)
    upstream body ──parse_body─────▶ Call (usage, finish_reason, completion, served model)
    body too large to parse ─parse_usage(usage object found in its last bytes)─▶ Call.usage
    SSE events ─────StreamParser───▶ Call, incrementally; returns Chunk for guards
    Verdict / failure ─render_error─▶ native error body (and stream error event)

All methods run on the request path: they must be fast, must not await and must not raise
on odd upstream payloads (a payload they cannot read is simply not metered).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import orjson

from proxy.call import Call, Chunk
from proxy.sse import Event

DEFAULT_TEXT_LIMIT = 1024 * 1024


class StreamParser(ABC):
    """Consumes one stream's events in order; fills the Call as they pass.

    Keeps at most `text_limit` characters of completion text, and as many of tool-call arguments
    (`keep`); the relay sets it from INTERLOCK_STREAM_TEXT_MAX_CHARS.  Past it `capped` is set and
    the rest is only counted (`text_chars`), so an endless stream costs no memory.
    """

    # Bytes found in the read that carries the stream's closing event (OpenAI's `[DONE]`):
    # the relay holds that read back until the guards settled, because SDKs stop reading
    # there and send the next turn at once.  A false match (the same bytes inside content)
    # only delays that read to the end of the stream.  None: the stream's end is its close.
    end_marker: bytes | None = None

    def __init__(self, call: Call, text_limit: int = DEFAULT_TEXT_LIMIT) -> None:
        self.call = call
        self.text_chars = 0
        self.text_limit = text_limit
        self.kept_chars = 0
        self.capped = False

    def keep(self, parts: list[str], text: str) -> None:
        """Append `text` to `parts` (tool-call arguments) while under `text_limit`."""
        room = self.text_limit - self.kept_chars
        if len(text) > room:
            self.capped = True
            if room <= 0:
                return
            text = text[:room]
        parts.append(text)
        self.kept_chars += len(text)

    @abstractmethod
    def on_event(self, event: Event) -> Chunk | None:
        """Parse one event; return a Chunk for guards (None for events with nothing to meter)."""

    def finish(self) -> None:
        """Called once when the stream ended (cleanly or not); assembles the completion."""
        return None


class Provider(ABC):
    name: str

    @abstractmethod
    def parse_request(self, call: Call, body: dict[str, Any]) -> None:
        """Fill the request side of `call` from the parsed JSON body."""

    def upstream_body(self, call: Call, body: dict[str, Any], raw: bytes) -> bytes:
        """Bytes to send upstream; the client's own bytes unless metering needs a change."""
        return raw

    @abstractmethod
    def parse_body(self, call: Call, body: bytes) -> None:
        """Fill the response side of `call` from a complete JSON response body."""

    def parse_usage(self, call: Call, usage: dict[str, Any]) -> None:
        """Fill `call.usage` from the `usage` object of a body too large to parse whole."""
        return None

    @abstractmethod
    def stream_parser(self, call: Call) -> StreamParser:
        """A parser for this call's event stream."""

    def filter_event(self, call: Call, event: Event) -> bytes | None:
        """Bytes to relay for one event when the call needs filtering (see needs_filter)."""
        return event.raw

    def needs_filter(self, call: Call) -> bool:
        """True when events must be rewritten (e.g. a usage chunk the client did not ask for)."""
        return False

    @abstractmethod
    def error_body(self, status: int, etype: str, code: str | None, message: str) -> bytes:
        """A complete JSON error response in this provider's shape."""

    @abstractmethod
    def error_event(self, etype: str, code: str | None, message: str) -> bytes:
        """The SSE bytes that end a stream with an error, in this provider's shape."""


def loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def as_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def text_of(content: Any) -> str:
    """Text of a content value that is a string or a list of typed parts (images skipped)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for part in content:
        if isinstance(part, dict):
            t = part.get("text")
            if isinstance(t, str):
                parts.append(t)
            elif part.get("type") == "tool_result":
                parts.append(text_of(part.get("content")))
        elif isinstance(part, str):
            parts.append(part)
    return "\n".join(parts)


def usage_in_tail(tail: bytes) -> dict[str, Any] | None:
    """The last `"usage": {...}` object in the final bytes of a JSON body (None if not there
    whole): how the usage of a body too large to parse is still read.  Providers put it last."""
    at = tail.rfind(b'"usage"')
    start = tail.find(b"{", at) if at >= 0 else -1
    if start < 0 or tail[at + 7 : start].strip(b" \t\r\n:"):
        return None
    depth, quoted, escaped = 0, False, False
    for i in range(start, len(tail)):
        c = tail[i]
        if quoted:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                found = loads(tail[start : i + 1])
                return found if isinstance(found, dict) else None
    return None
