"""Which earlier outputs does a call's new input contain, and how much of each?

    new input segments ──shingles──▶ index.lookup ──▶ candidate outputs
        │  drop: same thread, ended after the target started
        │  each shared shingle goes to the NEWEST candidate holding it
        │     (B restated A's plan and C got B's text: the plan came from B, not A)
        ▼
    accept: ≥ min_hits shared fingerprints, all of a short output, or half of one part
        │  drop A when another accepted source B was itself fed by A
        │     (group chat: the whole transcript is in every input; only the newest
        │      speaker hands to the next)
        ▼
    Lineage(record, hits, coverage, truncated, via, segments)

Truncation: the target lost the end of a part of the source (a dense run of the part's
fingerprints, then a tail of at least `tail_min` and `tail_share` of the part missing, and
most of the words peculiar to the part's end missing too — a paraphrase loses shingles
near the end but keeps those words), or the source itself stopped on finish_reason=length.
A fan-out hands each worker whole parts (list items, paragraphs, tool arguments), so it
never looks cut; splitting one paragraph sentence by sentence would.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from proxy.graph.fingerprint import unpack_tail
from proxy.graph.model import CallRecord


@dataclass(frozen=True, slots=True)
class LineageConfig:
    min_hits: int = 3  # shared fingerprints that make an edge ...
    short_hits: int = 1  # ... or, for an output with fewer than min_hits, this many and all of it
    part_hits: int = 2  # ... or this many, when they are half of one part of the output
    merge_hits: int = 5  # lineage from another open run merges the runs with this many hits ...
    merge_share: float = 0.3  # ... that are this share of the source's fingerprints
    tail_min: int = 4  # truncation: fingerprints lost at the end of the last part touched ...
    tail_share: float = 0.15  # ... and this share of the part ...
    tail_words: int = 3  # ... and, when its tail signature has this many words,
    tail_kept: float = 0.5  # at most this share of them in the target
    head_density: float = 0.7
    slack_s: float = 0.25  # a source may end this long after the target started: the proxy stamps
    # ended_at after the last byte went out, and a client may send its next request first (and clocks skew)
    # placing a call in another call's run (or merging runs) needs specific, substantial evidence:
    # min_hits fingerprints no other run's output holds, covering this share of the output ...
    place_coverage: float = 0.3
    place_whole: float = 0.9  # ... (an output repeated whole places by itself) ...
    place_part: float = 0.5  # ... or this share of one part of at least place_part_fps fingerprints ...
    place_part_fps: int = 4  # ... when the matched passage is this share of the input holding it
    place_input_share: float = 0.1
    place_hits: int = 12  # ... or this many specific fingerprints ...
    place_run: int = 5  # ... or a verbatim passage: this many consecutive specific fingerprints of the output ...
    place_run_share: float = 0.05  # ... that are this share of the input holding them (also for a retold part:)
    retold_cover: float = 0.25  # a paraphrase: at least this share of a part's fingerprints present ...
    retold_words: int = 6  # ... and of its tail signature (at least this many words) ...
    retold_kept: float = 0.8  # ... this share of the words in the target


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of new input: a message (or the instructions) and its shingles."""

    index: int  # atom index, -1 for instructions
    via: str  # user | tool_result | assistant | instructions | system
    hashes: set[int]
    seen: tuple[int, ...] = ()  # user messages: what a run remembers (see seen_keys)
    seen_set: frozenset[int] = frozenset()  # `seen` as a set, for big cached segments (runs share it)


def seen_keys(exact: int, hashes: set[int]) -> tuple[int, ...]:
    """What a run remembers of a user message: the hash of all its words and ~1/4 of its
    shingles (content-chosen, so a re-wrapped copy of the message still shows as seen)."""
    return (exact, *(h for h in hashes if not h & 3)) if exact else ()


