"""Content fingerprints: does this input contain (part of) that earlier output?

    text ─▶ words (ASCII-folded, punctuation dropped) ─▶ word ids (blake2b, cached)
         ─▶ k-word shingles: hash(tuple of k ids)        deterministic across processes

    output (source side)          parts: paragraphs, list items, each string value of
      └─ per part, the shingles   tool-call arguments; a part keeps ~1/every of its
         whose hash is 0 mod      shingles (all of them when short; winnowed when the
         `every`, and its last    draw was unlucky), in text order, plus its last one; the
                                  choice depends on content only, so the same passage in
                                  two outputs keeps the same fingerprints
    new input (target side)       every shingle (plus 3- and 4-word grams of short
                                  segments, so a three-word query handed to a tool is found)

Only the source side is sampled, so any sampled source shingle present in the target is
found: coverage (present / kept) estimates the share of the output that reached the target,
and the order of the kept shingles shows whether the target lost the end of a part.
Everything here is C-level list work (bytes.translate, split, map, zip): no per-character
Python loops; about 0.25 us per word on a slow core.  Word ids are 30-bit (small ints hash
fastest) and tuple hashes of ints are the same in every process, so replicas sharing an
index agree on fingerprints.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from dataclasses import dataclass

import orjson

from proxy.call import Completion


def _fold_table() -> bytes:
    """ASCII letters to lower case, ASCII punctuation to spaces; UTF-8 bytes kept."""
    out = bytearray(range(256))
    for b in range(0x80):
        if 0x41 <= b <= 0x5A:
            out[b] = b + 32
        elif not (0x30 <= b <= 0x39 or 0x61 <= b <= 0x7A):
            out[b] = 0x20
    return bytes(out)


_TABLE = _fold_table()
_PART_START = re.compile(r"^\s*(?:[-*•+>]|\d{1,3}[.)]|[a-z][.)]|#{1,6}|(?:step|part|task)\s+\d+\b)", re.I)
SHORT_MIN = 3  # fewer words than this never make a fingerprint
# An output's text past this many characters is not fingerprinted: its fingerprints are taken
# on the event loop (Linker.note_output, then the pipeline), ~60 ns per character, so a 1 MiB
# completion (a runaway stream at INTERLOCK_STREAM_TEXT_MAX_CHARS) stalled every other client
# for ~0.1 s.  256 Ki characters is ~64k tokens, past any model's usual answer.
OUTPUT_MAX_CHARS = 256 * 1024


@dataclass(frozen=True, slots=True)
class SourcePrint:
    """What an output leaves in the index."""

    fps: tuple[int, ...]
    part_ends: tuple[int, ...]
    tails: tuple[bytes, ...]  # per part: its tail signature (see tail_signature)
    chars: int
    handed: int = 0  # bit i: part i is an argument string handed to a call


class Shingler:
    """Words → shingle hashes.  Holds a bounded word-id cache (cleared when full)."""

    def __init__(self, *, k: int = 5, every: int = 3, max_vocab: int = 262_144) -> None:
        if every < 2:
            raise ValueError(f"every must be >= 2, got {every}")
        self.k = k
        self.every = every
        self._ids: dict[bytes, int] = {}
        self._max_vocab = max_vocab

    def words(self, text: str) -> list[int]:
        toks = text.encode("utf-8", "surrogatepass").translate(_TABLE).split()
        ids = self._ids
        try:
            return list(map(ids.__getitem__, toks))
        except KeyError:
            self._learn(toks)
            return list(map(ids.__getitem__, toks))

    def _learn(self, toks: list[bytes]) -> None:
        ids = self._ids
        if len(ids) > self._max_vocab:
            ids.clear()
        for t in set(toks).difference(ids):
            ids[t] = (
                int.from_bytes(hashlib.blake2b(t, digest_size=4).digest(), "little") >> 2
            )  # small ints hash fast

    def grams(self, ids: list[int], n: int) -> list[int]:
        if len(ids) < n:
            return []
        return list(map(hash, zip(*[ids[i:] for i in range(n)], strict=False)))

    def target(self, text: str) -> tuple[int, set[int]]:
        """(hash of all its words, every shingle) of an input segment; short segments get
        their 3..k-1 word grams too.  The word hash is 0 for text without words."""
        ids = self.words(text)
        k = self.k
        found = set(map(hash, zip(*[ids[i:] for i in range(k)], strict=False))) if len(ids) >= k else set()
        if len(ids) < 2 * k:
            for n in range(SHORT_MIN, min(k, len(ids) + 1)):
                found.update(self.grams(ids, n))
        return (hash(tuple(ids)) if ids else 0), found

    def part(self, text: str) -> tuple[list[int], bytes]:
        """The kept shingles of one output part, in order, and its tail signature."""
        ids = self.words(text)
        if len(ids) < SHORT_MIN:
            return [], b""
        if len(ids) < self.k:
            return [hash(tuple(ids))], b""
        sh = self.grams(ids, self.k)
        if len(sh) < 8:
            return sh, b""
        kept = sample(sh, self.every if len(sh) >= 16 else 2)
        if kept[-1] != sh[-1]:
            kept.append(sh[-1])
        return kept, tail_signature(ids)

    def source(self, completion: Completion) -> SourcePrint:
        fps: list[int] = []
        ends: list[int] = []
        tails: list[bytes] = []
        chars = handed = 0
        for part, argument in output_parts(completion):
            kept, tail = self.part(part)
            if kept:
                fps.extend(kept)
                if argument:
                    handed |= 1 << len(ends)
                ends.append(len(fps))
                tails.append(tail)
                chars += len(part)
        return SourcePrint(tuple(fps), tuple(ends), tuple(tails), chars, handed)


def tail_signature(ids: list[int], n: int = 8) -> bytes:
    """Up to n words from the last third of a part that do not occur before it, packed.

    A copy that lost the part's end lacks them; a paraphrased copy that only lost some
    shingles near the end still has most of them."""
    cut = len(ids) * 2 // 3
    head = set(ids[:cut])
    tail = list(dict.fromkeys([w for w in ids[cut:] if w not in head]))
    return array("I", tail[-n:]).tobytes()


def unpack_tail(signature: bytes) -> list[int]:
    return array("I", signature).tolist()


def output_parts(completion: Completion) -> list[tuple[str, bool]]:
    """An output cut where an orchestrator would cut it to hand out pieces; True marks a
    string handed to a call (a tool call's argument, or a call's in code).  Only the text's
    first OUTPUT_MAX_CHARS characters are cut into parts."""
    text = completion.text[:OUTPUT_MAX_CHARS]
    parts = [(part, False) for part in text_parts(text)]
    if "(" in text:
        parts = [piece for part, _ in parts for piece in call_arguments(part)]
    for tc in completion.tool_calls:
        parts.extend((arg, True) for arg in argument_strings(tc.arguments))
    return parts


_CALL_ARG = re.compile(r"""\b\w+\s*\(\s*(?:\w+\s*=\s*)?[rfbu]?(\"\"\"|\'\'\'|"|')(.+?)\1""", re.S)


def call_arguments(part: str) -> list[tuple[str, bool]]:
    """A part with string arguments of a call in code (`analyst(task='...')`, a code agent
    handing work to another): each such string of SHORT_MIN words or more is a part of its
    own (marked True), the code around it another, as a tool call's argument strings are."""
    if "(" not in part:
        return [(part, False)]
    out: list[tuple[str, bool]] = []
    last = 0
    for m in _CALL_ARG.finditer(part):
        literal = m.group(2)
        if len(literal.split()) < SHORT_MIN:
            continue
        out += [(part[last : m.start(2)], False), (literal, True)]
        last = m.end(2)
    if not out:
        return [(part, False)]
    out.append((part[last:], False))
    return [p for p in out if p[0].strip()]


def text_parts(text: str) -> list[str]:
    if "\n" not in text:
        return [text] if text.strip() else []
    parts: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if not line.strip() or _PART_START.match(line):
            _flush(current, parts)
        if line.strip():
            current.append(line)
    _flush(current, parts)
    return parts


def _flush(current: list[str], parts: list[str]) -> None:
    if current:
        parts.append("\n".join(current))
        current.clear()


def argument_strings(arguments: str) -> list[str]:
    """String values of tool-call arguments (the raw text when they are not JSON)."""
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return [arguments] if arguments.strip() else []
    out: list[str] = []
    _strings(value, out)
    return out


def _strings(value: object, out: list[str]) -> None:
    if isinstance(value, str):
        if value.strip():
            out.extend(text_parts(value))
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


def sample(hashes: list[int], every: int) -> list[int]:
    """The hashes that are 0 mod `every`, in order: the choice depends on the shingle alone,
    so the same passage keeps the same fingerprints in any output.  A part unlucky enough
    to keep under half its expected share is winnowed instead (one per window)."""
    kept = [h for h in hashes if not h % every]
    if 2 * every * len(kept) >= len(hashes):
        return kept
    return winnow(hashes, 2 * every)


def winnow(hashes: list[int], w: int) -> list[int]:
    """The minimum of every window of w consecutive hashes, each once, in text order: any
    run of w shared shingles shares a fingerprint, and the same passage keeps the same ones."""
    if len(hashes) <= w:
        return [min(hashes)]
    return list(dict.fromkeys(map(min, zip(*(hashes[i:] for i in range(w)), strict=False))))
