"""The write-ahead log: an answered call is on local disk within milliseconds, long before the
database has it; what a killed process left behind is replayed at the next start.

    request path   answered(record) ┐  O(1): a deque append, no I/O, no serialising
    pipeline       writer.submit ───┤  covers(record): the record's link rows, as a WAL entry
                                    ▼
          WAL thread: serialise ─▶ write ─▶ fsync, then sleep `interval` (group commit)
                                    │  wal-<first seq>.jsonl segments, rotated by size and age
    writer: a batch committed, or fsynced into the spool ─▶ release(seqs) ─▶ low watermark
          ─▶ sealed segments wholly below it are deleted (checkpoint): the log stays small
    next start: leftover segments ─▶ Spool.adopt ─▶ replayed by the writer like any spool segment

Entries are the spool's line format (one `Record` per line), so a leftover segment *is* a spool
segment.  An answered call is logged as its row and guard events (`call_record`, built once on
the loop, shared with the pipeline);
what the pipeline derives later (graph link columns and cost as `call_updates`, edges, agent and
run totals, run merges, taint) follows it as a second entry.  Replay is idempotent: calls and
guard events insert-or-ignore by id, edges/agents/runs upsert monotonically, updates set values.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from proxy.store.rows import CALL_UPDATE_COLUMNS, Record
from proxy.store.spool import Spool, fsync_dir, lock_directory

log = logging.getLogger(__name__)

_PREFIX = "wal-"
_LINK_COLUMNS = tuple(sorted(CALL_UPDATE_COLUMNS))


class Journal(Protocol):
    """What the pipeline and the writer need from a WAL.  All methods run on the event loop's
    thread, never block, never raise."""

    def answered(self, record: Record) -> None:
        """Request path: the call in `record` (its row and guard events) was answered; log it."""

    def covers(self, record: Record) -> list[int]:
        """Writer.submit: log what `record` adds; the entries it makes redundant once written."""

    def release(self, seqs: Iterable[int]) -> None:
        """Writer: these entries are in the database, or durably in the spool."""


class NullJournal:
    """No WAL (INTERLOCK_WAL=false): nothing logged, nothing to release."""

    def answered(self, record: Record) -> None:
        pass

    def covers(self, record: Record) -> list[int]:
        return []

    def release(self, seqs: Iterable[int]) -> None:
        pass


class _Ledger:
    """Sequence numbers and the low watermark (the smallest entry not yet released).  Loop thread.

    `answered(record)` and `covers(record)` hand entries to `_log`; subclasses decide where they go."""

    def __init__(self, first: int = 1) -> None:
        self.next = first
        self._answered: dict[str, int] = {}  # call id ─▶ seq of its answered entry, until covered
        self._open: set[int] = set()
        self._heap: list[int] = []
        self._mark = first  # the watermark as one int: the WAL thread reads it without a lock

    def answered(self, record: Record) -> None:
        """Request path: O(1).  The pipeline links and writes this same record later; the WAL
        thread serialises it whenever it gets to it (orjson holds the GIL while it encodes a
        list, so it sees each list before or after a change, never halfway)."""
        seq = self._take()
        for row in record.calls:
            self._answered[row["id"]] = seq
        self._log(seq, record)

    def covers(self, record: Record) -> list[int]:
        """Log what `record` adds to the answered entries of its calls; return the seqs that
        writing `record` makes redundant (those entries and the new one)."""
        seqs = [self._answered.pop(row["id"]) for row in record.calls if row.get("id") in self._answered]
        entry = derived(record, logged=len(seqs) == len(record.calls))
        if entry.size():
            seq = self._take()
            self._log(seq, entry)
            seqs.append(seq)
        return seqs

    def release(self, seqs: Iterable[int]) -> None:
        self._open.difference_update(seqs)
        while self._heap and self._heap[0] not in self._open:
            heapq.heappop(self._heap)
        self._mark = self._heap[0] if self._heap else self.next

    @property
    def watermark(self) -> int:
        """Every entry below it is released."""
        return self._mark

    @property
    def outstanding(self) -> int:
        """Entries logged and not released yet."""
        return len(self._open)

    def _take(self) -> int:
        seq, self.next = self.next, self.next + 1
        self._open.add(seq)
        heapq.heappush(self._heap, seq)
        self._mark = self._heap[0]
        return seq

    def _log(self, seq: int, record: Record) -> None:
        raise NotImplementedError


class MemoryJournal(_Ledger):
    """In-memory twin for tests: entries kept in a list (as JSON, like the file), nothing written."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[int, dict[str, Any]]] = []

    def _log(self, seq: int, record: Record) -> None:
        self.entries.append((seq, orjson.loads(_line(record))))


def derived(record: Record, *, logged: bool) -> Record:
    """`record` as a WAL entry.  When its calls' rows are logged already (`logged`: their answered
    entries), only what linking changed in them is kept, as `call_updates`; their guard events
    are logged already too."""
    if not record.calls or not logged:
        return record
    updates = [{"id": row["id"], **{k: row[k] for k in _LINK_COLUMNS if k in row}} for row in record.calls]
    return Record(edges=record.edges, agents=record.agents, runs=record.runs,
                  call_updates=updates + record.call_updates, run_merges=record.run_merges)


