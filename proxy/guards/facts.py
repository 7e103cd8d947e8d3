"""Content fingerprints of a call, computed once per call and shared by every guard.

    CallFacts(call)
      ├─ message_digests   exact digest per input message (history-drop detection)
      ├─ request_digest    normalised digest of the whole request (retry storms)
      ├─ thread            agent + digest(system, first user message)
      ├─ incoming          shingle hashes of the newest non-assistant input (handoff matching)
      ├─ tool_results      fingerprints of the newest tool results (tool repeats)
      ├─ instruction_terms content words of the newest user message(s) (re-delegation)
      ├─ output_terms      content words of the output text (stall, re-delegation)
      └─ output_sketch     bottom-k sketch of what the model produced (no-progress, ping-pong)
         output_encoded, output_similarity(stored sketch)

    FactsCache(call) ──▶ CallFacts, one per call ──uses──▶ Fingerprints (across calls):
        per conversation the messages last seen and their digests (a resent history is
        compared with ==, not hashed again), normalised system prompts, decoded sketches

Near-duplicate text is compared with bottom-k sketches of word-bigram hashes (crc32, stable
across processes): `similarity` estimates Jaccard between two sketches, `containment`
estimates how much of a stored sketch appears in a full hash set.  What is remembered across
calls never changes a value: it only saves recomputing it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import zlib
from array import array
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import Any, Generic, TypeVar, cast, overload

import orjson

from proxy.call import Call, Message, ToolCall
from proxy.guards.terms import Corpora, Lexicon, Terms
from proxy.lru import CharLRU, Generations, drop_oldest

SKETCH_K = 64
_MAX_WORDS = 1000
_STAMP = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_SHINGLE_CHARS = 8_000  # long texts: shingles of their head and tail only
_NORMALIZE_MAX = 65_536
_TEMPLATE_TURNS = 8  # earlier user messages whose lines count as a framework's template

_SYSTEM_ROLES = frozenset({"system", "developer"})
_ROLE, _TEXT, _TOOL_CALLS = attrgetter("role"), attrgetter("text"), attrgetter("tool_calls")

Sketch = tuple[int, ...]
T = TypeVar("T")


class lazy(Generic[T]):
    """`functools.cached_property` minus the lock Python 3.11 takes on every first access
    (a third of the cost of a cheap fact): computed on first read, then a plain attribute.
    For objects used from one thread (the event loop)."""

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> lazy[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> T | lazy[T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)
        return value


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


def message_key(m: Message) -> tuple[str, ...]:
    """What a message's digest depends on (role, text, tool-call names and arguments), as a
    tuple of the parsed strings themselves: no copy, and equal keys compare with memcmp."""
    if not m.tool_calls:
        return (m.role, m.text)
    return (m.role, m.text, *[part for tc in m.tool_calls for part in (tc.name, tc.arguments)])


class _Thread:
    """One conversation's messages as last seen, their digests, and the request digest of the
    last call that sent exactly these messages (with its model, tools and system prompt): a
    resend, what the retry rules count, is fingerprinted by a few comparisons."""

    __slots__ = ("chars", "digests", "messages", "request")

    def __init__(self, messages: list[Message], digests: list[str], chars: int) -> None:
        self.messages = messages
        self.digests = digests
        self.chars = chars
        self.request: tuple[str, str, str, str] | None = None  # (model, tools, system, digest)

    def continued_by(self, messages: list[Message]) -> bool:
        """The new messages start with exactly these ones: texts and roles compare with ==
        (a memcmp per text, in C); tool calls as dataclasses, ids included, which can only
        cost a recomputation."""
        n = len(self.messages)
        if len(messages) < n:
            return False
        old, new = self.messages, messages[:n]
        return (
            list(map(_TEXT, new)) == list(map(_TEXT, old))
            and list(map(_ROLE, new)) == list(map(_ROLE, old))
            and list(map(_TOOL_CALLS, new)) == list(map(_TOOL_CALLS, old))
        )


def _anchor(messages: list[Message]) -> int:
    """Which conversation: its first two messages, by role, length and opening (as
    proxy/tokens.py does).  A clash only costs a failed comparison, never a wrong digest."""
    if len(messages) < 2:
        return hash(tuple((m.role, len(m.text), m.text[:256]) for m in messages))
    a, b = messages[0], messages[1]
    return hash((a.role, len(a.text), a.text[:256], b.role, len(b.text), b.text[:256]))


class Fingerprints:
    """Fingerprints remembered across calls.  Agents resend their whole history every turn:
    per conversation (agent + first two messages) the messages last seen and their digests
    are kept, and a call that starts with exactly those messages (compared with ==, much
    cheaper than hashing them again) only hashes the messages after them, like the token
    counter (proxy/tokens.py).  System prompts are normalised once, stored sketches decoded
    once.  Bounded; never shared between processes; the values are those computed afresh.
    Relies on parsed messages not being changed afterwards (providers build new ones)."""

    def __init__(self, max_chars: int = 8_000_000, max_sketches: int = 16_384) -> None:
        self._threads: CharLRU[tuple[str | None, int], _Thread] = CharLRU(max_chars)
        self._normal: Generations[tuple[str, ...], str] = Generations(max_chars // 4)
        self._sketches: Generations[str, Sketch] = Generations(max_sketches)
        self._outputs: Generations[str, tuple[Sketch, str]] = Generations(max_chars // 8)
        self.lexicon = Lexicon(max_chars // 4)
        self.continued = 0  # calls whose digests continued a known conversation

    def message_digests(self, call: Call) -> list[str]:
        """`digest(_message_text(m))` for each message of the call."""
        return self.thread(call).digests

    def thread(self, call: Call) -> _Thread:
        """The call's conversation with its message digests; the same object as last time when
        the call resends exactly the messages last seen."""
        msgs = call.messages
        key = (call.agent, _anchor(msgs))
        seen = self._threads.get(key)
        if seen is not None and seen.continued_by(msgs):
            self.continued += 1
            if len(msgs) == len(seen.messages):
                return seen
            digests = seen.digests + [digest(_message_text(m)) for m in msgs[len(seen.digests) :]]
        else:
            digests = [digest(_message_text(m)) for m in msgs]
        thread = _Thread(list(msgs), digests, sum(map(len, map(_TEXT, msgs))))
        self._threads.put(key, thread, thread.chars)
        return thread

    def normalized(self, m: Message) -> str:
        """`normalize(_message_text(m))` (system prompts: the same in every call of an agent)."""
        key = message_key(m)
        text = self._normal.get(key)
        if text is None:
            text = self._normal.put(key, normalize(_message_text(m)), len(m.text))
        return text

    def normalized_text(self, text: str) -> str:
        key = ("", text)
        normal = self._normal.get(key)
        if normal is None:
            normal = self._normal.put(key, normalize(text), len(text))
        return normal

    def output(self, text: str) -> tuple[Sketch, str]:
        """`sketch_of(shingles(text))` and its encoding.  An agent stuck in a loop gives the
        same answer again and again: that is what the no-progress rules look for."""
        found = self._outputs.get(text)
        if found is None:
            sketch = sketch_of(shingles(text))
            found = self._outputs.put(text, (sketch, encode_sketch(sketch)), len(text))
        return found

    def decode(self, encoded: str) -> Sketch:
        """`decode_sketch(encoded)` (the same stored sketches are read by every later call)."""
        sketch = self._sketches.get(encoded)
        if sketch is None:
            sketch = self._sketches.put(encoded, decode_sketch(encoded))
        return sketch


_PENDING: Any = object()  # in CallFacts._pending: computing, nobody waiting yet


class CallFacts:
    """Lazily computed fingerprints of one call.  Request facts are final once the request is
    parsed; output facts must first be read after the call ended (in `on_response`).
    `known` remembers fingerprints across calls (None: compute everything afresh)."""

    def __init__(self, call: Call, known: Fingerprints | None = None) -> None:
        self.call = call
        self.id = call.id
        self.known = known
        self._done: dict[str, Any] = {}
        self._pending: dict[str, Any] = {}  # name → _PENDING, or the future waiters await
        self._similar: dict[str, float] = {}

    def get(self, name: str, default: Any = None) -> Any:
        """What `once(name, ...)` computed for this call, else `default` (no await: the
        cheap path for the second and later guards asking)."""
        return self._done.get(name, default)

    async def once(self, name: str, compute: Callable[[], Awaitable[T]]) -> T:
        """Run `compute` once per call, however many guards ask, concurrent ones included
        (they await the first caller's result; no task is created, and a future only when
        someone has to wait)."""
        if name in self._done:
            return cast(T, self._done[name])
        pending = self._pending.get(name)
        if pending is not None:
            if pending is _PENDING:
                pending = self._pending[name] = asyncio.get_running_loop().create_future()
            return cast(T, await pending)
        self._pending[name] = _PENDING
        try:
            result = await compute()
        except BaseException as exc:
            future = self._pending.pop(name)
            if future is not _PENDING and not future.done():
                future.set_exception(exc)
                future.exception()  # waiters re-raise it; nobody else must log it
            raise
        future = self._pending.pop(name)
        self._done[name] = result
        if future is not _PENDING and not future.done():
            future.set_result(result)
        return result

    @lazy
    def known_thread(self) -> _Thread | None:
        return self.known.thread(self.call) if self.known is not None else None

    @lazy
    def message_digests(self) -> list[str]:
        thread = self.known_thread
        if thread is not None:
            return thread.digests
        return [digest(_message_text(m)) for m in self.call.messages]

    @lazy
    def request_digest(self) -> str:
        """Model, tools, system prompt and messages; system prompts and the newest message are
        normalised (timestamps, ids and whitespace vary between resends), the rest exact."""
        call, thread = self.call, self.known_thread
        model, tools, system = call.model_requested or "", ",".join(call.tools), call.system or ""
        if thread is None:
            return self._request_digest(model, tools, system)
        last = thread.request  # these very messages were sent before: the same inputs?
        if last is not None and last[0] == model and last[1] == tools and last[2] == system:
            return last[3]
        found = self._request_digest(model, tools, system)
        thread.request = (model, tools, system, found)
        return found

    def _request_digest(self, model: str, tools: str, system: str) -> str:
        msgs, digests, known = self.call.messages, self.message_digests, self.known
        parts = [model, tools, normalize(system) if known is None else known.normalized_text(system)]
        last = len(msgs) - 1
        for i, m in enumerate(msgs):
            # Large texts compare exactly: resends repeat a big document byte for byte, and
            # normalising 500 KB on the request path costs ~15 ms.
            if len(m.text) > _NORMALIZE_MAX or (i != last and m.role not in _SYSTEM_ROLES):
                parts.append(digests[i])
            elif known is None:
                parts.append(normalize(_message_text(m)))
            else:  # a system prompt (the same in every call of the agent), or the newest
                parts.append(known.normalized(m))  # message (the same in every retry)
        return digest(*parts)

    @lazy
    def thread(self) -> str:
        first = next((m.text for m in self.call.messages if m.role == "user"), "")
        return f"{self.call.agent or '-'}/{digest(self.call.system or '', first)}"

    @lazy
    def incoming(self) -> set[int]:
        return shingles(" ".join(m.text for m in incoming_messages(self.call.messages)))

    @lazy
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

    @lazy
    def instruction(self) -> str:
        """The newest user message(s) after the agent's last turn: what it was just asked
        (tool results are not instructions), minus the lines a framework repeats verbatim in
        every turn (a ledger prompt's template, the task restated): lines found in the
        conversation's earlier user messages.  When every line was seen before, the whole
        text is the instruction (the same instruction sent again)."""
        msgs = self.call.messages
        tail = incoming_messages(msgs)
        new = [m.text for m in tail if m.role == "user"]
        if not new:
            return ""
        text = "\n".join(new)
        if "\n" not in text:
            return text
        cut = next((i for i in range(len(msgs) - 1, -1, -1) if msgs[i].role == "assistant"), -1)
        earlier = [m.text for m in msgs[: cut + 1] if m.role == "user"][-_TEMPLATE_TURNS:]
        if not earlier:
            return text
        seen = {line.strip() for t in earlier for line in t.splitlines()}
        fresh = [line for line in text.splitlines() if line.strip() not in seen]
        return "\n".join(fresh) if fresh else text

    @lazy
    def instruction_terms(self) -> Terms:
        return self.lexicon.terms(self.instruction)

    @lazy
    def output_terms(self) -> Terms:
        """Content words of the text the model produced (tool calls are actions, not content)."""
        return self.lexicon.terms(self.call.completion.text)

    @lazy
    def lexicon(self) -> Lexicon:
        return self.known.lexicon if self.known is not None else Lexicon(0)

    @lazy
    def output_text(self) -> str:
        c = self.call.completion
        return "\n".join(p for p in (c.text, tool_calls_text(c.tool_calls)) if p)

    @lazy
    def output_sketch(self) -> Sketch:
        if self.known is not None:
            self.output_sketch, self.output_encoded = self.known.output(self.output_text)
            return self.output_sketch
        return sketch_of(shingles(self.output_text))

    @lazy
    def output_encoded(self) -> str:
        return encode_sketch(self.output_sketch)

    def decode(self, encoded: str) -> Sketch:
        return decode_sketch(encoded) if self.known is None else self.known.decode(encoded)

    def output_similarity(self, encoded: str) -> float:
        """`similarity(output_sketch, decode_sketch(encoded))`, once per stored sketch and call
        (every no-progress rule over the same scope reads the same list)."""
        value = self._similar.get(encoded)
        if value is None:
            if encoded == self.output_encoded and self.output_sketch:
                value = 1.0  # the same answer again (a sketch is sorted, without repeats)
            else:
                value = similarity(self.output_sketch, self.decode(encoded))
            self._similar[encoded] = value
        return value


class FactsCache:
    """CallFacts by call id, bounded (oldest dropped), so several guards share one computation;
    `known` carries fingerprints over from call to call."""

    __slots__ = ("_cap", "_items", "_last", "corpora", "known")

    def __init__(self, cap: int = 4096, known: Fingerprints | None = None) -> None:
        self._cap = cap
        self._items: dict[str, CallFacts] = {}
        self._last: CallFacts | None = None
        self.known = known if known is not None else Fingerprints()
        self.corpora = Corpora(self.known.lexicon)

    def __call__(self, call: Call) -> CallFacts:
        last = self._last  # every guard of the call asks in turn: usually the same call
        if last is not None and last.call is call and last.id == call.id:
            return last
        facts = self._items.get(call.id)
        if facts is None or facts.call is not call:
            if len(self._items) >= self._cap:
                drop_oldest(self._items)
            facts = self._items[call.id] = CallFacts(call, self.known)
        self._last = facts
        return facts

    def __len__(self) -> int:
        """Calls whose facts are held."""
        return len(self._items)

    def forget(self, call: Call) -> None:
        """The call ended (the chain's `on_response` is done): its facts are not needed any
        more.  Keeping them until the cap pushed them out held the last 4,096 calls' bodies
        alive (1.6 GB of 100k-token requests) and freed each one long after, out of cache."""
        facts = self._items.pop(call.id, None)
        if self._last is facts:
            self._last = None

    def decode(self, encoded: str) -> Sketch:
        return self.known.decode(encoded)
