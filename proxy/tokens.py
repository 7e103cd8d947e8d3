"""Request token counting with tiktoken: offline, per model, incremental.

    model ──route()──▶ Route(encoding, factor)
        gpt-4o, gpt-4.1, gpt-4.5, gpt-5*, o1/o3/o4*, chatgpt-*, unknown names ─▶ o200k_base
        gpt-4 (not 4o/4.1/4.5), gpt-3.5, text-embedding-*, davinci/babbage-002  ─▶ cl100k_base
        claude-* (or provider anthropic) ─▶ o200k_base × ANTHROPIC_FACTOR (an estimate)

    Call ──count_call()──▶ 3 (reply priming)
                           + Σ over messages (system too): 3 + text + tool-call names/arguments
                           + JSON of the request's `tools`
                           + a fixed estimate per image part
         history memo: conversation (first two messages) ─▶ texts last counted + total;
                       a call that starts with exactly those texts (==, a memcmp) only
                       looks up the texts after them
         text cache:   hash(text) ─▶ count, bounded, per encoding; a miss is encoded
         so an agent resending its whole history every turn pays only for what is new.

Encodings load from files only (shipped with the package, or INTERLOCK_ENCODINGS_DIR, see
proxy/encodings.py); tiktoken is never asked to download.  When they are missing the
constructor raises EncodingsUnavailable; `TokenCounter.approximate()` (or `load_counter`)
gives a counter that still works, at about 4 characters per token.

A TokenCounter is not thread-safe: use it from one thread (the event loop).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import attrgetter, is_
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, cast

import orjson
import tiktoken

from proxy.call import Call
from proxy.encodings import CL100K_BASE, O200K_BASE, EncodingFile, default_encodings_dir, sha256_of
from proxy.lru import CharLRU, Generations

# OpenAI's cookbook ("How to count tokens with tiktoken") for cl100k/o200k chat models:
# every message costs 3 tokens of framing and every reply is primed with 3.
PER_MESSAGE = 3
REPLY_PRIMING = 3

# Claude's tokenizer is not public.  A published comparison of Claude 3.5 Sonnet against
# GPT-4o (o200k_base) on the same inputs (VentureBeat, May 2025) measured about +16% tokens
# for English articles, +21% for maths and +30% for Python code; agent traffic mixes prose,
# JSON and code, so 1.2 sits in the middle.
# It is an estimate for guards and dashboards: Anthropic's reported usage (or its
# /v1/messages/count_tokens endpoint) stays the truth.
ANTHROPIC_FACTOR = 1.2

# Images are not text; a fixed estimate per image part.  OpenAI: 85 base + 170 per 512px
# tile, so a high-detail 1024x1024 image costs 765 and detail=low costs 85.  Anthropic:
# about width*height/750, which reaches ~1,600 at the largest size it keeps unscaled.
OPENAI_IMAGE_TOKENS = 765
OPENAI_LOW_DETAIL_IMAGE_TOKENS = 85
ANTHROPIC_IMAGE_TOKENS = 1600
_IMAGE_PART_TYPES = frozenset({"image_url", "input_image", "image"})

APPROX_CHARS_PER_TOKEN = 4
DEFAULT_CACHE_SIZE = 65_536
DEFAULT_HISTORY_CHARS = 16_000_000  # characters of recent histories kept to compare against
_SYSTEM_ROLES = frozenset({"system", "developer"})
_TEXT = attrgetter("text")
_ROLE = attrgetter("role")
_TOOL_CALLS = attrgetter("tool_calls")
_NAME_ARGS = attrgetter("name", "arguments")

# Copied from tiktoken_ext/openai_public.py (tiktoken 0.14).
_ENDOFTEXT = "<|endoftext|>"
_FIM_PREFIX = "<|fim_prefix|>"
_FIM_MIDDLE = "<|fim_middle|>"
_FIM_SUFFIX = "<|fim_suffix|>"
_ENDOFPROMPT = "<|endofprompt|>"
_CL100K_PAT = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
_O200K_PAT = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


@dataclass(frozen=True, slots=True)
class _EncodingDef:
    file: EncodingFile
    pat_str: str
    special_tokens: Mapping[str, int]


_DEFS = (
    _EncodingDef(
        CL100K_BASE,
        _CL100K_PAT,
        MappingProxyType(
            {
                _ENDOFTEXT: 100257,
                _FIM_PREFIX: 100258,
                _FIM_MIDDLE: 100259,
                _FIM_SUFFIX: 100260,
                _ENDOFPROMPT: 100276,
            }
        ),
    ),
    _EncodingDef(O200K_BASE, _O200K_PAT, MappingProxyType({_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018})),
)


ENCODINGS = tuple(d.file.name for d in _DEFS)


class EncodingsUnavailable(RuntimeError):
    """The encoding files are missing or corrupt; the message says how to install them."""


# ---------------------------------------------------------------- model routing


@dataclass(frozen=True, slots=True)
class Route:
    """How a model's tokens are counted: an encoding and a factor applied to its count."""

    encoding: str
    factor: float = 1.0

    @property
    def estimated(self) -> bool:
        return self.factor != 1.0


