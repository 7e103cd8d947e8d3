"""BatchWriter: records leave the request path through a bounded queue and reach the database
in batches, or the spool when the database cannot take them; none are lost, none written twice.

    submit(record) ──▶ queue (bounded, memory) ──batch──▶ sink.write ──▶ database
         │                                   │ failure/timeout: this batch + the queue
         │ queue full, or spool non-empty    ▼ go to the spool's head (they are older)
         └──────────────────────────────▶ spool (disk, in order) ──replay, with backoff──▶ sink

Order is kept: while anything is spooled, new records are appended behind it, and the queue is
only used again once replay has emptied the spool.  A write that times out is left running (the
database stalled): until it ends nothing else is written and new records go to the spool; if it
fails, its batch goes to the spool's head.  Sinks must be idempotent (inserts ignore known ids,
upserts merge monotonically): a write abandoned at shutdown may still commit, and a restart
replays a segment from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from proxy.backoff import Backoff
from proxy.failures import FailureLog
from proxy.store.rows import TABLE_ORDER, Record, Row
from proxy.store.spool import Spool
from proxy.store.wal import Journal, NullJournal

log = logging.getLogger(__name__)


class RecordRejected(Exception):  # noqa: N818 - it names what happened to the records
    """Raised by a sink when some records can never be written (bad data); the rest were."""

    def __init__(self, rejected: list[Record], cause: BaseException) -> None:
        super().__init__(f"{len(rejected)} record(s) rejected: {cause}")
        self.rejected = rejected
        self.cause = cause


class RowSink(Protocol):
    """Where batches go.  `write` runs in the writer's background task, may await I/O and may
    raise (the writer spools and retries); it must be idempotent and all-or-nothing per batch,
    except that it may raise RecordRejected after writing everything but the rejected records."""

    async def write(self, batch: Sequence[Record]) -> None: ...


@dataclass(slots=True)
class _Pending:
    """A write that timed out but is still running; its outcome is settled on a later tick."""

    task: asyncio.Future[None]
    batch: list[Record]
    since: float
    segment: tuple[int, int, bool] | None  # replayed from the spool: (segment, end, exhausted)


class BatchWriter:
    """Bounded queue + background batching + spool.  Build it, `start()` it inside the running
    loop, `submit()` from anywhere on that loop, `aclose()` at shutdown.

    Counters (records, for /metrics): queued, written, spooled, replayed, dropped, rejected,
    sink_errors; gauges: queue_depth, spooling."""

    def __init__(
        self,
        sink: RowSink,
        spool: Spool,
        *,
        queue_size: int = 10_000,
        queue_max_bytes: int = 64 * 1024 * 1024,
        batch_size: int = 256,
        flush_interval: float = 0.25,
        write_timeout: float = 10.0,
        backoff: tuple[float, float] = (0.5, 30.0),
        abandon_after: float = 120.0,
        journal: Journal | None = None,
    ) -> None:
        self._sink, self._spool = sink, spool
        self._journal: Journal = journal or NullJournal()
        self._spilled: list[int] = []  # WAL entries of records appended to the spool, not fsynced yet
        self._queue: deque[Record] = deque()
        self._queue_size, self._batch_size = queue_size, batch_size
        self._queue_max_bytes = queue_max_bytes
        self._queue_bytes = 0  # stored content held by `_queue` (approximate: characters)
        self._flush_interval, self._write_timeout = flush_interval, write_timeout
        self._backoff = Backoff(backoff[0], backoff[1], jitter=0.2)
        self._abandon_after = abandon_after
        self._failures = 0  # sink failures in a row: the next retry waits _backoff.delay(that)
        self._retry_at = 0.0
        self._inflight: list[Record] = []
        self._pending: _Pending | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._diverting = False  # new records go to the spool: a write is unresolved, or closing
        self._unsynced = False  # records appended to the spool since its last fsync
        self.queued = self.written = self.spooled = self.replayed = 0
        self.dropped = self.rejected = self.sink_errors = 0
        self._sink_failures = FailureLog(log, "writer: database write", traceback=False,
                                         hint="records are spooled and written once it is back")
        self._bugs = FailureLog(log, "writer: unexpected error", hint="retrying")

    @property
    def queue_depth(self) -> int:
        """Records waiting in memory (not counting the spool)."""
        pending = len(self._pending.batch) if self._pending and self._pending.segment is None else 0
        return len(self._queue) + len(self._inflight) + pending

    @property
    def spooling(self) -> bool:
        """True while records wait on disk; new records then go behind them."""
        return self._spool.pending

    @property
    def idle(self) -> bool:
        """True when everything submitted so far has been written (or rejected)."""
        return self.queue_depth == 0 and self._pending is None and not self._spool.pending

    def start(self) -> None:
        """Start the background task.  Call once, inside the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="interlock-writer")

    def submit(self, record: Record) -> None:
        """Hand a record over.  Hot path: synchronous, never awaits, never raises; when the queue
        is full (or the spool is in use) the record is appended to the spool file instead.
        The journal (WAL) logs it first, from its own thread."""
        record.wal = self._journal.covers(record)
        weight = _weight(record)
        if (self._diverting or self._spool.pending or len(self._queue) >= self._queue_size
                or (self._queue_bytes + weight > self._queue_max_bytes and self._queue)):
            self._spill(record)
            return
        self._queue.append(record)
        self._queue_bytes += weight
        self.queued += 1
        if len(self._queue) >= self._batch_size:
            self._wake.set()

    async def flush(self, timeout: float) -> bool:  # noqa: ASYNC109 - a deadline, not a cancel scope
        """Wait until `idle` (queue written and spool replayed), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not self.idle and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.005)
        return self.idle

    async def aclose(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 - drain deadline
        """Stop: write what is queued within `timeout`, spool whatever is left, close the spool.
        Runs at shutdown; blocks on disk I/O only at the very end; never raises."""
        self._closing = self._diverting = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        leftover = [*self._abandon_pending(), *self._inflight, *self._queue]
        self._inflight, self._queue = [], deque()
        self._queue_bytes = 0
        try:
            self._spool.prepend_now(leftover)
            self._spool.close()
            self.spooled += len(leftover)
            self._journal.release([*_seqs(leftover), *self._spilled])
            self._spilled = []
        except OSError:
            self.dropped += len(leftover)
            log.exception("writer: could not spool %d record(s) at shutdown", len(leftover))

    # background ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while not (self._closing and not self._queue):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_interval)
            self._wake.clear()
            try:
                await self._step()
            except Exception as exc:  # the writer must outlive any bug below; the data stays queued/spooled
                self._bugs.failed(exc)
                self._requeue(self._inflight)
                self._inflight = []
                self._fail()

    async def _step(self) -> None:
        """One tick: settle a hung write, drain the queue, replay the spool when due, fsync."""
        if await self._settled():
            await self._drain_queue()
            if self._spool.pending and not self._closing and self._pending is None and self._due():
                await self._replay()
        await self._sync_spool()

    async def _drain_queue(self) -> None:
        while self._queue and self._pending is None and self._due():
            batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            self._queue_bytes = max(0, self._queue_bytes - sum(map(_weight, batch))) if self._queue else 0
            self._inflight = batch
            written = await self._write(batch, None)
            if written is None:  # hung: the batch waits in _pending, the rest goes behind it
                self._inflight = []
                await self._to_spool_head([])
            elif not written:
                await self._to_spool_head(batch)
            self._inflight = []

    async def _replay(self) -> None:
        """Write spooled segments oldest first; stop at the first failure (backoff) or when empty."""
        while (segment := self._spool.oldest()) is not None and not self._closing:
            records, end, exhausted = await self._spool.read(segment, self._batch_size)
            if records and await self._write(records, (segment, end, exhausted)) is not True:
                return
            self._advance(segment, end, exhausted, len(records))

    def _advance(self, segment: int, end: int, exhausted: bool, n: int) -> None:
        self._spool.advance(segment, end)
        self.replayed += n
        if exhausted:
            self._spool.remove(segment)

    async def _write(self, batch: list[Record], segment: tuple[int, int, bool] | None) -> bool | None:
        """One sink write: True when written (rejects set aside), False when it failed, None
        when it did not answer within the timeout.  A hung write is left running, not
        cancelled (cancelling a driver blocked in a thread, such as SQLite waiting on a lock,
        can leave its connection holding the lock); `_settled` decides its batch later."""
        task = asyncio.ensure_future(self._sink.write(batch))
        try:
            await asyncio.wait({task}, timeout=self._write_timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return await self._outcome(task, batch)
        task.add_done_callback(_retrieve)
        self._pending = _Pending(task, batch, time.monotonic(), segment)
        self._diverting = True
        self._failed(len(batch), TimeoutError(f"no answer within {self._write_timeout}s"))
        return None

    async def _outcome(
        self, task: asyncio.Future[None], batch: list[Record], *, counted: bool = False
    ) -> bool:
        exc = task.exception()
        if exc is not None and not isinstance(exc, RecordRejected):
            return False if counted else self._failed(len(batch), exc)
        self.written += len(batch) - (await self._reject(exc) if exc else 0)
        self._journal.release(_seqs(batch))
        self._failures = 0
        self._sink_failures.succeeded()
        return True

    async def _settled(self) -> bool:
        """False while a hung write runs; once it ended (or was abandoned), account for it."""
        p = self._pending
        if p is None:
            return True
        if not p.task.done() and time.monotonic() - p.since < self._abandon_after:
            return False
        self._pending = None
        self._diverting = self._closing
        written = (
            p.task.done() and not p.task.cancelled() and await self._outcome(p.task, p.batch, counted=True)
        )
        if written and p.segment is not None:
            self._advance(*p.segment, len(p.batch))
        elif not written and p.segment is None:
            await self._to_spool_head(p.batch)  # older than everything spooled meanwhile
        if not p.task.done():
            log.error(
                "writer: a write hung for %.0fs; abandoned, its records stay spooled", self._abandon_after
            )
            p.task.cancel()
        return True

    def _abandon_pending(self) -> list[Record]:
        """At shutdown: a hung queue batch is spooled (a late commit makes the replay a no-op)."""
        p, self._pending = self._pending, None
        if p is None:
            return []
        p.task.cancel()
        return p.batch if p.segment is None else []

    async def _reject(self, exc: RecordRejected) -> int:
        self.rejected += len(exc.rejected)
        path = await self._spool.reject(exc.rejected)
        log.error(
            "writer: %d record(s) rejected by the database (%s); kept in %s",
            len(exc.rejected),
            exc.cause,
            path,
        )
        return len(exc.rejected)

    async def _to_spool_head(self, first: list[Record]) -> None:
        """`first` then the queue go before everything spooled (they are older).  New records go
        to the spool's tail meanwhile.  If cancelled (shutdown) they stay for `aclose`."""
        records = [*first, *self._queue]
        diverting, self._diverting = self._diverting, True
        try:
            await self._spool.prepend(records)
        except OSError:
            self._requeue(first)  # kept in memory; retried next tick
            log.exception("writer: could not spool %d record(s)", len(records))
            return
        finally:
            self._diverting = diverting or self._pending is not None or self._closing
        self._queue.clear()
        self._queue_bytes = 0
        self.spooled += len(records)
        self._journal.release(_seqs(records))

    def _requeue(self, records: list[Record]) -> None:
        self._queue.extendleft(reversed(records))
        self._queue_bytes += sum(map(_weight, records))

    def _spill(self, record: Record) -> None:
        self._unsynced = True
        try:
            self._spool.append(record)
        except (OSError, TypeError) as exc:
            self.dropped += 1
            log.error("writer: record dropped, spool unavailable: %r", exc)
        else:
            self.spooled += 1
            self._spilled.extend(record.wal)

    async def _sync_spool(self) -> None:
        """Fsync what was appended since the last tick; nothing to do (no thread, no fsync of
        the directory) while nothing was.  Segments written by `prepend` are durable already."""
        if not self._unsynced:
            return
        self._unsynced = False  # an append while the fsync runs sets it again
        spilled, self._spilled = self._spilled, []
        try:
            await self._spool.sync()
        except OSError:
            self._unsynced = True
            self._spilled[:0] = spilled
            log.exception("writer: fsync of the spool failed")
        else:
            self._journal.release(spilled)

    def _due(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _failed(self, n: int, exc: BaseException) -> bool:
        self.sink_errors += 1
        self._sink_failures.failed(exc)
        self._fail()
        return False

    def _fail(self) -> None:
        """Schedule the next attempt with jittered exponential backoff."""
        self._failures += 1
        self._retry_at = time.monotonic() + self._backoff.delay(self._failures)


def _seqs(records: Sequence[Record]) -> list[int]:
    return [seq for record in records for seq in record.wal]


def _retrieve(task: asyncio.Future[None]) -> None:
    """Consume the outcome of an abandoned write so asyncio does not report it as lost."""
    if not task.cancelled():
        task.exception()


class MemorySink:
    """In-memory RowSink twin with the SQL sink's idempotency, for tests and demos.

    `stall()` makes writes hang until `resume()`; `fail_with` makes them raise.  `duplicates`
    counts inserts of keys already present (the database would ignore them; a correct writer
    never sends a written record again within one process)."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[object, Row]] = {name: {} for name in TABLE_ORDER}
        self.attempts = 0
        self.batches: list[int] = []
        self.call_order: list[str] = []  # ids of calls in the order they were first written
        self.duplicates = 0
        self.fail_with: BaseException | None = None
        self._open = asyncio.Event()
        self._open.set()

    def stall(self) -> None:
        """Make subsequent (and pending) writes wait until `resume()`."""
        self._open.clear()

    def resume(self) -> None:
        """Release stalled writes."""
        self._open.set()

    async def write(self, batch: Sequence[Record]) -> None:
        """Apply the batch after the gate opens; raise `fail_with` when set."""
        self.attempts += 1
        await self._open.wait()
        if self.fail_with is not None:
            raise self.fail_with
        for name in TABLE_ORDER:
            for record in batch:
                for row in getattr(record, name):
                    self._apply(name, row)
        self.batches.append(len(batch))

    def _apply(self, table: str, row: Row) -> None:
        if table == "call_updates":
            target = self.tables["calls"].get(row["id"])
            if target is not None:
                target.update(row)
            return
        key = (
            (row["source_call_id"], row["target_call_id"], row["kind"])
            if table == "edges"
            else row.get("id", row.get("name"))
        )
        rows = self.tables[table]
        if key in rows and table in ("calls", "guard_events"):
            self.duplicates += 1
            return
        if table == "calls":
            self.call_order.append(row["id"])
        rows[key] = {**rows.get(key, {}), **row}


def _weight(record: Record) -> int:
    """Stored content a record holds, in characters (what makes a queue of them heavy)."""
    return sum(len(row.get("request_content") or "") + len(row.get("response_content") or "")
               for row in record.calls)