@dataclass(slots=True)
class Lineage:
    record: CallRecord
    hits: int
    coverage: float
    truncated: bool
    reason: str | None
    via: str
    segments: set[int]
    specific: int = 0  # hits that no other run's output holds (boilerplate shared across runs is not)
    part_cover: float = 0.0  # the largest share of one (substantial) part of the output present
    input_share: float = 1.0  # hits / shingles of the input messages holding them
    short_part: bool = False  # all of one part of fewer than place_part_fps fingerprints is present
    passage: int = 0  # the longest run of consecutive output fingerprints present, none shared across runs
    # (passage and retold are worked out only when nothing else places: see score)
    handed_whole: bool = False  # all of a substantial argument string of the output, explained by it alone
    echoed: bool = False  # every hit is text the source restated from a person's input (CallRecord.echo)
    retold: bool = False  # min_hits specific, and a part of the output restated in other words (_retold)
    fallback: bool = False  # too few (specific) hits for an edge, but a part retold: counts alone only

    def places(self, cfg: LineageConfig) -> bool:
        """Strong enough to put the target in the source's run: boilerplate a few runs share
        (3-4 stock phrases at low coverage) never is."""
        if self.coverage >= cfg.place_whole and not self.echoed:
            return True  # the whole output (one other runs repeat too: the newest, see attribute)
        if self.specific == self.hits >= cfg.part_hits and self.short_part:
            return True  # all of a short part no other run holds (a query handed to a worker)
        if self.handed_whole and self.specific:
            return True  # the whole task it handed to a call, worded as only its run words it
        substantial = self.input_share >= cfg.place_run_share
        if self.fallback and self.specific >= cfg.part_hits and substantial:
            return True  # a part retold, with fewer fingerprints only its run holds than an edge needs
        if self.specific < cfg.min_hits:
            return False
        if self.coverage >= cfg.place_coverage and 2 * self.specific >= self.hits:
            return True  # most of the output, and mostly what only its run holds
        part = self.part_cover >= cfg.place_part and self.input_share >= cfg.place_input_share
        passage = self.passage >= cfg.place_run and substantial
        return part or passage or (self.retold and substantial) or self.specific >= cfg.place_hits

    def evidence(self) -> dict[str, object]:
        ev: dict[str, object] = {
            "coverage": round(self.coverage, 3),
            "matched": self.hits,
            "chars": int(self.coverage * self.record.chars),
            "truncated": self.truncated,
            "via": self.via,
        }
        if self.reason:
            ev["reason"] = self.reason
        return ev


def attribute(hits: Mapping[int, tuple[str, ...]], records: Mapping[str, CallRecord]) -> dict[str, set[int]]:
    """Shared hash → the live candidate that explains most of the input overall, the newest
    among equals (a relay beats the original it copied); returns candidate → its hashes.
    Counting overall hits first keeps two runs of one templated system apart: the template
    is shared, but only the run's own source also holds the run-specific words."""
    total: dict[str, int] = {}
    for ids in hits.values():
        for cid in ids:
            if cid in records:
                total[cid] = total.get(cid, 0) + 1
    out: dict[str, set[int]] = {}
    for h, ids in hits.items():
        best: CallRecord | None = None
        for cid in ids:
            rec = records.get(cid)
            if rec is not None and (best is None or (total[cid], rec.ended_at) > (total[best.call_id], best.ended_at)):
                best = rec
        if best is not None:
            out.setdefault(best.call_id, set()).add(h)
    return out


