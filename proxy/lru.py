"""A least-recently-used map bounded by the characters its values hold.

Used by the caches that keep message texts across calls so a resent conversation is not
worked again: the token counter's histories (proxy/tokens.py), the guards' fingerprints
(proxy/guards/facts.py) and the graph's hash chains (proxy/graph/threads.py).  Pure memory,
no I/O, never raises, not thread-safe (one event loop).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


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
