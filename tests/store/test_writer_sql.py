"""The writer against a real database that stalls: requests never wait, rows arrive once later."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.store.db import SqlSink
from proxy.store.models import TABLES
from proxy.store.spool import Spool
from proxy.store.writer import BatchWriter
from tests.store.factories import make_record


@contextlib.asynccontextmanager
async def locked(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold a lock that blocks every insert into calls (another client stalling the database)."""
    async with engine.connect() as conn:
        trans = await conn.begin()
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql("DELETE FROM calls WHERE 0")  # takes SQLite's write lock
        else:
            await conn.execute(sa.text("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            await trans.rollback()


async def count_calls(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(TABLES["calls"]))).scalar_one()


async def test_a_locked_database_spools_and_every_row_arrives_once_after(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    writer = BatchWriter(
        SqlSink(engine), Spool(tmp_path), queue_size=50, batch_size=20,
        flush_interval=0.01, write_timeout=0.2, backoff=(0.05, 0.1),
    )  # fmt: skip
    writer.start()
    records = [make_record() for _ in range(500)]
    spent = 0.0
    async with locked(engine):
        for start in range(0, 500, 50):
            t0 = time.perf_counter()
            for r in records[start : start + 50]:
                writer.submit(r)
            spent += time.perf_counter() - t0
            await asyncio.sleep(0.05)
        assert writer.sink_errors >= 1 and writer.spooled > 0
    assert spent < 0.5
    assert await writer.flush(30), (writer.queue_depth, writer.spooled, writer.replayed)
    await writer.aclose()
    assert await count_calls(engine) == 500
    assert writer.dropped == 0 and writer.rejected == 0