def score(
    record: CallRecord,
    owned: set[int],
    present: Collection[int],
    segments: list[Segment],
    cfg: LineageConfig,
    target_words: Callable[[], set[int]],
    shared: set[int] | None = None,
    segment_words: Callable[[set[int]], set[int]] | None = None,
) -> Lineage | None:
    """A Lineage when the target holds enough of `record`'s output, else None.
    `target_words` (word ids of the new input) is only called to confirm a cut; `shared`
    (hashes several runs' outputs hold) and the text the source restated from its own input
    (CallRecord.echo) are not `Lineage.specific`."""
    if not record.fps:
        return None
    if record.echo:
        shared = set(record.echo) if shared is None else shared | record.echo
    retold_only = not _enough(record, owned, cfg)
    if retold_only and len(owned) < cfg.part_hits:
        return None
    flags = list(map(present.__contains__, record.fps))
    via, segs = _via(owned, segments)
    held = target_words if segment_words is None else Lazy(lambda: segment_words(segs))
    if retold_only and not _retold_fallback(record, flags, owned, shared, cfg, held):
        return None  # too few fingerprints, unless a part retold nearly word for word
    coverage = sum(flags) / len(flags)
    reason = "source_length" if record.finish_reason == "length" else None
    if reason is None and _cut(record, flags, cfg, target_words):
        reason = "cut"
    specific = len(owned) if shared is None else len(owned - shared)
    lin = Lineage(
        record, len(owned), coverage, reason is not None, reason, via, segs,
        specific, _part_cover(record, flags, cfg),
        len(owned) / max(1, sum(len(seg.hashes) for seg in segments if seg.index in segs)),
        _short_part_whole(record, flags, cfg), 0,
        _handed_whole(record, owned, cfg), bool(record.echo) and owned <= record.echo,
    )  # fmt: skip
    if retold_only:
        lin.retold = lin.fallback = True
    elif specific >= cfg.min_hits and not lin.places(cfg):  # the costlier signs, only when they decide
        lin.passage = _passage(record, owned, shared)
        lin.retold = not lin.places(cfg) and _retold(record, flags, cfg, target_words)
    elif specific >= cfg.part_hits and not lin.places(cfg):  # a part retold around stock phrases
        lin.retold = lin.fallback = _retold_fallback(record, flags, owned, shared, cfg, held)
    return lin


def _retold(record: CallRecord, flags: list[bool], cfg: LineageConfig, target_words: Callable[[], set[int]]) -> bool:
    """The best-covered part is partly present, also in its first half, and the words peculiar
    to its end nearly all are: a paraphrase (restating loses five-word shingles, not words), where
    a stock phrase two runs share is present whole or not at all (a part it ends matches only at
    its end) and a coincidence keeps few of the words."""
    return _retold_at(record, flags, cfg, target_words) >= 0


def _retold_fallback(
    record: CallRecord, flags: list[bool], owned: set[int], shared: set[int] | None, cfg: LineageConfig,
    held: Callable[[], set[int]],
) -> bool:  # fmt: skip
    """The weaker retelling a fallback lineage rests on: the retold part itself holds part_hits
    fingerprints no other run holds, and its end's words are in the messages holding the hits
    (not anywhere in a long input, whose system prompt alone may hold most words of a run)."""
    at = _retold_at(record, flags, cfg, held)
    if at < 0:
        return False
    start = record.part_ends[at - 1] if at else 0
    mine = [fp for fp in record.fps[start : record.part_ends[at]] if fp in owned and (shared is None or fp not in shared)]
    return len(mine) >= cfg.part_hits


