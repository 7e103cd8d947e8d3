"""BatchWriter: batching off the request path, spooling when the sink is slow, full or down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proxy.store.rows import Record
from proxy.store.spool import Spool
from proxy.store.writer import BatchWriter, MemorySink, RecordRejected
from tests.store.factories import make_record
from tests.store.test_spool import read, spooled_files


def make_writer(sink: Any, directory: Path, **overrides: Any) -> BatchWriter:
    options: dict[str, Any] = dict(
        queue_size=100, batch_size=10, flush_interval=0.01, write_timeout=0.05, backoff=(0.01, 0.05)
    )
    writer = BatchWriter(sink, Spool(directory), **(options | overrides))
    writer.start()
    return writer


def ids(records: Sequence[Record]) -> list[str]:
    return [r.calls[0]["id"] for r in records]


async def test_records_are_written_in_batches_after_submit_returns(tmp_path: Path) -> None:
    sink = MemorySink()
    writer = make_writer(sink, tmp_path)
    records = [make_record() for _ in range(25)]
    for r in records:
        writer.submit(r)
    assert sink.attempts == 0  # nothing happened on the caller's stack
    assert await writer.flush(5)
    assert sink.call_order == ids(records)
    assert max(sink.batches) <= 10 and sum(sink.batches) == 25
    assert (writer.queued, writer.written, writer.spooled, writer.dropped) == (25, 25, 0, 0)
    await writer.aclose()


async def test_a_partial_batch_is_written_when_the_flush_interval_passes(tmp_path: Path) -> None:
    sink = MemorySink()
    writer = make_writer(sink, tmp_path, batch_size=100, flush_interval=0.02)
    writer.submit(make_record())
    await asyncio.sleep(0.2)
    assert len(sink.tables["calls"]) == 1
    await writer.aclose()


async def test_stalled_sink_does_not_slow_submit_and_every_record_arrives_once(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.stall()
    writer = make_writer(sink, tmp_path, queue_size=1000, batch_size=100)
    records = [make_record() for _ in range(10_000)]
    spent = 0.0
    for start in range(0, len(records), 500):
        t0 = time.perf_counter()
        for r in records[start : start + 500]:
            writer.submit(r)
        spent += time.perf_counter() - t0
        await asyncio.sleep(0.005)  # let the writer run (and hang on the sink) between bursts
    assert sink.attempts >= 1 and not sink.tables["calls"], "the sink was not stalled"
    assert spent < 1.0, f"10k submits took {spent:.3f}s against a stalled sink"
    assert writer.spooled > 0 and writer.sink_errors > 0
    sink.resume()
    assert await writer.flush(30)
    assert sink.call_order == ids(records)
    assert sink.duplicates == 0 and writer.dropped == 0
    await writer.aclose()
    assert spooled_files(tmp_path) == []


async def test_records_survive_a_writer_restart_while_the_sink_is_stalled(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.stall()
    first = make_writer(sink, tmp_path, queue_size=50, write_timeout=10.0)
    records = [make_record() for _ in range(300)]
    for r in records:
        first.submit(r)
    await asyncio.sleep(0.05)  # a batch is now in flight, hanging
    await first.aclose(timeout=0.1)
    assert not sink.tables["calls"]
    sink.resume()
    second = make_writer(sink, tmp_path)
    assert await second.flush(10)
    assert sink.call_order == ids(records)
    assert sink.duplicates == 0
    assert second.replayed == 300
    await second.aclose()


async def test_queue_overflow_spools_instead_of_dropping_and_keeps_order(tmp_path: Path) -> None:
    sink = MemorySink()
    writer = make_writer(sink, tmp_path, queue_size=20, batch_size=5)
    records = [make_record() for _ in range(1000)]
    for r in records:  # no await: the queue cannot drain while we submit
        writer.submit(r)
    assert writer.queued == 20 and writer.spooled == 980
    assert await writer.flush(10)
    assert sink.call_order == ids(records)
    assert writer.dropped == 0 and writer.written == 1000 and writer.replayed == 980
    await writer.aclose()


async def test_a_failing_sink_is_retried_with_backoff_until_it_recovers(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.fail_with = ConnectionError("database is down")
    writer = make_writer(sink, tmp_path, backoff=(0.05, 0.05))
    records = [make_record() for _ in range(30)]
    for r in records[:10]:
        writer.submit(r)
    await asyncio.sleep(0.1)
    for r in records[10:]:
        writer.submit(r)
    await asyncio.sleep(0.3)
    assert 2 <= writer.sink_errors <= 10  # retried, but spaced by the backoff
    sink.fail_with = None
    assert await writer.flush(5)
    assert sink.call_order == ids(records)
    assert sink.duplicates == 0
    await writer.aclose()


class PickySink(MemorySink):
    """Writes everything but records whose call id starts with "bad"."""

    async def write(self, batch: Sequence[Record]) -> None:
        bad = [r for r in batch if r.calls and r.calls[0]["id"].startswith("bad")]
        await super().write([r for r in batch if r not in bad])
        if bad:
            raise RecordRejected(bad, ValueError("value too long"))


async def test_rejected_records_are_set_aside_and_the_rest_written(tmp_path: Path) -> None:
    sink = PickySink()
    writer = make_writer(sink, tmp_path)
    good = [make_record() for _ in range(5)]
    bad = make_record(id="bad-call")
    for r in [*good[:2], bad, *good[2:]]:
        writer.submit(r)
    assert await writer.flush(5)
    assert sink.call_order == ids(good)
    assert (writer.rejected, writer.written) == (1, 5)
    (kept,) = spooled_files(tmp_path, "rejected-*.jsonl")
    assert b"bad-call" in read(kept)
    await writer.aclose()


async def test_aclose_returns_by_its_deadline_and_spools_the_rest(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.stall()
    writer = make_writer(sink, tmp_path, write_timeout=60.0)
    for _ in range(40):
        writer.submit(make_record())
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    await writer.aclose(timeout=0.1)
    assert time.perf_counter() - t0 < 1.0
    assert writer.spooled == 40 and writer.queue_depth == 0
    assert Spool(tmp_path).pending


async def test_submit_after_close_is_spooled_not_lost(tmp_path: Path) -> None:
    sink = MemorySink()
    writer = make_writer(sink, tmp_path)
    await writer.aclose()
    late = make_record()
    writer.submit(late)
    assert writer.spooled == 1
    sink2 = MemorySink()
    again = make_writer(sink2, tmp_path)
    assert await again.flush(5)
    assert sink2.call_order == ids([late])
    await again.aclose()


class FirstWriteHangs(MemorySink):
    """The first write hangs (forever, or for `hang` seconds and then fails); later ones work."""

    def __init__(self, hang: float | None) -> None:
        super().__init__()
        self.hang = hang
        self.hung = False

    async def write(self, batch: Sequence[Record]) -> None:
        if not self.hung:
            self.hung = True
            await (asyncio.Event().wait() if self.hang is None else asyncio.sleep(self.hang))
            raise ConnectionError("gave up after hanging")
        await super().write(batch)


async def test_a_hung_write_that_fails_later_is_replayed_first(tmp_path: Path) -> None:
    sink = FirstWriteHangs(hang=0.3)
    writer = make_writer(sink, tmp_path, write_timeout=0.05)
    records = [make_record() for _ in range(60)]
    for r in records:
        writer.submit(r)
        await asyncio.sleep(0.002)
    assert await writer.flush(10)
    assert sink.call_order == ids(records)
    assert sink.duplicates == 0
    await writer.aclose()


async def test_a_write_hung_past_abandon_after_is_cancelled_and_its_batch_replayed(tmp_path: Path) -> None:
    sink = FirstWriteHangs(hang=None)
    writer = make_writer(sink, tmp_path, write_timeout=0.05, abandon_after=0.2)
    records = [make_record() for _ in range(30)]
    for r in records:
        writer.submit(r)
    assert await writer.flush(10)
    assert sink.call_order == ids(records)
    await writer.aclose()


class CountingSpool(Spool):
    syncs = 0

    async def sync(self) -> None:
        self.syncs += 1
        await super().sync()


async def test_the_spool_is_fsynced_only_after_records_were_appended_to_it(tmp_path: Path) -> None:
    sink, spool = MemorySink(), CountingSpool(tmp_path)
    writer = BatchWriter(sink, spool, queue_size=20, batch_size=5, flush_interval=0.01, write_timeout=0.05)
    writer.start()
    for _ in range(3):
        for _ in range(10):
            writer.submit(make_record())
        assert await writer.flush(5)
    assert spool.syncs == 0  # healthy database: no thread hop, no directory fsync per tick
    for _ in range(30):  # past the queue: 10 records go to the spool
        writer.submit(make_record())
    assert writer.spooled == 10
    assert await writer.flush(5)
    assert spool.syncs >= 1 and writer.written == 60
    await writer.aclose()


async def test_queue_of_heavy_records_spools_past_its_byte_bound_and_keeps_order(tmp_path: Path) -> None:
    """Memory stays bounded by bytes, not only by count: 200 KB bodies past 1 MB go to disk."""
    sink = MemorySink()
    writer = make_writer(sink, tmp_path, queue_size=1000, batch_size=5, queue_max_bytes=1_000_000)
    records = [make_record(request_bytes=b"x" * 100_000, response_bytes=b"y" * 100_000, max_bytes=256 * 1024)
               for _ in range(20)]
    for r in records:  # no await: the queue cannot drain while we submit
        writer.submit(r)
    assert writer.queued == 5 and writer.spooled == 15
    assert await writer.flush(10)
    assert sink.call_order == ids(records)
    assert writer.dropped == 0 and writer.written == 20
    await writer.aclose()


async def test_one_record_larger_than_the_byte_bound_still_queues_when_alone(tmp_path: Path) -> None:
    sink = MemorySink()
    writer = make_writer(sink, tmp_path, queue_max_bytes=1024)
    record = make_record(request_bytes=b"x" * 50_000)
    writer.submit(record)
    assert writer.queued == 1 and writer.spooled == 0
    assert await writer.flush(5)
    assert sink.call_order == ids([record])
    await writer.aclose()