class WriteAheadLog(_Ledger):
    """The WAL in `directory`: entries go to disk from one background thread, group-committed.

    Build it, `recover()` leftovers into the spool, `start()`, then `answered`/`covers`/`release`
    from the event loop's thread; `close()` at shutdown (blocking, after the writer closed).
    Counters: logged, fsyncs, bytes_written, errors, segments_removed; `lag_s`: age of the oldest
    entry the thread has not fsynced yet, measured at each group commit."""

    def __init__(self, directory: Path, *, interval_s: float = 0.01, segment_bytes: int = 8 * 1024 * 1024,
                 segment_age_s: float = 1.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock: BinaryIO | None = lock_directory(self.directory, "wal_dir")
        self._leftovers = sorted(self.directory.glob(f"{_PREFIX}*.jsonl"), key=_first_seq)
        super().__init__(max((_first_seq(p) for p in self._leftovers), default=0) + 1)
        self._interval, self._segment_bytes, self._segment_age = interval_s, segment_bytes, segment_age_s
        self._queue: collections.deque[tuple[int, float, Record]] = collections.deque()
        self._wake = threading.Event()
        self._idle = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._sealed: list[tuple[int, Path]] = []  # (last seq, path), oldest first
        self._tail: tuple[int, Path, float] | None = None  # (fd, path, opened at, monotonic)
        self._tail_last = 0
        self._tail_bytes = 0
        self.logged = self.fsyncs = self.bytes_written = self.errors = self.segments_removed = 0
        self.lag_s = 0.0

    def recover(self, spool: Spool) -> int:
        """Hand the segments a previous process left to `spool`, behind what it holds (their
        records are newer), to be replayed by the writer.  Call once, before `start`."""
        for path in self._leftovers:
            spool.adopt(path)
        n, self._leftovers = len(self._leftovers), []
        if n:
            log.warning("wal: replaying %d segment(s) a previous process left in %s", n, self.directory)
        return n

    def start(self) -> None:
        """Start the group-commit thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="interlock-wal", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - blocking, at shutdown
        """Write and fsync what is queued, drop covered segments, release the directory."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._commit()
        self._seal()
        self._checkpoint()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    @property
    def pending(self) -> int:
        """Entries handed to the thread and not written yet."""
        return len(self._queue)

    def _log(self, seq: int, record: Record) -> None:
        self._queue.append((seq, time.monotonic(), record))
        if self._idle:
            self._idle = False
            self._wake.set()

    # the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            started = time.monotonic()
            try:
                self._commit()
                self._rotate()
                self._checkpoint()
            except Exception:  # the thread must outlive a full disk; entries stay queued
                self.errors += 1
                log.exception("wal: group commit failed; retrying")
                time.sleep(0.5)
            if not self._queue:
                self._idle = True
                if not self._queue:  # an append between the check and the flag would wait 50 ms
                    self._wake.wait(0.05)
                self._wake.clear()
            elif (rest := self._interval - (time.monotonic() - started)) > 0:
                time.sleep(rest)  # (not sleep(0): every wake-up takes the GIL from the event loop)

    def _commit(self) -> None:
        """Serialise everything queued, write it in one call, fsync: one group commit."""
        n = len(self._queue)  # the loop only appends: the first n stay put until popped here
        if not n:
            return
        batch = list(itertools.islice(self._queue, n))
        data = b"".join(self._line(record) for _, _, record in batch)
        fd = self._open_tail(batch[0][0])
        _write_all(fd, data)
        os.fsync(fd)
        for _ in range(n):
            self._queue.popleft()
        self._tail_last, self._tail_bytes = batch[-1][0], self._tail_bytes + len(data)
        self.logged += n
        self.fsyncs += 1
        self.bytes_written += len(data)
        self.lag_s = time.monotonic() - batch[0][1]

    def _line(self, record: Record) -> bytes:
        try:
            return _line(record)
        except Exception:  # one odd entry must not hold back the others; the writer still has it
            self.errors += 1
            log.exception("wal: could not serialise an entry; skipped")
            return b""

    def _open_tail(self, first: int) -> int:
        if self._tail is None:
            path = self.directory / f"{_PREFIX}{first:020d}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            fsync_dir(self.directory)
            self._tail = (fd, path, time.monotonic())
            self._tail_bytes = 0
            return fd
        return self._tail[0]

    def _rotate(self) -> None:
        """Seal the tail when it is big or old, so covered entries can be deleted."""
        if self._tail is not None and (self._tail_bytes >= self._segment_bytes
                                       or time.monotonic() - self._tail[2] >= self._segment_age):
            self._seal()

    def _seal(self) -> None:
        if self._tail is not None:
            fd, path, _ = self._tail
            os.close(fd)
            self._sealed.append((self._tail_last, path))
            self._tail = None

    def _checkpoint(self) -> None:
        """Delete sealed segments whose every entry is released (in the database or spool)."""
        watermark = self.watermark  # an int read once: consistent even while the loop moves it
        while self._sealed and self._sealed[0][0] < watermark:
            _, path = self._sealed.pop(0)
            path.unlink(missing_ok=True)
            self.segments_removed += 1

    def stats(self) -> dict[str, Any]:
        """Counters for /healthz."""
        return {"logged": self.logged, "fsyncs": self.fsyncs, "bytes_written": self.bytes_written,
                "pending": self.pending, "outstanding": self.outstanding, "segments": len(self._sealed) + (
                    self._tail is not None), "segments_removed": self.segments_removed, "errors": self.errors,
                "lag_ms": round(self.lag_s * 1000, 1)}


def _line(record: Record) -> bytes:
    """The spool's line format (spool._line), so a WAL segment can be adopted as a spool segment."""
    return orjson.dumps(record.to_json(), default=str) + b"\n"


def _first_seq(path: Path) -> int:
    try:
        return int(path.stem[len(_PREFIX):])
    except ValueError:
        return 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
