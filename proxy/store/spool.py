"""The spool: records the database could not take yet, kept on local disk in submission order.

    spool_dir/
      000001000000000041.jsonl   sealed segments, replayed oldest (smallest number) first
      000001000000000042.jsonl   the tail: appended to by `append`, sealed when replay reaches it
      rejected-<ms>.jsonl        records the database refused as bad data; kept, never replayed

Numbers grow upward for appends and downward for `prepend` (records older than everything
spooled, e.g. the writer's queue at a failure), so sorting by number is submission order.
One record per line (orjson escapes newlines); a torn last line from a crash is skipped.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import time
from pathlib import Path
from typing import BinaryIO

import orjson

from proxy.store.rows import Record

log = logging.getLogger(__name__)


class SpoolBusy(RuntimeError):
    """Another writer (usually another process) owns the spool directory."""


_MIDDLE = 10**15  # first segment number when the spool is empty: room to count down and up
_SEGMENT_BYTES = 64 * 1024 * 1024


def _name(n: int) -> str:
    return f"{n:018d}.jsonl"


class Spool:
    """Append-only JSON-lines segments in one directory, owned by one writer in one event loop.

    `append` is synchronous and buffered (no fsync) so the request path may call it; `sync`
    makes appended lines durable and is awaited by the writer's background task.
    """

    def __init__(self, directory: Path, *, segment_bytes: int = _SEGMENT_BYTES) -> None:
        """Open (creating) `directory` and adopt the segments a previous process left there."""
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = segment_bytes
        self._segments = sorted(int(p.stem) for p in self.directory.glob("*.jsonl") if p.stem.isdigit())
        self._next = (self._segments[-1] + 1) if self._segments else _MIDDLE
        self._low = min(self._segments[0], _MIDDLE) if self._segments else _MIDDLE
        self._tail: BinaryIO | None = None
        self._tail_n = 0
        self._tail_bytes = 0
        self._unsynced: set[Path] = set()
        self._offsets: dict[int, int] = {}
        self._closed = False
        self._lock: BinaryIO | None = lock_directory(self.directory)
        self.corrupt_lines = 0

    @property
    def pending(self) -> bool:
        """True while any record waits on disk (sealed segments or an unsealed tail)."""
        return bool(self._segments) or self._tail_bytes > 0

    def append(self, record: Record) -> None:
        """Add `record` after everything spooled.  Synchronous, buffered: may raise OSError."""
        line = _line(record)
        tail = self._tail or self._open_tail()
        tail.write(line)
        self._tail_bytes += len(line)
        if self._closed:
            tail.flush()  # nobody will sync after close: leave it with the OS at least
        if self._tail_bytes >= self._segment_bytes:
            self._seal_tail()

    def adopt(self, path: Path) -> None:
        """Move the segment file `path` (same line format; e.g. a WAL segment a killed process
        left) behind everything spooled, to be replayed in turn.  Blocking; call at start,
        before the first `append`."""
        if self._tail is not None:
            self._seal_tail()
        n, self._next = self._next, self._next + 1
        target = self.directory / _name(n)
        shutil.move(path, target)  # a rename on the same filesystem
        fsync_dir(self.directory)
        if target.parent != path.parent:
            fsync_dir(path.parent)
        self._segments.append(n)

    async def prepend(self, records: list[Record]) -> None:
        """Write `records` durably as a segment before all others (they are older).  Background."""
        if records:
            n, data = self._head(records)
            await asyncio.to_thread(_write_durably, self.directory / _name(n), data)
            self._segments.insert(0, n)

    def prepend_now(self, records: list[Record]) -> None:
        """Blocking `prepend`, for shutdown paths where the loop is about to stop anyway."""
        if records:
            n, data = self._head(records)
            _write_durably(self.directory / _name(n), data)
            self._segments.insert(0, n)

    async def sync(self) -> None:
        """Flush and fsync what `append` wrote so far.  Background; may raise OSError."""
        paths = set(self._unsynced)
        fd = None
        if self._tail is not None:
            self._tail.flush()
            fd = os.dup(self._tail.fileno())  # the tail may be sealed while the thread runs
        await asyncio.to_thread(_fsync_all, fd, paths, self.directory)
        self._unsynced -= paths

    def close(self) -> None:
        """Flush, fsync and close the tail, release the directory (blocking; at shutdown).
        A later `append` still lands on disk, unbuffered, for the next process to replay."""
        if self._tail is not None:
            self._seal_tail()
        _fsync_all(None, self._unsynced, self.directory)
        self._unsynced.clear()
        self._closed = True
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def oldest(self) -> int | None:
        """The segment to replay next, sealing the tail when only it is left; None when empty."""
        if not self._segments and self._tail_bytes > 0:
            self._seal_tail()
        return self._segments[0] if self._segments else None

    async def read(self, segment: int, max_records: int) -> tuple[list[Record], int, bool]:
        """Up to `max_records` records of `segment` after its replayed offset, the offset after
        them (pass it to `advance` once written) and whether the segment is exhausted.
        Background; reads in a thread.  A vanished segment reads as exhausted."""
        path = self.directory / _name(segment)
        start = self._offsets.get(segment, 0)
        try:
            lines, end = await asyncio.to_thread(_read_lines, path, start, max_records)
        except FileNotFoundError:
            log.warning("spool: segment %s vanished", path)
            return [], start, True
        records = [r for r in map(self._parse, lines) if r is not None]
        return records, end, len(lines) < max_records

    def advance(self, segment: int, offset: int) -> None:
        """Remember that `segment` is replayed up to `offset` (in memory: a restart replays the
        segment again, which idempotent writes make harmless)."""
        self._offsets[segment] = offset

    def remove(self, segment: int) -> None:
        """Delete a fully replayed segment."""
        (self.directory / _name(segment)).unlink(missing_ok=True)
        self._segments.remove(segment)
        self._offsets.pop(segment, None)

    async def reject(self, records: list[Record]) -> Path:
        """Keep records the database refused as bad data in a file that is never replayed."""
        path = self.directory / f"rejected-{time.time_ns() // 1_000_000}.jsonl"
        data = b"".join(_line(r) for r in records)
        await asyncio.to_thread(_write_durably, path, data, append=True)
        return path

    def _open_tail(self) -> BinaryIO:
        self._tail_n, self._next = self._next, self._next + 1
        path = self.directory / _name(self._tail_n)
        self._tail = path.open("ab", buffering=1024 * 1024)
        return self._tail

    def _seal_tail(self) -> None:
        assert self._tail is not None
        self._tail.close()
        self._tail = None
        self._unsynced.add(self.directory / _name(self._tail_n))
        self._segments.append(self._tail_n)
        self._tail_bytes = 0

    def _head(self, records: list[Record]) -> tuple[int, bytes]:
        """A number below every segment ever used here (never reused, even if a write failed)."""
        self._low -= 1
        return self._low, b"".join(_line(r) for r in records)

    def _parse(self, line: bytes) -> Record | None:
        if not line.strip():
            return None
        try:
            return Record.from_json(orjson.loads(line))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            self.corrupt_lines += 1
            log.warning("spool: skipping an unreadable line in %s (%d bytes)", self.directory, len(line))
            return None


def _line(record: Record) -> bytes:
    # default=str: a value orjson cannot encode (Decimal, a custom type) is kept as text, not lost
    return orjson.dumps(record.to_json(), default=str) + b"\n"


def lock_directory(directory: Path, setting: str = "spool_dir") -> BinaryIO:
    """Hold `directory/.lock` so two processes never share a spool or a WAL (they would replay
    and delete each other's segments).  Raises SpoolBusy when another process holds it."""
    handle = (directory / ".lock").open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SpoolBusy(
            f"{directory} is in use by another writer; give each process its own {setting}"
        ) from None
    return handle


def _read_lines(path: Path, offset: int, max_lines: int) -> tuple[list[bytes], int]:
    lines: list[bytes] = []
    with path.open("rb") as f:
        f.seek(offset)
        while len(lines) < max_lines:
            line = f.readline()
            if not line:
                break
            lines.append(line)
        return lines, f.tell()


def _write_durably(path: Path, data: bytes, *, append: bool = False) -> None:
    with path.open("ab" if append else "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(path.parent)


def _fsync_all(fd: int | None, paths: set[Path], directory: Path) -> None:
    if fd is not None:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for path in paths:
        if path.exists():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make a directory's new or renamed entries durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
