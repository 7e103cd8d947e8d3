"""Bounded metric label values: client-chosen names (agent, model) cannot grow /metrics without end."""

from __future__ import annotations

OTHER = "other"


class LabelCap:
    """At most `limit` distinct values per label key; values first seen past the cap are
    reported as `other`, and each such report is counted in `overflow[key]`.

    Memory is bounded by `limit` values per key.  `value` runs on the event-loop thread (request
    path and pipeline worker): a set lookup, no I/O, never raises.  `overflow` is read at scrape time.
    """

    __slots__ = ("limit", "_seen", "overflow")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
        self.overflow: dict[str, int] = {}

    def value(self, key: str, value: str, *, count: bool = True) -> str:
        """`value` when already exported or there is room for it, else `other` (counted when `count`)."""
        seen = self._seen.setdefault(key, set())
        if value in seen:
            return value
        if len(seen) < self.limit:
            seen.add(value)
            return value
        if count:
            self.overflow[key] = self.overflow.get(key, 0) + 1
        return OTHER
