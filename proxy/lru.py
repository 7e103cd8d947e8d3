"""Bounded caches: the one module where the process keeps anything it must forget again.

    LRU          count-bounded, least recently used first, optionally also past an age (`stale`):
                 the lineage index (proxy/graph/index.py), the run and agent aggregates
                 (proxy/aggregates.py), the trace buffer (proxy/tracing.py)
    CharLRU      an LRU bounded by the characters its values hold (texts across calls)
    Generations  two generations of plain dicts approximating LRU at one lookup per hit
    Memo         a pure lookup's answers, emptied when full: model catalog and prices, the
                 guard chain's rule matches, agent fingerprints, decoded taint marks and handoffs
    drop_oldest  FIFO eviction in batches for plain dicts at a cap; CallSlots, a guard's
                 per-call state built on it

Which one: LRU when an entry's last use decides (and evicted entries need bookkeeping);
Generations when the hit path must be a bare dict lookup; drop_oldest/CallSlots when entries
live for one call and age is all that matters.

`CharLRU`, a least-recently-used map bounded by the characters its values hold, is used by the caches that keep message texts across calls so a resent conversation is not
worked again: the token counter's histories (proxy/tokens.py), the guards' fingerprints
(proxy/guards/facts.py) and the graph's hash chains (proxy/graph/threads.py).  Pure memory,
no I/O, never raises, not thread-safe (one event loop).

`CallSlots`, a guard's per-call state keyed by call id, FIFO-bounded with `drop_oldest`, lives
here rather than in guards/base.py so that guards/handoffs.py (which GuardDeps names) does not
import the module that names it.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from proxy.call import Call

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class Memo(dict[K, V]):
    """Answers of a pure lookup by key, emptied at once when `cap` are held: the hot ones come
    straight back, and a hit is a bare dict read (`get`, `in`).  None is a value like any other."""

    __slots__ = ("cap",)

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def keep(self, key: K, value: V) -> V:
        if len(self) >= self.cap:
            self.clear()
        self[key] = value
        return value


class LRU(OrderedDict[K, V]):
    """An insertion-ordered map where use moves an entry to the young end.  Plain dict reads
    (`get`, `in`, `[]`) do not refresh: `touch` and `put` do, so the owner decides what counts
    as a use.  `evict` is called by the owner after it adds (so a batch can exceed `cap` briefly)."""

    def touch(self, key: K, make: Callable[[], V]) -> V:
        """The entry for `key`, refreshed; made with `make()` when absent."""
        value = self.get(key)
        if value is None:
            value = self[key] = make()
        else:
            self.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)

    def evict(self, cap: int, stale: Callable[[V], bool] | None = None) -> list[tuple[K, V]]:
        """Drop the least recently used entries while more than `cap` are held or the oldest is
        `stale`; the dropped entries, oldest first (for the owner's own bookkeeping)."""
        dropped = []
        while self and (len(self) > cap or (stale is not None and stale(next(iter(self.values()))))):
            dropped.append(self.popitem(last=False))
        return dropped


class CharLRU(Generic[K, V]):
    """`put(key, value, chars)`: a value larger than the whole bound is not kept; past the
    bound, least recently used entries go first.  `get` refreshes an entry."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._chars = 0

    @property
    def chars(self) -> int:
        """Characters held."""
        return self._chars

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: K, value: V, chars: int) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._chars -= old[1]
        if chars > self.max_chars:
            return
        self._items[key] = (value, chars)
        self._chars += chars
        while self._chars > self.max_chars:
            self._chars -= self._items.popitem(last=False)[1][1]


def drop_oldest(items: dict[K, V], share: int = 8) -> None:
    """Delete the oldest 1/`share` of an insertion-ordered dict's keys (at least one) in one pass.

    For FIFO caches at their cap.  Evicting one key per insertion with
    `items.pop(next(iter(items)))` costs O(cap) each time: CPython leaves a deleted slot at the
    front of the entry table until the next resize, and `iter` walks over all of them (~1 µs
    per insertion at 4,096 entries, the guards' per-call caches).  A batch makes it O(1)
    amortised."""
    for key in list(itertools.islice(items, max(1, len(items) // share))):
        del items[key]


class Generations(Generic[K, V]):
    """A bounded map of values that are costly to recompute and cheap to look up: two
    generations of plain dicts approximating LRU.  An entry costs its weight plus one; when
    the young generation has taken `cap`, it becomes the old one and the previous old one is
    dropped, so whatever was used in the last generation survives.  A hit in the young one is
    one lookup, with no reordering; a hit in the old one is promoted.  Used by the token
    counter's per-text counts and the guards' normalised texts, sketches and decodings."""

    __slots__ = ("_cap", "_old", "_weight", "_young")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._young: dict[K, V] = {}
        self._old: dict[K, V] = {}
        self._weight = 0

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def young_hits(self, keys: list[K]) -> list[V | None]:
        """The young generation's values for `keys` (one C-level pass; misses are None)."""
        return list(map(self._young.get, keys))

    def get(self, key: K) -> V | None:
        value = self._young.get(key)
        if value is None:
            value = self._old.pop(key, None)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: K, value: V, weight: int = 1) -> V:
        self._young[key] = value
        self._weight += weight + 1
        if self._weight >= self._cap:
            self._old, self._young, self._weight = self._young, {}, 0
        return value


class CallSlots(Generic[T]):
    """Per-call state of one guard, keyed by call id, bounded so a call whose `on_response`
    never comes cannot leak memory (at `cap`, the oldest eighth of the entries is dropped)."""

    __slots__ = ("_cap", "_items")

    def __init__(self, cap: int = 100_000) -> None:
        self._cap = cap
        self._items: dict[str, T] = {}

    def put(self, call: Call, value: T) -> None:
        items = self._items
        if len(items) >= self._cap:
            drop_oldest(items)
        items[call.id] = value

    def get(self, call: Call) -> T | None:
        return self._items.get(call.id)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._items

    def pop(self, call: Call) -> T | None:
        return self._items.pop(call.id, None)

    def __len__(self) -> int:
        return len(self._items)
