"""Off the request path: finished Calls → cost → graph linker → rows → batching writer.

    relay.record(call) ─put_nowait─▶ [bounded queue] ─▶ worker: price, link, aggregate ─▶ writer.submit
                          │ full                          │ every few seconds: close idle runs
                          ├─▶ rows built inline (no linking) and handed to the writer, which
                          │   spools to disk when it is full too: a record is never dropped;
                          └─▶ [catch-up lane]: the call without its bodies (bounded by the
                              characters it holds), linked when the queue is empty; its row is
                              then amended (agent, run, flags), its edges and totals written.
                              Past the lane's bound a call stays unlinked, counted (`unlinked`).

Before any of this, `answered(call)` hands the call to the write-ahead log (proxy/store/wal.py),
which has it on disk within milliseconds; the rows derived here follow it there via the writer.

Linking lags under saturation and catches up after it; nothing is shed silently: `linked_late`
and `unlinked` are exported (interlock_pipeline_state) and reported by bench/run.py.

Hooks (`observers`) see each (call, link) after it is written: metrics, escalation detection,
cascade tracing.  They run on the worker and must not block; a failing hook is logged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from proxy.aggregates import Aggregates
from proxy.call import Call
from proxy.graph.model import LinkResult
from proxy.pricing import PriceTable
from proxy.store.rows import ContentPolicy, Record, call_record, flags_of

log = logging.getLogger("interlock.pipeline")

Observer = Callable[[Call, LinkResult | None], None]
RunsClosed = Callable[[list[str]], None]


class RemoteLinking(Protocol):
    """The graph owner's client (proxy/graphowner.py), when the graph is shared by replicas."""

    def send(self, call: Call) -> None:
        """Request path: queue the answered call for the owner; never blocks, never raises.
        The answer comes back as Pipeline.linked(...), or Pipeline.link_locally(...) on failure."""


def link_rows(totals: Aggregates, call: Call, link: LinkResult) -> tuple[Record, Record]:
    """A linked call's rows besides its own: (edges and renames, totals and run merges)."""
    record, agg = Record(), Record()
    at = call.ended_at or call.started_at
    record.edges = [
        {"run_id": link.run_id, "source_call_id": e.source, "target_call_id": e.target, "kind": e.kind,
         "evidence": e.evidence, "created_at": at}
        for e in link.edges
    ]
    inferred = call.agent_source in (None, "inferred")  # a given name is not a fingerprint's
    run_row, agent_row = totals.add(call, link.agent, link.agent_fingerprint if inferred else None,
                                    link.run_id, link.flags)
    agg.agents.append(agent_row)
    if run_row is not None:
        agg.runs.append(run_row)
    # a group chat named an earlier call's speaker only now: its row shows that agent
    record.call_updates.extend({"id": cid, "agent": agent} for cid, agent in link.renamed.items())
    for old in link.merged_runs:
        if link.run_id is not None:
            agg.run_merges.append({"from": old, "into": link.run_id})
            merged = totals.merge(old, link.run_id)
            if merged is not None:
                agg.runs = [merged]
    return record, agg