def _retold_at(record: CallRecord, flags: list[bool], cfg: LineageConfig, target_words: Callable[[], set[int]]) -> int:
    """The index of the part retold (see _retold), else -1."""
    best, start, at = 0.0, 0, -1
    for i, end in enumerate(record.part_ends):
        if end - start >= cfg.place_part_fps and (cover := sum(flags[start:end]) / (end - start)) > best:
            best, at = cover, i
        start = end
    if best < cfg.retold_cover or at >= len(record.tails):
        return -1
    start = record.part_ends[at - 1] if at else 0
    if not any(flags[start : (start + record.part_ends[at] + 1) // 2]):
        return -1  # present only in its second half: a stock phrase ending it, quoted whole
    words = unpack_tail(record.tails[at])
    if len(words) < cfg.retold_words:
        return -1
    have = target_words()
    return at if sum(w in have for w in words) >= cfg.retold_kept * len(words) else -1


class Lazy:
    """Calls `make` once, on first use (the words of a target, only when a rule needs them)."""

    __slots__ = ("_make", "_value")

    def __init__(self, make: Callable[[], set[int]]) -> None:
        self._make = make
        self._value: set[int] | None = None

    def __call__(self) -> set[int]:
        if self._value is None:
            self._value = self._make()
        return self._value


def _handed_whole(record: CallRecord, owned: set[int], cfg: LineageConfig) -> bool:
    """Every fingerprint of one argument string the output handed to a call (of at least
    place_part_fps) is in the target and attributed to this output, none to a look-alike."""
    if not record.handed:
        return False
    start = 0
    for i, end in enumerate(record.part_ends):
        whole = record.handed >> i & 1 and end - start >= cfg.place_part_fps
        if whole and all(fp in owned for fp in record.fps[start:end]):
            return True
        start = end
    return False


def _passage(record: CallRecord, owned: set[int], shared: set[int] | None) -> int:
    """The longest run of consecutive output fingerprints the target holds, none of them
    shared across runs: a quoted passage, where stock phrases are scattered and short."""
    best = run = 0
    for fp in record.fps:
        if fp in owned and (shared is None or fp not in shared):
            run += 1
            best = max(best, run)
        else:
            run = 0
    return best


def _short_part_whole(record: CallRecord, flags: list[bool], cfg: LineageConfig) -> bool:
    start = 0
    for end in record.part_ends:
        if end - start < cfg.place_part_fps and all(flags[start:end]):
            return True
        start = end
    return False


def _part_cover(record: CallRecord, flags: list[bool], cfg: LineageConfig) -> float:
    best, start = 0.0, 0
    for end in record.part_ends:
        if end - start >= cfg.place_part_fps:
            best = max(best, sum(flags[start:end]) / (end - start))
        start = end
    return best


def shared_across_runs(hits: Mapping[int, tuple[str, ...]], records: Mapping[str, CallRecord]) -> set[int]:
    """Hashes that outputs of more than one run hold: stock phrases, templates, common code."""
    out = set()
    for h, ids in hits.items():
        if len(ids) > 1 and len({records[c].run_id for c in ids if c in records}) > 1:
            out.add(h)
    return out


def _enough(record: CallRecord, owned: set[int], cfg: LineageConfig) -> bool:
    """min_hits fingerprints; or all of a short output; or part_hits that are at least half
    of one part (a paraphrased list item handed to one worker)."""
    n, total = len(owned), len(record.fps)
    if n >= cfg.min_hits:
        return True
    if total < cfg.min_hits:
        return n == total and n >= cfg.short_hits
    if n < cfg.part_hits:
        return False
    start = 0
    for end in record.part_ends:
        inside = sum(map(owned.__contains__, record.fps[start:end]))
        if inside >= cfg.part_hits and inside * 2 >= end - start:
            return True
        start = end
    return False


def _via(owned: set[int], segments: list[Segment]) -> tuple[str, set[int]]:
    best, best_n, segs = "user", 0, set()
    for seg in segments:
        n = len(seg.hashes & owned)
        if n:
            segs.add(seg.index)
            if n > best_n:
                best, best_n = seg.via, n
    return best, segs


def _cut(
    record: CallRecord, flags: list[bool], cfg: LineageConfig, target_words: Callable[[], set[int]]
) -> bool:
    """The last part the target touches is present from its start, then missing to its end,
    and the words that end it are missing too (a paraphrase keeps most of them)."""
    touched = _last_touched(flags, record.part_ends)
    if touched is None:
        return False
    i, start, end = touched
    part = flags[start:end]
    final = len(part) - 1 - part[::-1].index(True)
    tail, head = len(part) - 1 - final, part[: final + 1]
    if tail < cfg.tail_min or tail < cfg.tail_share * len(part) or sum(head) < cfg.head_density * len(head):
        return False
    words = unpack_tail(record.tails[i]) if i < len(record.tails) else []
    if len(words) < cfg.tail_words:
        return True
    have = target_words()
    return sum(w in have for w in words) <= cfg.tail_kept * len(words)


def _last_touched(flags: list[bool], part_ends: tuple[int, ...]) -> tuple[int, int, int] | None:
    start, last = 0, None
    for i, end in enumerate(part_ends):
        if any(flags[start:end]):
            last = (i, start, end)
        start = end
    return last


def drop_relayed(found: list[Lineage], fed: Mapping[str, frozenset[str]]) -> list[Lineage]:
    """Drop sources whose output reached the target through another accepted source: A fed B,
    and A's output sits in a message of its own beside B's (a transcript every turn resends).
    Kept: A's output as the caller's own assistant turn (its memory, not a relay), and A's
    output composed into one message with B's (context the caller assembled: fan-in)."""
    kept = []
    for a in found:
        relayed = a.via != "assistant" and any(
            b is not a
            and a.record.call_id in fed.get(b.record.thread_id, frozenset())
            and not (a.segments & b.segments)
            for b in found
        )
        if not relayed:
            kept.append(a)
    return kept
