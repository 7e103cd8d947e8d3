"""Content fingerprints of a call, computed once per call and shared by every guard.

    CallFacts(call)
      ├─ message_digests   exact digest per input message (history-drop detection)
      ├─ request_digest    normalised digest of the whole request (retry storms)
      ├─ thread            agent + digest(system, first user message)
      ├─ incoming          shingle hashes of the newest non-assistant input (handoff matching)
      └─ output_sketch     bottom-k sketch of what the model produced (no-progress, ping-pong)

Near-duplicate text is compared with bottom-k sketches of word-bigram hashes (crc32, stable
across processes): `similarity` estimates Jaccard between two sketches, `containment`
estimates how much of a stored sketch appears in a full hash set.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import zlib
from array import array
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import Any, TypeVar, cast

import orjson

from proxy.call import Call, Message, ToolCall

SKETCH_K = 64
_MAX_WORDS = 1000
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SHINGLE_CHARS = 8_000  # long texts: shingles of their head and tail only
_NORMALIZE_MAX = 65_536

Sketch = tuple[int, ...]
T = TypeVar("T")


def normalize(text: str) -> str:
    """Whitespace collapsed, timestamps and UUIDs masked: what 'the same content' compares."""
    if "-" in text:
        text = _mask_volatile(text)
    return " ".join(text.split())


def _mask_volatile(text: str) -> str:
    """Both patterns have a '-' at a fixed offset (4 for dates, 8 for UUIDs): the regexes are
    tried only there, anchored.  A free scan of a 500 KB message took ~60 ms; this takes ~1."""
    out: list[str] = []
    last = 0
    i = text.find("-")
    while i != -1:
        m = None
        for pattern, back in ((_STAMP, 4), (_UUID, 8)):
            if i - back >= last:
                m = pattern.match(text, i - back)
                if m is not None:
                    break
        if m is not None:
            out += (text[last : m.start()], "#")
            last = m.end()
            i = text.find("-", last)
        else:
            i = text.find("-", i + 1)
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


def digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def canonical_args(arguments: str) -> str:
    """Tool arguments with keys sorted and whitespace dropped (JSON), else normalised text."""
    try:
        return orjson.dumps(orjson.loads(arguments), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        return normalize(arguments)


def tool_calls_text(calls: list[ToolCall]) -> str:
    if not calls:
        return ""
    return "\n".join(f"{tc.name}({canonical_args(tc.arguments)})" for tc in calls)


def shingles(text: str) -> set[int]:
    """crc32 of the word bigrams of the lower-cased text (long texts: head + tail words).
    crc32 is stable across processes, so sketches stored by one replica match another's."""
    if len(text) > 2 * _SHINGLE_CHARS:
        text = text[:_SHINGLE_CHARS] + " " + text[-_SHINGLE_CHARS:]
    words = text.lower().encode("utf-8", "surrogatepass").split()
    if len(words) > _MAX_WORDS:
        half = _MAX_WORDS // 2
        words = words[:half] + words[-half:]
    if len(words) < 2:
        return set(map(zlib.crc32, words))
    crc = zlib.crc32  # crc32(b, crc32(a)) == crc32(a + b): one C-level pass, no pair strings
    return set(map(crc, words[1:], map(crc, words[:-1])))


def sketch_of(hashes: set[int]) -> Sketch:
    return tuple(sorted(hashes)[:SKETCH_K])


def similarity(a: Sketch, b: Sketch) -> float:
    """Estimated Jaccard similarity of the texts behind two sketches (exact for short texts)."""
    if not a or not b:
        return 0.0
    sa = set(a)
    both = sa.intersection(b)
    if not both:
        return 0.0
    union = sorted(sa.union(b))[:SKETCH_K]
    return len(both.intersection(union)) / len(union)


def containment(a: Sketch, full: set[int]) -> float:
    """Estimated share of the text behind sketch `a` that appears in the text hashed as `full`."""
    if not a or not full:
        return 0.0
    return len(full.intersection(a)) / len(a)


def encode_sketch(s: Sketch) -> str:
    return base64.b64encode(array("I", s).tobytes()).decode()


def decode_sketch(text: str) -> Sketch:
    raw = array("I")
    raw.frombytes(base64.b64decode(text))
    return tuple(raw)