class Pipeline:
    def __init__(self, writer: Any, *, policy: ContentPolicy, max_bytes: int, linker: Any = None,
                 observers: list[Observer] | None = None, on_runs_closed: list[RunsClosed] | None = None,
                 prices: Callable[[], PriceTable] | None = None,
                 maxsize: int = 10_000, max_queued_bytes: int = 128 * 1024 * 1024,
                 close_every_s: float = 5.0, max_lagging_chars: int = 64 * 1024 * 1024,
                 answered: Callable[[Record], None] | None = None, remote: RemoteLinking | None = None,
                 link_timeout_s: float = 10.0) -> None:
        self.writer = writer
        # shared graph (proxy/graphowner.py): the owner links; calls wait here for its answer
        self.remote = remote
        self.link_timeout_s = link_timeout_s
        self._parked: collections.OrderedDict[str, tuple[Call, float]] = collections.OrderedDict()
        self._early: dict[str, tuple[LinkResult | None, Record, Record]] = {}  # answered before dequeued
        self._late: collections.OrderedDict[str, Call] = collections.OrderedDict()  # stored unlinked
        self.linked_remote = 0
        self._drained: asyncio.Event | None = None  # set when the last parked call is answered (shutdown)
        self.link_timeouts = 0
        self.answered = answered  # the WAL's request-path hook (proxy/store/wal.py), O(1)
        self._built: dict[str, Record] = {}  # rows built on the request path for the WAL, by call id
        self.policy = policy
        self.max_bytes = max_bytes
        self.linker = linker
        self.observers = observers or []
        self.on_runs_closed = on_runs_closed or []
        default = PriceTable()
        self.prices: Callable[[], PriceTable] = prices or (lambda: default)
        self.totals = Aggregates()
        self.queue: asyncio.Queue[Call | None] = asyncio.Queue(maxsize)
        self.max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0  # request + response bodies held by queued calls
        self.close_every_s = close_every_s
        self.overflowed = 0
        self.link_errors = 0
        self.processed = 0
        self.lagging: collections.deque[Call] = collections.deque()  # stored, not linked yet
        self.lagging_chars = 0
        self.max_lagging_chars = max_lagging_chars
        self.linked_late = 0
        self.linked_local = 0
        self.unlinked = 0
        self._next_close = time.monotonic() + close_every_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="interlock-pipeline")

    def submit(self, call: Call) -> None:
        """Request path: never blocks, never raises.  Bounded in calls and in body bytes (a
        backlog of 100k-token requests would otherwise hold gigabytes).  The WAL logs the call
        first, so a crash while it waits here loses nothing."""
        if self.answered is not None:
            self._price(call)
            record = self._built[call.id] = call_record(call, policy=self.policy, max_bytes=self.max_bytes)
            self.answered(record)
        if self.remote is not None:
            self._price(call)
            self.remote.send(call)
        size = _body_bytes(call)
        try:
            if self.queued_bytes + size > self.max_queued_bytes and self.queued_bytes:
                raise asyncio.QueueFull
            self.queue.put_nowait(call)
            self.queued_bytes += size
        except asyncio.QueueFull:
            self.overflowed += 1
            self._price(call)
            self.writer.submit(self._record(call))
            if self.remote is not None:
                self._wait_late(call)  # the owner's answer amends the stored row
            else:
                self._lag(call)

    def _lag(self, call: Call) -> None:
        """Keep what linking needs (messages, output; not the raw bodies) for the catch-up lane."""
        if self.linker is None:
            return
        chars = _text_chars(call)
        if self.lagging_chars + chars > self.max_lagging_chars:
            self.unlinked += 1
            return
        call.request_bytes = call.response_bytes = b""
        self.lagging.append(call)
        self.lagging_chars += chars

    async def _run(self) -> None:
        while True:
            if self.lagging and self.queue.empty():
                self._catch_up()
                await asyncio.sleep(0)  # let the request path and the queue in between
                continue
            if self._parked:
                self._expire_parked()
            try:
                call = await asyncio.wait_for(self.queue.get(), timeout=self._tick())
            except TimeoutError:
                if time.monotonic() >= self._next_close:
                    self._close_idle()
                continue
            if call is None:
                while self.lagging:  # shutting down: what lags is linked within aclose's deadline
                    self._catch_up()
                    await asyncio.sleep(0)
                await self._drain_parked()
                return
            self.queued_bytes -= _body_bytes(call)
            try:
                self._process(call)
            except Exception:
                log.exception("recording failed for call %s", call.id)
                self.writer.submit(self._record(call))
            self.processed += 1
            if time.monotonic() >= self._next_close:
                self._close_idle()

    def _catch_up(self, batch: int = 64) -> None:
        """Link up to `batch` lagging calls (stored already): amend their rows, write their edges
        and their share of the totals.  Runs only while the queue is empty."""
        for _ in range(min(batch, len(self.lagging))):
            call = self.lagging.popleft()
            self.lagging_chars -= _text_chars(call)
            link = self._link(call)
            if link is None:
                self.unlinked += 1
                continue
            self._amend(call, link, *link_rows(self.totals, call, link))

    def _amend(self, call: Call, link: LinkResult, rows: Record, agg: Record) -> None:
        """A stored, unlinked call's link: its row amended (agent, run, flags), its edges and totals."""
        record, totals = Record(), Record()
        update: dict[str, Any] = {"id": call.id, "agent": link.agent, "run_id": link.run_id}
        if call.agent_source is None:
            update["agent_source"] = "inferred"
        if link.flags:
            update["flags"] = sorted(set(flags_of(call)) | set(link.flags))
        record.call_updates.append(update)
        self._add_rows(record, totals, rows, agg)
        self.writer.submit(record)
        self.writer.submit(totals)
        self.linked_late += 1
        self._notify(call, link)

    # ------------------------------------------------------------------ shared graph (remote)

    @property
    def parked(self) -> int:
        """Calls waiting for the graph owner's answer."""
        return len(self._parked)

    def _tick(self) -> float:
        if self.remote is None:
            return self.close_every_s
        return max(0.0, min(self.close_every_s, 0.25, self._next_close - time.monotonic()))

    def linked(self, call_id: str, link: LinkResult | None, rows: Record, agg: Record) -> None:
        """The owner's answer for a call this process answered (on this event loop)."""
        parked = self._parked.pop(call_id, None)
        if parked is not None:
            self._write_linked(parked[0], link, rows, agg)
            if not self._parked and self._drained is not None:
                self._drained.set()
            return
        late = self._late.pop(call_id, None)
        if late is not None:
            if link is None:
                self.unlinked += 1
            else:
                self._amend(late, link, rows, agg)
            return
        if len(self._early) < 100_000:
            self._early[call_id] = (link, rows, agg)

    def link_locally(self, call: Call) -> None:
        """The owner could not be reached: link with this process's own linker (a graph that
        may split across replicas, counted in `linked_local`)."""
        self.linked_local += 1
        link = self._link(call)
        rows, agg = link_rows(self.totals, call, link) if link is not None else (Record(), Record())
        self.linked(call.id, link, rows, agg)

    def _park(self, call: Call) -> None:
        early = self._early.pop(call.id, None)
        if early is not None:
            self._write_linked(call, *early)
        else:
            self._parked[call.id] = (call, time.monotonic() + self.link_timeout_s)

    def _write_linked(self, call: Call, link: LinkResult | None, rows: Record, agg: Record) -> None:
        record, totals = self._record(call), Record()
        if link is not None:
            self._apply_link_fields(record, link, call)
            self._add_rows(record, totals, rows, agg)
            self.linked_remote += 1
        else:
            self.unlinked += 1
        self.writer.submit(record)
        self.writer.submit(totals)
        self._notify(call, link)

    def _expire_parked(self) -> None:
        """Calls the owner did not answer within link_timeout_s are stored unlinked now; a late
        answer amends them."""
        now = time.monotonic()
        while self._parked:
            call_id, (call, until) = next(iter(self._parked.items()))
            if until > now:
                return
            del self._parked[call_id]
            self.link_timeouts += 1
            self.writer.submit(self._record(call))
            self._wait_late(call)

    async def _drain_parked(self, within_s: float = 2.0) -> None:
        """Shutting down: wait a little for the owner's answers, then store the rest unlinked."""
        if self._parked:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), within_s)
        for call, _ in self._parked.values():
            self.link_timeouts += 1
            self.writer.submit(self._record(call))
        self._parked.clear()

    def _wait_late(self, call: Call) -> None:
        call.request_bytes = call.response_bytes = b""
        self._late[call.id] = call
        if len(self._late) > 50_000:
            self._late.popitem(last=False)
            self.unlinked += 1

    def _price(self, call: Call) -> None:
        if call.cost_usd is None and call.usage.reported:
            call.cost_usd = self.prices().cost_usd(call.model_served or call.model_requested, call.usage)

    def _process(self, call: Call) -> None:
        if self.remote is not None:
            self._park(call)
            return
        self._price(call)
        link = self._link(call)
        record = self._record(call)
        totals = Record()  # separate, so a refused aggregate row can never hold back the call's row
        if link is not None:
            self._apply_link(record, totals, link, call)
        else:
            self._count(totals, call, call.agent or "unknown", None, call.run_id, [])
        self.writer.submit(record)
        self.writer.submit(totals)
        self._notify(call, link)

    def _record(self, call: Call) -> Record:
        """The call's record: the one built for the WAL when there is one (the same rows, so the
        WAL's entry and the database's row agree), else built now."""
        return self._built.pop(call.id, None) or call_record(call, policy=self.policy, max_bytes=self.max_bytes)

    def _notify(self, call: Call, link: LinkResult | None) -> None:
        for observe in self.observers:
            try:
                observe(call, link)
            except Exception:
                log.exception("pipeline observer %r failed", observe)

    def _link(self, call: Call) -> LinkResult | None:
        if self.linker is None:
            return None
        try:
            link: LinkResult = self.linker.observe(call)
            return link
        except Exception:
            self.link_errors += 1
            log.exception("graph linking failed for call %s", call.id)
            return None

    def _apply_link(self, record: Record, totals: Record, link: LinkResult, call: Call) -> None:
        self._apply_link_fields(record, link, call)
        self._apply_link_rows(record, totals, link, call)

    @staticmethod
    def _apply_link_fields(record: Record, link: LinkResult, call: Call) -> None:
        row = record.calls[0]
        row["agent"], row["run_id"] = link.agent, link.run_id
        if call.agent_source is None:
            row["agent_source"] = "inferred"
        if link.flags:
            row["flags"] = sorted(set(row.get("flags") or []) | set(link.flags))
        for ev in record.guard_events:
            ev["agent"], ev["run_id"] = link.agent, link.run_id

    def _apply_link_rows(self, record: Record, totals: Record, link: LinkResult, call: Call) -> None:
        """Edges, renames, totals and run merges of a linked call (its own row aside)."""
        rows, agg = link_rows(self.totals, call, link)
        self._add_rows(record, totals, rows, agg)

    @staticmethod
    def _add_rows(record: Record, totals: Record, rows: Record, agg: Record) -> None:
        record.edges.extend(rows.edges)
        record.call_updates.extend(rows.call_updates)
        totals.agents.extend(agg.agents)
        totals.runs.extend(agg.runs)
        totals.run_merges.extend(agg.run_merges)

    def _count(self, record: Record, call: Call, agent: str, fingerprint: str | None, run_id: str | None,
               flags: list[str]) -> None:
        run_row, agent_row = self.totals.add(call, agent, fingerprint, run_id, flags)
        record.agents.append(agent_row)
        if run_row is not None:
            record.runs.append(run_row)

    def _close_idle(self) -> None:
        self._next_close = time.monotonic() + self.close_every_s
        if self.linker is None:
            return
        closed = self.linker.close_idle()
        rows = [r for r in (self.totals.close(run_id) for run_id in closed) if r is not None]
        if rows:
            self.writer.submit(Record(runs=rows))
        for hook in self.on_runs_closed:  # called on every sweep, even when nothing closed
            try:
                hook(closed)
            except Exception:
                log.exception("pipeline run-close hook %r failed", hook)

    async def aclose(self, deadline_s: float = 5.0) -> None:
        """Finish what is queued within the deadline; hand the rest to the writer unlinked (it
        writes or spools them), so a shutdown under backlog loses no call."""
        if self._task is None:
            return
        try:
            self.queue.put_nowait(None)
            await asyncio.wait_for(asyncio.shield(self._task), timeout=deadline_s)
        except (TimeoutError, asyncio.QueueFull):
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self.unlinked += len(self.lagging)  # stored already; the deadline left no time to link them
            self.lagging.clear()
            while not self.queue.empty():
                call = self.queue.get_nowait()
                if call is not None:
                    self.overflowed += 1
                    self._price(call)
                    self.writer.submit(self._record(call))


def _text_chars(call: Call) -> int:
    return len(call.system or "") + sum(len(m.text) for m in call.messages) + len(call.completion.text)


def _body_bytes(call: Call) -> int:
    return len(call.request_bytes) + len(call.response_bytes)
