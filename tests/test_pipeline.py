"""Pipeline: the bounded hand-over from the request path to linking and storage."""

from __future__ import annotations

from pathlib import Path

from proxy.pipeline import Pipeline
from proxy.store.spool import Spool
from proxy.store.writer import BatchWriter, MemorySink
from tests.store.factories import make_call


def make_pipeline(tmp_path: Path, **options: int) -> tuple[Pipeline, BatchWriter, MemorySink]:
    sink = MemorySink()
    writer = BatchWriter(sink, Spool(tmp_path), flush_interval=0.01)
    writer.start()
    return Pipeline(writer, policy="redacted", max_bytes=256 * 1024, **options), writer, sink


async def test_backlog_of_big_calls_is_bounded_by_bytes_and_the_rest_stored_unlinked(tmp_path: Path) -> None:
    pipeline, writer, sink = make_pipeline(tmp_path, max_queued_bytes=2_100_000)
    calls = [make_call(request_bytes=b"x" * 500_000) for _ in range(10)]
    for call in calls:  # the worker is not running: the backlog only grows
        pipeline.submit(call)
    assert pipeline.queue.qsize() == 4 and pipeline.overflowed == 6
    assert pipeline.queued_bytes <= 2_100_000
    await pipeline.start()
    await pipeline.aclose()
    assert pipeline.queued_bytes == 0
    assert await writer.flush(5)
    stored = set(sink.call_order)
    assert stored == {c.id for c in calls}, "every call is stored, linked or not"
    await writer.aclose()


async def test_small_calls_are_bounded_by_count_not_bytes(tmp_path: Path) -> None:
    pipeline, writer, _ = make_pipeline(tmp_path, maxsize=5)
    for _ in range(8):
        pipeline.submit(make_call())
    assert pipeline.queue.qsize() == 5 and pipeline.overflowed == 3
    await writer.aclose()
