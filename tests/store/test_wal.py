"""WriteAheadLog: answered calls reach disk off the request path, covered segments are deleted,
leftovers are replayed through the spool without duplicates."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from proxy.pipeline import Pipeline
from proxy.store.rows import Record
from proxy.store.spool import Spool
from proxy.store.wal import MemoryJournal, WriteAheadLog
from proxy.store.writer import BatchWriter, MemorySink
from tests.store.factories import make_call, make_record


def make_wal(directory: Path, **overrides: Any) -> WriteAheadLog:
    wal = WriteAheadLog(directory, **({"interval_s": 0.001} | overrides))
    wal.start()
    return wal


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


def wal_lines(directory: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for p in sorted(directory.glob("wal-*.jsonl")) for line in p.read_bytes().splitlines()]


def linked(record: Record, agent: str = "planner", run_id: str = "run-1") -> Record:
    """What the pipeline does to a call's record before handing it to the writer."""
    row = record.calls[0]
    row["agent"], row["run_id"], row["flags"] = agent, run_id, ["loop"]
    record.edges = [{"run_id": run_id, "source_call_id": "earlier", "target_call_id": row["id"],
                     "kind": "continuation", "evidence": {}, "created_at": row["started_at"]}]
    return record


def test_an_answered_call_is_on_disk_without_the_caller_waiting(tmp_path: Path) -> None:
    wal = make_wal(tmp_path)
    record = make_record()
    started = time.perf_counter()
    wal.answered(record)
    assert time.perf_counter() - started < 0.001  # a deque append: no serialising, no I/O here
    wait_for(lambda: wal.logged == 1)
    assert wal_lines(tmp_path) == [orjson.loads(orjson.dumps(record.to_json()))]
    wal.close()


def test_many_answers_share_one_fsync(tmp_path: Path) -> None:
    wal = make_wal(tmp_path, interval_s=0.05)
    for _ in range(200):
        wal.answered(make_record())
    wait_for(lambda: wal.logged == 200)
    assert wal.fsyncs < 20
    wal.close()


def test_what_linking_adds_is_logged_as_updates_not_as_a_second_row() -> None:
    journal = MemoryJournal()
    record = make_record()
    journal.answered(record)
    covered = journal.covers(linked(record))
    (_, answered), (_, derived) = journal.entries
    assert covered == [1, 2]
    assert "calls" in answered and "calls" not in derived and "guard_events" not in derived
    assert derived["call_updates"] == [{"id": record.calls[0]["id"], "agent": "planner", "run_id": "run-1",
                                        "agent_source": None, "flags": ["loop"], "tainted_by": None,
                                        "depth": None, "cost_usd": None}]
    assert derived["edges"][0]["target_call_id"] == record.calls[0]["id"]


def test_a_call_that_was_never_answered_keeps_its_full_row_in_the_log() -> None:
    journal = MemoryJournal()
    journal.covers(make_record())
    assert "calls" in journal.entries[0][1]


def test_the_watermark_is_the_oldest_entry_not_released() -> None:
    journal = MemoryJournal()
    for _ in range(3):
        journal.answered(make_record())
    journal.release([2, 3])
    assert journal.watermark == 1
    journal.release([1])
    assert (journal.watermark, journal.outstanding) == (4, 0)


def test_sealed_segments_are_deleted_once_everything_in_them_is_released(tmp_path: Path) -> None:
    wal = make_wal(tmp_path, segment_age_s=0.0)  # every group commit seals its segment
    wal.answered(make_record())
    wait_for(lambda: wal.logged == 1)
    wal.answered(make_record())
    wait_for(lambda: wal.logged == 2 and len(list(tmp_path.glob("wal-*"))) == 2)
    wal.release([1])
    wait_for(lambda: len(list(tmp_path.glob("wal-*"))) == 1)
    wal.release([2])
    wal.close()
    assert list(tmp_path.glob("wal-*")) == []


async def test_the_writer_releases_entries_once_the_database_committed_them(tmp_path: Path) -> None:
    journal = MemoryJournal()
    writer = BatchWriter(MemorySink(), Spool(tmp_path), flush_interval=0.01, journal=journal)
    writer.start()
    record = make_record()
    journal.answered(record)
    writer.submit(linked(record))
    assert journal.outstanding == 2
    assert await writer.flush(5)
    assert journal.outstanding == 0
    await writer.aclose()


async def test_the_writer_releases_entries_spooled_while_the_database_is_down(tmp_path: Path) -> None:
    journal, sink = MemoryJournal(), MemorySink()
    sink.fail_with = OSError("database down")
    writer = BatchWriter(sink, Spool(tmp_path), flush_interval=0.01, backoff=(5.0, 5.0), journal=journal)
    writer.start()
    writer.submit(make_record())
    for _ in range(500):
        await asyncio.sleep(0.01)
        if not journal.outstanding:
            break
    assert journal.outstanding == 0 and writer.spooled == 1  # durable in the spool instead
    await writer.aclose()


async def test_a_killed_process_leaves_segments_the_next_one_replays_once(tmp_path: Path) -> None:
    wal_dir, spool_dir = tmp_path / "wal", tmp_path / "spool"
    written, lost = make_record(), make_record()
    killed = make_wal(wal_dir)
    for record in (written, lost):
        killed.answered(record)
    killed.covers(linked(written))
    killed.covers(linked(lost, agent="coder"))
    wait_for(lambda: killed.logged == 4)
    killed._stop = True  # kill -9: nothing released, nothing checkpointed, the lock dies with it
    assert killed._lock is not None
    killed._lock.close()

    sink = MemorySink()
    await sink.write([written])  # this one reached the database before the kill
    spool = Spool(spool_dir)
    restarted = WriteAheadLog(wal_dir)
    assert restarted.recover(spool) == 1 and list(wal_dir.glob("wal-*")) == []
    writer = BatchWriter(sink, spool, flush_interval=0.01)
    writer.start()
    assert await writer.flush(5)
    calls = sink.tables["calls"]
    assert set(calls) == {written.calls[0]["id"], lost.calls[0]["id"]}
    assert calls[lost.calls[0]["id"]]["agent"] == "coder"  # the link, replayed after the row
    assert len(sink.tables["edges"]) == 2
    await writer.aclose()
    restarted.close()


async def test_the_pipeline_logs_the_same_record_it_writes(tmp_path: Path) -> None:
    journal, sink = MemoryJournal(), MemorySink()
    writer = BatchWriter(sink, Spool(tmp_path), flush_interval=0.01, journal=journal)
    writer.start()
    pipeline = Pipeline(writer, policy="redacted", max_bytes=4096, answered=journal.answered)
    await pipeline.start()
    call = make_call()
    pipeline.submit(call)
    assert journal.entries[0][1]["calls"][0]["id"] == call.id  # logged before it was queued
    await pipeline.aclose()
    assert await writer.flush(5)
    assert call.id in sink.tables["calls"] and journal.outstanding == 0
    await writer.aclose()
