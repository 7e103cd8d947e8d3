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

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from proxy.call import Call, Chunk
from proxy.sse import Event, SSESplitter

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


class Splitter(Protocol):
    """Cuts a stream's bytes into events (SSE by default; see `Provider.splitter`)."""

    oversized: int

    def feed(self, chunk: bytes) -> list[Event]: ...
    def close(self) -> list[Event]: ...


class Provider(ABC):
    """One wire format (a provider module's `ProviderSpec` lists its adapters by path)."""

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

    def error_status(self, status: int) -> int:
        """The HTTP status Interlock answers with for one of its own errors of `status` (a provider
        whose SDK retries that status may answer a refusal, which retrying cannot fix, with another)."""
        return status

    def error_headers(self, status: int, etype: str, code: str | None) -> list[tuple[bytes, bytes]]:
        """Headers an error response carries besides its content type (Bedrock: x-amzn-ErrorType)."""
        return []

    def is_stream(self, content_type: bytes) -> bool:
        """True when an answer with this content type is an event stream to parse as it passes."""
        return content_type.startswith(b"text/event-stream")

    def splitter(self, max_event_bytes: int) -> Splitter:
        """Cuts this provider's stream into events (Server-Sent Events unless overridden)."""
        return SSESplitter(max_event_bytes)


# ---------------------------------------------------------------- what a provider module declares

_PARAM = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One request shape a provider claims.

    `pattern` is a decoded path; `{name}` stands for one path segment's text (no `/`), e.g.
    `/v1beta/models/{model}:generateContent`.  A `{model}` (or `{deployment}`) parameter names the
    model when the body does not.  `stream`: the path itself asks for a stream (Gemini's
    `:streamGenerateContent`, Bedrock's `/converse-stream`).
    """

    pattern: str
    # Call.operation: `chat` for any model generation (guards and the graph act on chat, responses and
    # messages), else count_tokens, embeddings, models or other
    operation: str
    adapter: Provider
    json_body: bool = True
    stream: bool = False

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(_PARAM.findall(self.pattern))

    def regex(self) -> re.Pattern[str]:
        out, at = [], 0
        for m in _PARAM.finditer(self.pattern):
            out.append(re.escape(self.pattern[at : m.start()]))
            out.append(f"(?P<{m.group(1)}>[^/]+?)")
            at = m.end()
        out.append(re.escape(self.pattern[at:]))
        return re.compile("".join(out) + r"\Z")


def first_value(values: Sequence[tuple[bytes, str]]) -> str | None:
    """The default API key: the first key header's (or query parameter's) value."""
    return values[0][1] if values else None


@dataclass(frozen=True)
class ProviderSpec:
    """Everything Interlock needs to know about a provider; one per module, named `PROVIDER`.

    The registry (proxy/providers/registry.py) finds these; the router, relay, settings and token
    counter ask it instead of naming providers.
    """

    name: str  # upstream name and setting: INTERLOCK_UPSTREAM_<NAME>
    system: str  # GenAI semantic-convention `gen_ai.provider.name` (recorded as Call.provider)
    default_upstream: str | None  # origin unless INTERLOCK_UPSTREAM_<NAME> says otherwise (None: must be set)
    endpoints: tuple[Endpoint, ...]
    generic: Provider  # any other path under `prefixes`: forwarded as-is, refused in this shape
    prefixes: tuple[str, ...]  # request paths starting with these are this provider's (and relayed)
    key_headers: tuple[bytes, ...] = ()  # lower-case headers holding the API key (hashed, never stored)
    key_query: tuple[str, ...] = ()  # query parameters holding the API key (hashed, never recorded)
    # headers that mark a request on a shared prefix as this provider's (Anthropic on /v1/*)
    marker_headers: tuple[bytes, ...] = ()
    # None: counted exactly with tiktoken by model name; a number: o200k_base tokens times it, an
    # estimate (the call is flagged `input_tokens_estimated`)
    token_factor: float | None = None
    # the key to hash from the key headers / query values found, as (name, value) pairs
    api_key: Callable[[Sequence[tuple[bytes, str]]], str | None] = field(default=first_value)
    order: int = 100  # lower first where two providers share a prefix without markers
    key_names: frozenset[bytes] = field(init=False)  # key headers and query parameters, as bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_names", frozenset(self.key_headers) | {q.encode() for q in self.key_query})


def stream_error_status(etype: str) -> int:
    """The HTTP status a stream-ending error stands for, for providers whose error events carry one:
    Interlock's own failures and the upstream's are 502; a guard's cut (budget, loop) is 429."""
    return 502 if etype.startswith(("interlock_upstream", "interlock_internal")) else 429


def loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def as_str(v: Any, *, empty: bool = True) -> str | None:
    """A JSON value that should be a string (an id, a name): itself, else None (also for an
    empty string when `empty` is False)."""
    return v if isinstance(v, str) and (empty or v) else None


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