def _message_text(m: Message) -> str:
    """Exact identity of a message (raw tool arguments: a resent message repeats its bytes)."""
    if not m.tool_calls:
        return f"{m.role}\x1e{m.text}"
    calls = "\n".join(f"{tc.name}({tc.arguments})" for tc in m.tool_calls)
    return f"{m.role}\x1e{m.text}\x1e{calls}"


def incoming_messages(messages: list[Message]) -> list[Message]:
    """The newest input: user/tool messages after the last assistant message."""
    tail: list[Message] = []
    for m in reversed(messages):
        if m.role == "assistant":
            break
        if m.role in ("user", "tool"):
            tail.append(m)
    tail.reverse()
    return tail


class CallFacts:
    """Lazily computed fingerprints of one call.  Request facts are final once the request is
    parsed; output facts must first be read after the call ended (in `on_response`)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self._done: dict[str, Any] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}

    async def once(self, name: str, compute: Callable[[], Awaitable[T]]) -> T:
        """Run `compute` once per call, however many guards ask, concurrent ones included
        (they await the first caller's result; no task is created)."""
        if name in self._done:
            return cast(T, self._done[name])
        pending = self._pending.get(name)
        if pending is not None:
            return cast(T, await pending)
        future = self._pending[name] = asyncio.get_running_loop().create_future()
        try:
            result = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # waiters re-raise it; nobody else must log it
            raise
        finally:
            del self._pending[name]
        self._done[name] = result
        future.set_result(result)
        return result

    @cached_property
    def message_digests(self) -> list[str]:
        return [digest(_message_text(m)) for m in self.call.messages]

    @cached_property
    def request_digest(self) -> str:
        """Model, tools, system prompt and messages; system prompts and the newest message are
        normalised (timestamps, ids and whitespace vary between resends), the rest exact."""
        call, msgs, digests = self.call, self.call.messages, self.message_digests
        parts = [call.model_requested or "", ",".join(call.tools), normalize(call.system or "")]
        last = len(msgs) - 1
        for i, m in enumerate(msgs):
            # Large texts compare exactly: resends repeat a big document byte for byte, and
            # normalising 500 KB on the request path costs ~15 ms.
            volatile = (i == last or m.role in ("system", "developer")) and len(m.text) <= _NORMALIZE_MAX
            parts.append(normalize(_message_text(m)) if volatile else digests[i])
        return digest(*parts)

    @cached_property
    def thread(self) -> str:
        first = next((m.text for m in self.call.messages if m.role == "user"), "")
        return f"{self.call.agent or '-'}/{digest(self.call.system or '', first)}"

    @cached_property
    def incoming(self) -> set[int]:
        return shingles(" ".join(m.text for m in incoming_messages(self.call.messages)))

    @cached_property
    def tool_results(self) -> list[tuple[ToolCall, Message, str]]:
        """(tool call, its result, digest of name + canonical args + normalised result) for
        each tool result in the newest input whose call appears in the conversation."""
        results = [m for m in incoming_messages(self.call.messages) if m.role == "tool"]
        if not results:
            return []
        index = {
            tc.id: tc for m in self.call.messages if m.role == "assistant" for tc in m.tool_calls if tc.id
        }
        out = []
        for m in results:
            tc = index.get(m.tool_call_id or "")
            if tc is not None:
                out.append((tc, m, digest(tc.name, canonical_args(tc.arguments), normalize(m.text))))
        return out

    @cached_property
    def output_text(self) -> str:
        c = self.call.completion
        return "\n".join(p for p in (c.text, tool_calls_text(c.tool_calls)) if p)

    @cached_property
    def output_sketch(self) -> Sketch:
        return sketch_of(shingles(self.output_text))


class FactsCache:
    """CallFacts by call id, bounded (oldest dropped), so several guards share one computation."""

    __slots__ = ("_cap", "_items")

    def __init__(self, cap: int = 4096) -> None:
        self._cap = cap
        self._items: dict[str, CallFacts] = {}

    def __call__(self, call: Call) -> CallFacts:
        facts = self._items.get(call.id)
        if facts is None or facts.call is not call:
            if len(self._items) >= self._cap:
                self._items.pop(next(iter(self._items)))
            facts = self._items[call.id] = CallFacts(call)
        return facts
