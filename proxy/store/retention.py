"""Retention: old content cleared, then old records deleted, in small batches, in the background.

    sweep(now) ─▶ content: calls started before now − content_days lose request/response
                           content (UPDATE, batches walked by (started_at, id))
              ─▶ records:  calls started before now − metadata_days are deleted with their
                           guard events and the edges into them; runs last active before the
                           cutoff are deleted (agents, a few rows of totals, are kept)

Every batch is its own short transaction of at most `batch_size` calls, and the sweeper sleeps
`pause_s` between batches, so the writer's transactions interleave with it instead of waiting
behind one long DELETE.  On PostgreSQL a batch locks its rows with SKIP LOCKED: sweepers in
several processes take disjoint batches.  Content goes first, so content never outlives the
metadata cutoff's sweep, and a sweep stopped half-way leaves only older rows than it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.failures import FailureLog
from proxy.store.models import TABLES

log = logging.getLogger(__name__)
DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long records and their content are kept (None: forever) and how a sweep paces itself."""

    metadata_days: float | None = None
    content_days: float | None = None
    batch_size: int = 2000
    pause_s: float = 0.05
    interval_s: float = 3600.0

    @property
    def enabled(self) -> bool:
        return self.metadata_days is not None or self.content_days is not None


@dataclass(slots=True)
class Swept:
    """What one sweep did: rows touched per kind and the batches it took."""

    content_cleared: int = 0
    calls_deleted: int = 0
    guard_events_deleted: int = 0
    edges_deleted: int = 0
    runs_deleted: int = 0
    batches: int = 0
    content_s: float = 0.0  # wall time of each phase, pauses included
    records_s: float = 0.0


class Retention:
    """Applies a RetentionPolicy to the recorded tables.  `sweep` may be awaited directly
    (tests, the CLI); `start` runs it every `interval_s` in a background task that logs and
    retries on database errors and never raises.  Both only touch the database through
    bounded, short transactions."""

    def __init__(self, engine: AsyncEngine, policy: RetentionPolicy) -> None:
        self._engine = engine
        self._policy = policy
        self._task: asyncio.Task[None] | None = None
        self._failures = FailureLog(log, "retention sweep", traceback=False, hint="retried at the next interval")
        self._skip_locked = engine.dialect.name == "postgresql"

    def start(self) -> None:
        if self._policy.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="interlock-retention")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                swept = await self.sweep()
                self._failures.succeeded()
                if swept.batches:
                    log.info("retention: %s", swept)
            except Exception as exc:
                self._failures.failed(exc)
            await asyncio.sleep(self._policy.interval_s)

    async def sweep(self, now: float | None = None) -> Swept:
        """One pass: content first, then records, each until nothing older than its cutoff is left."""
        now = time.time() if now is None else now
        swept = Swept()
        started = time.perf_counter()
        if self._policy.content_days is not None:
            await self._clear_content(_cutoff(now, self._policy.content_days), swept)
        swept.content_s = time.perf_counter() - started
        if self._policy.metadata_days is not None:
            cutoff = _cutoff(now, self._policy.metadata_days)
            for delete in (self._delete_calls, self._delete_runs):
                more = True
                while more:
                    more = await delete(cutoff, swept)
                    await asyncio.sleep(self._policy.pause_s)  # the writer's turn
        swept.records_s = time.perf_counter() - started - swept.content_s
        return swept

    def _oldest(self, cutoff: datetime, after: tuple[datetime, str] | None = None) -> Any:
        """Ids of up to one batch of calls started before `cutoff`, oldest first (index on started_at, id)."""
        calls = TABLES["calls"]
        query = sa.select(calls.c.id, calls.c.started_at).where(calls.c.started_at < cutoff)
        if after is not None:
            query = query.where(sa.tuple_(calls.c.started_at, calls.c.id) > sa.tuple_(*after))
        query = query.order_by(calls.c.started_at, calls.c.id).limit(self._policy.batch_size)
        return query.with_for_update(skip_locked=True) if self._skip_locked else query

    async def _clear_content(self, cutoff: datetime, swept: Swept) -> None:
        calls = TABLES["calls"]
        has_content = sa.or_(calls.c.request_content.is_not(None), calls.c.response_content.is_not(None))
        after: tuple[datetime, str] | None = None
        while True:
            async with self._engine.begin() as conn:
                page = (await conn.execute(self._oldest(cutoff, after))).all()
                if not page:
                    return
                ids = [row.id for row in page]
                cleared = await conn.execute(
                    sa.update(calls).where(calls.c.id.in_(ids), has_content)
                    .values(request_content=None, response_content=None)
                )  # fmt: skip
            after = (page[-1].started_at, page[-1].id)
            swept.content_cleared += cleared.rowcount
            swept.batches += 1
            await asyncio.sleep(self._policy.pause_s)

    async def _delete_calls(self, cutoff: datetime, swept: Swept) -> bool:
        calls, events, edges = TABLES["calls"], TABLES["guard_events"], TABLES["edges"]
        async with self._engine.begin() as conn:
            ids = [row.id for row in await conn.execute(self._oldest(cutoff))]
            if not ids:
                return False
            swept.guard_events_deleted += (await conn.execute(sa.delete(events).where(events.c.call_id.in_(ids)))).rowcount
            swept.edges_deleted += (await conn.execute(sa.delete(edges).where(edges.c.target_call_id.in_(ids)))).rowcount
            swept.calls_deleted += (await conn.execute(sa.delete(calls).where(calls.c.id.in_(ids)))).rowcount
        swept.batches += 1
        return len(ids) == self._policy.batch_size

    async def _delete_runs(self, cutoff: datetime, swept: Swept) -> bool:
        runs = TABLES["runs"]
        query = sa.select(runs.c.id).where(runs.c.last_at < cutoff).order_by(runs.c.last_at)
        query = query.limit(self._policy.batch_size)
        query = query.with_for_update(skip_locked=True) if self._skip_locked else query
        async with self._engine.begin() as conn:
            ids = list((await conn.execute(query)).scalars())
            if not ids:
                return False
            swept.runs_deleted += (await conn.execute(sa.delete(runs).where(runs.c.id.in_(ids)))).rowcount
        swept.batches += 1
        return len(ids) == self._policy.batch_size


def _cutoff(now: float, days: float) -> datetime:
    return datetime.fromtimestamp(now - days * DAY_S, UTC)