O200K = Route("o200k_base")
CL100K = Route("cl100k_base")
ANTHROPIC = Route("o200k_base", ANTHROPIC_FACTOR)
_CL100K_PREFIXES = ("gpt-4", "gpt-3.5", "gpt-35", "text-embedding-", "davinci-002", "babbage-002")
_O200K_GPT4_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5")


def _base_name(model: str) -> str:
    """`openai/gpt-4o`, `ft:gpt-4o-mini:org::id`, `GPT-4` -> the bare lowercase name."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    return name.removeprefix("ft:")


def route(model: str | None, factor: float | None = None) -> Route:
    """The Route for a model name; unknown OpenAI-compatible names count as o200k_base.
    `factor`: the provider's estimate (`ProviderSpec.token_factor`): o200k_base times it."""
    name = _base_name(model or "")
    if factor is not None and factor != ANTHROPIC_FACTOR:
        return Route("o200k_base", factor)
    if factor is not None or "claude" in name:
        return ANTHROPIC
    if name.startswith(_CL100K_PREFIXES) and not name.startswith(_O200K_GPT4_PREFIXES):
        return CL100K
    return O200K


# ---------------------------------------------------------------- loading


def _missing(path: Path, why: str) -> EncodingsUnavailable:
    return EncodingsUnavailable(
        f"tiktoken encoding file {path} {why}; reinstall Interlock (the files ship with it) or, for "
        f"another directory, run `interlock encodings install --dest {path.parent}`; `interlock doctor` checks it"
    )


def _parse_bpe(data: bytes, path: Path) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if not ranks:
        raise _missing(path, "is empty")
    return ranks


def load_encoding(directory: Path, name: str) -> tiktoken.Encoding:
    """Build the Encoding `name` (cl100k_base or o200k_base) from its verified file in `directory`.

    Not `tiktoken.load.load_tiktoken_bpe`: for a local path it still copies the file into
    $TMPDIR/data-gym-cache (and prefers a cached copy found there), a side effect we avoid.
    """
    spec = next((d for d in _DEFS if d.file.name == name), None)
    if spec is None:
        raise ValueError(f"unknown encoding {name!r}; known: {', '.join(ENCODINGS)}")
    path = directory / spec.file.filename
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _missing(path, f"cannot be read ({exc.strerror or exc})") from None
    if sha256_of(data) != spec.file.sha256:
        raise _missing(path, f"does not have the expected sha256 {spec.file.sha256}")
    encoding = tiktoken.Encoding(
        spec.file.name,
        pat_str=spec.pat_str,
        mergeable_ranks=_parse_bpe(data, path),
        special_tokens=dict(spec.special_tokens),
    )
    # The Rust core holds its own copy of the ranks; the Python dict is kept only to pickle the
    # Encoding, which Interlock never does: ~40 MiB per process (both encodings) freed at start.
    encoding._mergeable_ranks = {}
    return encoding


def _exact_measures(directory: Path) -> dict[str, Callable[[str], int]]:
    return {name: _length_of(load_encoding(directory, name)) for name in ENCODINGS}


def _length_of(encoding: tiktoken.Encoding) -> Callable[[str], int]:
    encode = encoding.encode_ordinary  # special-token text in content is just text
    return lambda text: len(encode(text))


