"""Incremental Server-Sent Events splitting over raw bytes.

The relay forwards raw bytes untouched; this splitter works on a copy so parsers can see
whole events (`event:` name + joined `data:` lines) however the bytes were chunked.

Lines end in CRLF, LF or CR (the SSE spec, html.spec.whatwg.org §9.2.5); a blank line ends
an event.  The split is a function of the bytes alone: any chunking of a stream gives the
same events, and their `raw` bytes concatenate back to the stream.  A CR that ends a chunk
and would end an event is held until the next byte (or `close()`) tells whether an LF
belongs to it.

Memory is bounded: an event longer than `max_event_bytes` is not assembled.  Its bytes come
out as `Oversized` pieces (name None, empty data: parsers see nothing, the relay can still
pass `raw` on) as they arrive, and `oversized` counts such events.  `feed` never raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
_EOL = re.compile(rb"\r\n|\r|\n")
_CR = 13
_LF = 10


@dataclass(slots=True)
class Event:
    name: str | None
    data: bytes
    raw: bytes  # the exact bytes of this event, separator included


class Oversized(Event):
    """A piece of an event too long to assemble: `raw` only (name None, data empty)."""

    __slots__ = ()

    def __init__(self, raw: bytes) -> None:
        Event.__init__(self, None, b"", raw)


class SSESplitter:
    """Feed raw chunks, get complete events.  Runs on the hot path: a stream of LF-separated
    events arriving whole costs one `find` per event and no copies."""

    __slots__ = ("_parts", "_size", "_after", "_cr", "_held", "_skipping", "_limit", "oversized")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._parts: list[bytes] = []  # bytes of the unfinished event
        self._size = 0
        self._after = False  # the last byte seen ended a line: a line end next is a blank line
        self._cr = False  # ... and that line end was a CR (an LF next belongs to it)
        self._held = False  # the pending event ended with that CR: emitted once the next byte is known
        self._skipping = False  # inside an oversized event
        self._limit = max_event_bytes
        self.oversized = 0

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        if not chunk:
            return events
        pos = 0
        if self._held:
            self._held = False
            pos = 1 if chunk[0] == _LF else 0
            self._emit(events, chunk[:pos])
        if self._cr or b"\r" in chunk:
            pos = self._scan_lines(events, chunk, pos)
        else:
            pos = self._scan_lf(events, chunk, pos)
        if pos < len(chunk):
            self._keep(events, chunk[pos:] if pos else chunk)
        return events

    def close(self) -> list[Event]:
        """The stream ended: the event held for a trailing CR, if any (an unfinished one stays in `tail`)."""
        if not self._held:
            return []
        self._held = False
        events: list[Event] = []
        self._emit(events, b"")
        return events

    def tail(self) -> bytes:
        """Bytes of an unfinished event (left over when a stream ends early)."""
        return b"".join(self._parts)

    # -------------------------------------------------- scanning

    def _scan_lf(self, events: list[Event], chunk: bytes, pos: int) -> int:
        """LF-only chunk (the common case): blank lines are `\\n\\n`; whole events are parsed
        straight from the chunk."""
        if self._after and pos < len(chunk) and chunk[pos] == _LF:
            pos += 1
            self._emit(events, chunk[:pos])
        elif self._parts or self._skipping:  # the end of an unfinished event first
            end = chunk.find(b"\n\n", pos)
            if end >= 0:
                self._emit(events, chunk[pos : end + 2])
                pos = end + 2
        limit, append = self._limit, events.append
        while (end := chunk.find(b"\n\n", pos)) >= 0:
            raw = chunk[pos : end + 2]
            if end + 2 - pos <= limit:
                append(_parse_lf(raw))
            else:
                self.oversized += 1
                append(Oversized(raw))
            pos = end + 2
        self._after = pos < len(chunk) and chunk[-1] == _LF
        self._cr = False
        return pos

    def _scan_lines(self, events: list[Event], chunk: bytes, pos: int) -> int:
        """Any line ends: walks each CRLF, CR or LF; a line end right after another ends the event."""
        prev = pos if self._after else -1  # where the last line end ended
        start = pos
        if self._cr and pos < len(chunk) and chunk[pos] == _LF:  # the second half of a CRLF split across chunks
            prev = start = pos + 1
        for m in _EOL.finditer(chunk, start):
            s, e = m.span()
            if s != prev:
                prev = e
                continue
            if e == len(chunk) and e - s == 1 and chunk[s] == _CR:  # maybe half a CRLF: decide on the next byte
                self._held = True
                self._keep(events, chunk[pos:])
                self._after = self._cr = False
                return len(chunk)
            self._emit(events, chunk[pos:e])
            pos, prev = e, -1
        self._after = prev == len(chunk)
        self._cr = self._after and chunk[-1] == _CR
        return pos

    # -------------------------------------------------- assembling

    def _keep(self, events: list[Event], piece: bytes) -> None:
        if self._skipping:
            events.append(Oversized(piece))
            return
        self._parts.append(piece)
        self._size += len(piece)
        if self._size > self._limit:
            self._skipping = True
            self.oversized += 1
            events.append(Oversized(self._take(b"")))

    def _emit(self, events: list[Event], last: bytes) -> None:
        if self._skipping:
            self._skipping = False
            events.append(Oversized(last))
            return
        raw = self._take(last)
        if len(raw) > self._limit:
            self.oversized += 1
            events.append(Oversized(raw))
        else:
            events.append(_parse(raw))

    def _take(self, last: bytes) -> bytes:
        parts = self._parts
        if not parts:
            return last
        parts.append(last)
        raw = b"".join(parts)
        parts.clear()
        self._size = 0
        return raw


def _parse(raw: bytes) -> Event:
    return _parse_general(raw) if b"\r" in raw else _parse_lf(raw)


def _parse_lf(raw: bytes) -> Event:
    """An event whose lines end in LF.  Fast paths for the two shapes providers send:
    `data: X` and `event: N` + `data: X`."""
    end = len(raw) - 2
    if raw.startswith(b"data: ") and raw.find(b"\n", 6) == end:
        return Event(None, raw[6:end], raw)
    if raw.startswith(b"event: "):
        nl = raw.find(b"\n")
        if raw.startswith(b"data: ", nl + 1) and raw.find(b"\n", nl + 7) == end:
            return Event(raw[7:nl].decode("utf-8", "replace"), raw[nl + 7 : end], raw)
    return _parse_general(raw)


def _parse_general(raw: bytes) -> Event:
    """Every field line: `data` lines joined by LF, the last `event` wins, the rest ignored."""
    name: str | None = None
    data: list[bytes] = []
    for line in _EOL.split(raw):
        field, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    return Event(name, b"\n".join(data), raw)
