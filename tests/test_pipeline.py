"""Pipeline: the bounded hand-over from the request path to linking and storage."""

from __future__ import annotations

import asyncio
from pathlib import Path

from proxy.call import Completion
from proxy.pipeline import Pipeline
from proxy.store.spool import Spool
from proxy.store.writer import BatchWriter, MemorySink
from tests.graph.factory import DRAFT, PLAN
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




async def test_calls_stored_unlinked_under_a_backlog_are_linked_once_it_drains(tmp_path: Path) -> None:
    from proxy.graph import Linker, MemoryLineageIndex
    from tests.graph.factory import make_call as chat

    sink = MemorySink()
    writer = BatchWriter(sink, Spool(tmp_path), flush_interval=0.01)
    writer.start()
    pipeline = Pipeline(writer, policy="redacted", max_bytes=256 * 1024, maxsize=1,
                        linker=Linker(MemoryLineageIndex()))  # fmt: skip
    planner = chat("p", system="You are the planner.", user="heat pumps", output=PLAN)
    writer_call = chat("w", system="You are the writer.", user="Write up:\n" + PLAN, output=DRAFT,
                       started_at=2.0, ended_at=3.0)  # fmt: skip
    editor = chat("e", system="You are the editor.", user="Edit:\n" + DRAFT, started_at=4.0, ended_at=5.0)
    for call in (planner, writer_call, editor):  # the worker is not running: two of three overflow
        pipeline.submit(call)
    assert pipeline.overflowed == 2 and len(pipeline.lagging) == 2
    await pipeline.start()
    for _ in range(500):  # the backlog drains: the lane is linked behind the queue
        if pipeline.processed == 1 and not pipeline.lagging:
            break
        await asyncio.sleep(0.01)
    await pipeline.aclose()
    assert await writer.flush(5)
    rows = sink.tables["calls"]
    assert {rows[c]["run_id"] for c in ("p", "w", "e")} == {"p"}, "every call ends up linked into its run"
    edges = {(e["source_call_id"], e["target_call_id"], e["kind"]) for e in sink.tables["edges"].values()}
    assert edges == {("p", "w", "handoff"), ("w", "e", "handoff")}
    assert pipeline.linked_late == 2 and pipeline.unlinked == 0
    await writer.aclose()


async def test_a_lagging_lane_past_its_bound_counts_the_calls_it_cannot_link(tmp_path: Path) -> None:
    from proxy.graph import Linker, MemoryLineageIndex

    pipeline, writer, _ = make_pipeline(tmp_path, maxsize=1, max_lagging_chars=10)
    pipeline.linker = Linker(MemoryLineageIndex())
    for _ in range(3):
        pipeline.submit(make_call(completion=Completion("a reply longer than ten characters")))
    assert pipeline.overflowed == 2 and pipeline.unlinked == 2 and not pipeline.lagging
    await writer.aclose()
