"""Off the request path: finished Calls → graph linker → rows → batching writer.

    relay.record(call) ─put_nowait─▶ [bounded queue] ─▶ worker: link, build rows ─▶ writer.submit
                          │ full
                          └─▶ rows built inline (no linking) and handed to the writer, which
                              spools to disk when it is full too: a record is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from proxy.call import Call
from proxy.pricing import PriceTable
from proxy.store.rows import ContentPolicy, Record, call_record

log = logging.getLogger("interlock.pipeline")


class Pipeline:
    def __init__(self, writer: Any, *, policy: ContentPolicy, max_bytes: int, linker: Any = None, metrics: Any = None,
                 prices: Callable[[], PriceTable] | None = None, maxsize: int = 10_000) -> None:
        self.writer = writer
        self.policy = policy
        self.max_bytes = max_bytes
        self.linker = linker
        self.metrics = metrics
        default = PriceTable()
        self.prices: Callable[[], PriceTable] = prices or (lambda: default)
        self.queue: asyncio.Queue[Call | None] = asyncio.Queue(maxsize)
        self.overflowed = 0
        self.link_errors = 0
        self.processed = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="interlock-pipeline")

    def submit(self, call: Call) -> None:
        """Request path: never blocks, never raises."""
        try:
            self.queue.put_nowait(call)
        except asyncio.QueueFull:
            self.overflowed += 1
            self._write(call, None)

    async def _run(self) -> None:
        while True:
            call = await self.queue.get()
            if call is None:
                return
            self._process(call)
            self.processed += 1

    def _process(self, call: Call) -> None:
        if call.cost_usd is None and call.usage.reported:
            call.cost_usd = self.prices().cost_usd(call.model_served or call.model_requested, call.usage)
        link = None
        if self.linker is not None:
            try:
                link = self.linker.observe(call)
            except Exception:
                self.link_errors += 1
                log.exception("graph linking failed for call %s", call.id)
        self._write(call, link)
        if self.metrics is not None:
            self.metrics.on_recorded(call, link)

    def _write(self, call: Call, link: Any) -> None:
        record = call_record(call, policy=self.policy, max_bytes=self.max_bytes)
        if link is not None:
            _apply_link(record, link, call)
        self.writer.submit(record)

    async def aclose(self) -> None:
        if self._task is None:
            return
        await self.queue.put(None)
        try:
            await asyncio.wait_for(self._task, timeout=10)
        except TimeoutError:
            self._task.cancel()


def _apply_link(record: Record, link: Any, call: Call) -> None:
    row = record.calls[0]
    row["agent"] = link.agent
    row["run_id"] = link.run_id
    if link.flags:
        row["flags"] = sorted(set(row.get("flags") or []) | set(link.flags))
    for ev in record.guard_events:
        ev["agent"], ev["run_id"] = link.agent, link.run_id
    record.edges = [
        {"run_id": link.run_id, "source_call_id": e.source, "target_call_id": e.target, "kind": e.kind,
         "evidence": e.evidence, "created_at": call.ended_at or call.started_at}
        for e in link.edges
    ]
