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
from typing import Any

from proxy.aggregates import Aggregates
from proxy.call import Call
from proxy.graph.model import LinkResult
from proxy.pricing import PriceTable
from proxy.store.rows import ContentPolicy, Record, call_record, flags_of

log = logging.getLogger("interlock.pipeline")

Observer = Callable[[Call, LinkResult | None], None]
RunsClosed = Callable[[list[str]], None]


class Pipeline:
    def __init__(self, writer: Any, *, policy: ContentPolicy, max_bytes: int, linker: Any = None,
                 observers: list[Observer] | None = None, on_runs_closed: list[RunsClosed] | None = None,
                 prices: Callable[[], PriceTable] | None = None,
                 maxsize: int = 10_000, max_queued_bytes: int = 128 * 1024 * 1024,
                 close_every_s: float = 5.0, max_lagging_chars: int = 64 * 1024 * 1024,
                 answered: Callable[[Record], None] | None = None) -> None:
        self.writer = writer
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
            try:
                call = await asyncio.wait_for(self.queue.get(), timeout=self.close_every_s)
            except TimeoutError:
                self._close_idle()
                continue
            if call is None:
                while self.lagging:  # shutting down: what lags is linked within aclose's deadline
                    self._catch_up()
                    await asyncio.sleep(0)
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
            record, totals = Record(), Record()
            update: dict[str, Any] = {"id": call.id, "agent": link.agent, "run_id": link.run_id}
            if call.agent_source is None:
                update["agent_source"] = "inferred"
            if link.flags:
                update["flags"] = sorted(set(flags_of(call)) | set(link.flags))
            record.call_updates.append(update)
            self._apply_link_rows(record, totals, link, call)
            self.writer.submit(record)
            self.writer.submit(totals)
            self.linked_late += 1
            self._notify(call, link)

    def _price(self, call: Call) -> None:
        if call.cost_usd is None and call.usage.reported:
            call.cost_usd = self.prices().cost_usd(call.model_served or call.model_requested, call.usage)

    def _process(self, call: Call) -> None:
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
        row = record.calls[0]
        row["agent"], row["run_id"] = link.agent, link.run_id
        if call.agent_source is None:
            row["agent_source"] = "inferred"
        if link.flags:
            row["flags"] = sorted(set(row.get("flags") or []) | set(link.flags))
        for ev in record.guard_events:
            ev["agent"], ev["run_id"] = link.agent, link.run_id
        self._apply_link_rows(record, totals, link, call)

    def _apply_link_rows(self, record: Record, totals: Record, link: LinkResult, call: Call) -> None:
        """Edges, renames, totals and run merges of a linked call (its own row aside)."""
        at = call.ended_at or call.started_at
        record.edges = [
            {"run_id": link.run_id, "source_call_id": e.source, "target_call_id": e.target, "kind": e.kind,
             "evidence": e.evidence, "created_at": at}
            for e in link.edges
        ]
        inferred = call.agent_source in (None, "inferred")  # a given name is not a fingerprint's
        self._count(totals, call, link.agent, link.agent_fingerprint if inferred else None, link.run_id, link.flags)
        # a group chat named an earlier call's speaker only now: its row shows that agent
        record.call_updates.extend({"id": cid, "agent": agent} for cid, agent in link.renamed.items())
        for old in link.merged_runs:
            if link.run_id is not None:
                totals.run_merges.append({"from": old, "into": link.run_id})
                merged = self.totals.merge(old, link.run_id)
                if merged is not None:
                    totals.runs = [merged]

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