def _approx_measure(text: str) -> int:
    return -(-len(text) // APPROX_CHARS_PER_TOKEN)


# ---------------------------------------------------------------- counting


def _count_cache(size: int) -> Generations[int, int]:
    """Text key ─▶ token count, at most `size` entries (each weighs 2: half of them young)."""
    return Generations(2 * max(1, size // 2))


@dataclass(frozen=True, slots=True)
class _History:
    """One conversation's texts as last counted, and their token total."""

    messages: list[str]
    calls: list[str]
    tokens: int
    chars: int

    def continued_by(self, messages: list[str], calls: list[str]) -> bool:
        return _starts_with(messages, self.messages) and _starts_with(calls, self.calls)


class _Texts(NamedTuple):
    messages: list[str]  # one per message, in order
    calls: list[str]  # tool-call names and arguments, in order
    extra: list[str]  # the system prompt when it is not a message, the tools' JSON
    framed: int  # messages that pay the per-message framing


class TokenCounter:
    """Counts tokens of calls and texts, encoding each text once.

    `TokenCounter(dir)` loads cl100k_base and o200k_base from `dir` (default:
    `default_encodings_dir()`) and raises EncodingsUnavailable when they are missing.
    `TokenCounter.approximate()` never fails: ~4 characters per token, `exact` is False.
    Counting methods run on the request path: no I/O, no awaiting, they do not raise.

    Two caches make a resent history cheap.  Per text: counts keyed by hash(text), so a
    message is encoded once whatever call it comes back in.  Per conversation (keyed by
    its first two messages): the texts last counted and their total; when a new call
    starts with exactly those texts (compared with ==, a memcmp, much faster than hashing
    them again) only the texts after them are looked up.
    """

    def __init__(
        self,
        encodings_dir: Path | None = None,
        *,
        approximate: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
        history_chars: int = DEFAULT_HISTORY_CHARS,
    ) -> None:
        self.exact = not approximate
        if approximate:
            self._measures: dict[str, Callable[[str], int]] = dict.fromkeys(ENCODINGS, _approx_measure)
        else:
            self._measures = _exact_measures(encodings_dir or default_encodings_dir())
        # Keyed by hash(text): computed in C, randomised per process (fine for an
        # in-process cache).  A 64-bit collision among the cached texts (~1e-10 at full
        # size) would only mis-count one text; a bare int key is twice as fast to look up
        # as a (len, hash) tuple, which matters at a thousand texts per call.
        self._caches = {name: _count_cache(cache_size) for name in self._measures}
        self._histories: CharLRU[tuple[str, int], _History] = CharLRU(history_chars)
        self.lookups = 0  # texts looked up in the per-text cache
        self.encodes = 0  # texts actually encoded (per-text cache misses)
        self.continued = 0  # calls that continued a known history

    @classmethod
    def approximate(cls, *, cache_size: int = DEFAULT_CACHE_SIZE) -> TokenCounter:
        """A counter without encoding files: ceil(characters / 4) per text, clearly not exact."""
        return cls(approximate=True, cache_size=cache_size)

    @property
    def method(self) -> str:
        """How counts are made, for logs and stored rows."""
        return "tiktoken" if self.exact else f"approx-{APPROX_CHARS_PER_TOKEN}-chars-per-token"

    def cached(self, encoding: str) -> int:
        """Number of texts whose count is cached for `encoding`."""
        return len(self._caches[encoding])

    def count_text(self, model: str | None, text: str) -> int:
        """Tokens of a bare text for `model` (no message framing); used to meter output."""
        r = route(model)
        return _scaled(self._count_all(r.encoding, [text]), r)

    def count_call(self, call: Call, factor: float | None = None) -> int:
        """Input tokens of a request: messages, system, tool calls and definitions, images.
        `factor`: the provider's estimate factor (None: exact, by model name)."""
        r = route(call.model_requested, factor)
        texts = _texts_of(call)
        n = REPLY_PRIMING + PER_MESSAGE * texts.framed
        n += self._count_history(r.encoding, texts.messages, texts.calls) + self._count_all(
            r.encoding, texts.extra
        )
        # Walking every content block costs ~0.3 ms on a long Anthropic history; a byte search
        # of the raw body for the one marker all image parts share costs microseconds.
        if call.request_bytes and b'"image' not in call.request_bytes:
            return _scaled(n, r)
        return _scaled(n, r) + _image_tokens(call.request, r.estimated)

    def _count_history(self, encoding: str, messages: list[str], calls: list[str]) -> int:
        key = (encoding, _anchor(messages))
        prev = self._histories.get(key)
        if prev is not None and prev.continued_by(messages, calls):
            self.continued += 1
            new_messages, new_calls = messages[len(prev.messages) :], calls[len(prev.calls) :]
            tokens = (
                prev.tokens + self._count_all(encoding, new_messages) + self._count_all(encoding, new_calls)
            )
            chars = prev.chars + sum(map(len, new_messages)) + sum(map(len, new_calls))
        else:
            tokens = self._count_all(encoding, messages) + self._count_all(encoding, calls)
            chars = sum(map(len, messages)) + sum(map(len, calls))
        self._histories.put(key, _History(messages, calls, tokens, chars), chars)
        return tokens

    def _count_all(self, encoding: str, texts: list[str]) -> int:
        """Sum of the texts' counts; only texts not seen before are encoded."""
        cache = self._caches[encoding]
        keys = list(map(hash, texts))
        counts = cache.young_hits(keys)
        self.lookups += len(keys)
        if None in counts:
            for i in list(compress(range(len(counts)), map(is_, counts, repeat(None)))):
                counts[i] = self._resolve(encoding, cache, texts[i], keys[i])
        return sum(cast(list[int], counts))

    def _resolve(self, encoding: str, cache: Generations[int, int], text: str, key: int) -> int:
        n = cache.get(key)  # in the old generation, or equal to a text earlier in this call
        if n is None:
            n = self._measures[encoding](text) if text else 0
            self.encodes += bool(text)
            cache.put(key, n)
        return n


def _anchor(messages: list[str]) -> int:
    """Which conversation this is: the first two messages, by length and opening.  Cheap
    even for a long first document; a clash only costs a failed comparison, never a count."""
    return hash(tuple((len(t), t[:256]) for t in messages[:2]))


def _starts_with(texts: list[str], prefix: list[str]) -> bool:
    return len(texts) >= len(prefix) and texts[: len(prefix)] == prefix


def _texts_of(call: Call) -> _Texts:
    """Every text a request sends.  The system prompt is its own message unless the
    provider parser already listed it among the messages (OpenAI chat does, Anthropic
    does not).  map/attrgetter keep the per-message work in C: a long history is hundreds
    of messages."""
    msgs = call.messages
    calls = list(chain.from_iterable(map(_TOOL_CALLS, msgs)))
    extra: list[str] = []
    framed = len(msgs)
    if call.system and _SYSTEM_ROLES.isdisjoint(map(_ROLE, msgs)):
        extra.append(call.system)
        framed += 1
    tools = call.request.get("tools") if call.request else None
    if tools:
        extra.append(orjson.dumps(tools).decode())
    return _Texts(list(map(_TEXT, msgs)), list(chain.from_iterable(map(_NAME_ARGS, calls))), extra, framed)


def load_counter(encodings_dir: Path | None, warn: Callable[[str], None], *,
                 history_chars: int = DEFAULT_HISTORY_CHARS) -> TokenCounter:
    """The exact counter when the encodings are installed, else the approximation (warned)."""
    try:
        return TokenCounter(encodings_dir, history_chars=history_chars)
    except EncodingsUnavailable as exc:
        warn(
            f"{exc}; counting tokens approximately (~{APPROX_CHARS_PER_TOKEN} characters per token) meanwhile"
        )
        return TokenCounter(approximate=True, history_chars=history_chars)


def _scaled(n: int, r: Route) -> int:
    return math.ceil(n * r.factor) if r.estimated else n


def _image_tokens(request: dict[str, Any] | None, anthropic: bool) -> int:
    """Fixed estimate per image part in the messages (and in Anthropic tool results).

    One plain pass: on a freshly parsed history it beats map/filter pipelines, which touch
    the same cold objects several times.
    """
    items = (request.get("messages") or request.get("input")) if request else None
    if not isinstance(items, list):
        return 0
    images: list[dict[str, Any]] = []
    try:
        for item in items:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, list):
                _collect_images(content, images)
    except TypeError:  # an unhashable "type": the upstream refuses such a request anyway
        return 0
    return sum(_image_cost(part, anthropic) for part in images)


def _collect_images(parts: list[Any], out: list[dict[str, Any]]) -> None:
    for part in parts:
        if isinstance(part, dict):
            kind = part.get("type")
            if kind in _IMAGE_PART_TYPES:
                out.append(part)
            elif kind == "tool_result" and isinstance(inner := part.get("content"), list):
                _collect_images(inner, out)


def _image_cost(part: dict[str, Any], anthropic: bool) -> int:
    if anthropic:
        return ANTHROPIC_IMAGE_TOKENS
    inner = part.get("image_url")
    detail = inner.get("detail") if isinstance(inner, dict) else part.get("detail")
    return OPENAI_LOW_DETAIL_IMAGE_TOKENS if detail == "low" else OPENAI_IMAGE_TOKENS
