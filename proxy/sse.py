"""Incremental Server-Sent Events splitting over raw bytes.

The relay forwards raw bytes untouched; this splitter works on a copy so parsers can see
whole events (`event:` name + joined `data:` lines) however the bytes were chunked.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Event:
    name: str | None
    data: bytes
    raw: bytes  # the exact bytes of this event, separator included


class SSESplitter:
    """Feed raw chunks, get complete events.  Runs on the hot path: no copies beyond the tail."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[Event]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        events: list[Event] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            raw = buf[start : end + 2]
            events.append(_parse(raw))
            start = end + 2
        self._buf = buf[start:]
        return events

    def tail(self) -> bytes:
        """Bytes of an unfinished event (left over when a stream ends early)."""
        return self._buf


def _parse(raw: bytes) -> Event:
    # Fast paths for the two shapes providers send: `data: X` and `event: N` + `data: X`.
    end = len(raw) - 2
    if raw.startswith(b"data: ") and raw.find(b"\n", 6) == end:
        return Event(None, raw[6:end], raw)
    if raw.startswith(b"event: "):
        nl = raw.find(b"\n")
        if raw.startswith(b"data: ", nl + 1) and raw.find(b"\n", nl + 7) == end:
            return Event(raw[7:nl].decode("utf-8", "replace").strip(), raw[nl + 7 : end], raw)
    return _parse_general(raw)


def _parse_general(raw: bytes) -> Event:
    name: str | None = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return Event(name, b"\n".join(data), raw)
