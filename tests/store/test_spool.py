"""The spool keeps records on disk in submission order and survives restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.store.rows import Record
from proxy.store.spool import Spool, SpoolBusy


def spooled_files(directory: Path, pattern: str = "*.jsonl") -> list[Path]:
    return sorted(directory.glob(pattern))


def read(path: Path) -> bytes:
    return path.read_bytes()


def rec(i: int) -> Record:
    return Record(calls=[{"id": f"c{i}"}])


async def drain(spool: Spool, batch: int = 3) -> list[str]:
    """Replay everything the way the writer does, returning call ids in order."""
    ids: list[str] = []
    while (segment := spool.oldest()) is not None:
        records, end, exhausted = await spool.read(segment, batch)
        ids += [r.calls[0]["id"] for r in records]
        spool.advance(segment, end)
        if exhausted:
            spool.remove(segment)
    return ids


async def test_appended_records_replay_in_order_and_then_the_spool_is_empty(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(7):
        spool.append(rec(i))
    assert spool.pending
    assert await drain(spool) == [f"c{i}" for i in range(7)]
    assert not spool.pending
    assert spooled_files(tmp_path) == []


async def test_prepended_records_replay_before_appended_ones(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(rec(3))
    await spool.prepend([rec(1), rec(2)])
    await spool.prepend([rec(0)])
    spool.append(rec(4))
    assert await drain(spool) == ["c0", "c1", "c2", "c3", "c4"]


async def test_a_new_spool_adopts_what_a_previous_process_left(tmp_path: Path) -> None:
    first = Spool(tmp_path, segment_bytes=40)  # tiny segments: several files
    for i in range(5):
        first.append(rec(i))
    first.close()
    second = Spool(tmp_path)
    second.append(rec(5))
    await second.prepend([rec(-1)])
    assert await drain(second) == ["c-1", "c0", "c1", "c2", "c3", "c4", "c5"]


async def test_a_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(rec(0))
    spool.append(rec(1))
    spool.close()
    (segment,) = spooled_files(tmp_path)
    with segment.open("ab") as f:  # noqa: ASYNC230 - a test simulating a crash mid-write
        f.write(b'{"calls": [{"id": "c2"')
    reopened = Spool(tmp_path)
    assert await drain(reopened) == ["c0", "c1"]
    assert reopened.corrupt_lines == 1


async def test_sync_makes_appends_visible_on_disk(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(rec(0))
    await spool.sync()
    (segment,) = spooled_files(tmp_path)
    assert b'"c0"' in read(segment)


async def test_rejected_records_are_kept_but_never_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    path = await spool.reject([rec(9)])
    spool.close()
    assert b'"c9"' in read(path)
    assert not Spool(tmp_path).pending


def test_two_writers_cannot_share_a_spool_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    with pytest.raises(SpoolBusy, match="in use"):
        Spool(tmp_path)
    first.close()
    Spool(tmp_path).close()  # free again once the owner closed it
