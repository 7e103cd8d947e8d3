"""The shared graph: processes hand their calls to one owner over a bus and get links back.

Built on MemoryGraphBus (the Redis bus's twin; tests/graph/test_bus.py runs the real one) and
in-memory sinks: two "processes" (pipeline + client + owner each) on one event loop.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from proxy.graph import Linker, MemoryLineageIndex
from proxy.graph.bus import MemoryGraphBus
from proxy.graph.identity import AgentDirectory, Identifier
from proxy.graph.runs import RunResolver
from proxy.graphowner import GraphClient, GraphOwner, SharedRunResolver
from proxy.pipeline import Pipeline
from proxy.store.spool import Spool
from proxy.store.writer import BatchWriter, MemorySink
from tests.graph.factory import DRAFT, PLAN, make_call


def _linker() -> tuple[Linker, RunResolver]:
    index = MemoryLineageIndex()
    identifier = Identifier(AgentDirectory(claims=index))
    linker = Linker(index, identifier=identifier)
    return linker, RunResolver(index, identifier, placer=linker)


class Process:
    """One replica's graph side: pipeline, client, owner loop, request-path resolver."""

    def __init__(self, bus: MemoryGraphBus, tmp: Path, name: str, *, link_timeout_s: float = 5.0,
                 place_timeout_s: float = 0.5) -> None:
        self.sink = MemorySink()
        self.writer = BatchWriter(self.sink, Spool(tmp / name), flush_interval=0.01)
        local, local_resolver = _linker()
        self.client = GraphClient(bus, me=name, place_timeout_s=place_timeout_s, retry_s=0.2)
        self.pipeline = Pipeline(self.writer, policy="full", max_bytes=256 * 1024, linker=local,
                                 remote=self.client, link_timeout_s=link_timeout_s)
        self.client.sink = self.pipeline
        linker, resolver = _linker()
        self.owner = GraphOwner(bus, me=name, linker=linker, resolver=resolver, submit=self.writer.submit,
                                lease_ms=300)
        self.resolver = SharedRunResolver(local_resolver, self.client)

    async def start(self, *, owner: bool = True) -> Process:
        self.writer.start()
        await self.pipeline.start()
        await self.client.start()
        if owner:
            await self.owner.start()
        return self

    def row(self, call_id: str) -> dict[str, object]:
        return self.sink.tables["calls"][call_id]

    async def stored(self, call_id: str, *, linked: bool = True, within_s: float = 5.0) -> dict[str, object]:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            await self.writer.flush(1)
            row = self.sink.tables["calls"].get(call_id)
            if row is not None and (row.get("run_id") is not None or not linked):
                return row
            await asyncio.sleep(0.02)
        raise AssertionError(f"{call_id} not stored{' linked' if linked else ''} within {within_s} s")

    def edges(self) -> set[tuple[object, object, object]]:
        return {(e["source_call_id"], e["target_call_id"], e["kind"]) for e in self.sink.tables["edges"].values()}

    async def aclose(self) -> None:
        await self.client.flush()
        await self.pipeline.aclose()
        await self.client.aclose()
        await self.owner.aclose()
        await self.writer.aclose()


def planner(now: float) -> object:
    return make_call("p1", system="You are the planner.", user="Plan a report on heat pumps.", output=PLAN,
                     started_at=now, ended_at=now + 1)


def writer_call(now: float) -> object:
    return make_call("w1", system="You are the writer.", user="Write the report from this plan:\n" + PLAN,
                     output=DRAFT, started_at=now + 2, ended_at=now + 3)


@pytest.fixture
async def two(tmp_path: Path) -> object:
    bus = MemoryGraphBus()
    a, b = Process(bus, tmp_path, "a"), Process(bus, tmp_path, "b")
    await a.start()
    await b.start()
    yield bus, a, b
    await a.aclose()
    await b.aclose()


async def test_a_handoff_across_two_processes_is_linked_into_one_run(two: tuple) -> None:
    _, a, b = two
    now = time.time()
    p, w = planner(now), writer_call(now)
    a.pipeline.submit(p)
    assert (await a.stored("p1"))["run_id"] == "p1"
    b.pipeline.submit(w)

    row = await b.stored("w1")

    assert row["run_id"] == "p1", "the writer joins the planner's run though another process answered it"
    assert ("p1", "w1", "handoff") in b.edges()
    assert a.pipeline.linked_remote == 1 and b.pipeline.linked_remote == 1


async def test_a_workers_first_call_is_placed_by_the_owner_before_forwarding(two: tuple) -> None:
    _, a, b = two
    now = time.time()
    a.pipeline.submit(planner(now))
    await a.stored("p1")
    w = writer_call(now)
    w.ended_at, w.outcome = None, None  # a request, not answered yet

    await b.resolver.resolve(w)

    assert w.run_id == "p1", "placed in the planner's run, which only process a has seen"
    assert b.client.placed == 1 and b.client.place_timeouts == 0


async def test_without_an_owner_placement_times_out_counted_and_the_call_goes_unplaced(tmp_path: Path) -> None:
    bus = MemoryGraphBus()
    lone = await Process(bus, tmp_path, "lone", place_timeout_s=0.05).start(owner=False)
    w = writer_call(time.time())

    await lone.resolver.resolve(w)

    assert w.run_id is None and w.agent is not None  # named locally, run left to the linker
    assert lone.client.place_timeouts == 1
    await lone.aclose()


async def test_an_unanswered_call_is_stored_unlinked_then_amended_when_the_owner_comes(tmp_path: Path) -> None:
    bus = MemoryGraphBus()
    proc = await Process(bus, tmp_path, "late", link_timeout_s=0.1).start(owner=False)
    proc.pipeline.submit(planner(time.time()))

    first = await proc.stored("p1", linked=False)
    assert first["run_id"] is None and proc.pipeline.link_timeouts == 1
    await proc.owner.start()

    assert (await proc.stored("p1"))["run_id"] == "p1"
    assert proc.pipeline.linked_late == 1
    await proc.aclose()


async def test_with_the_bus_down_calls_are_linked_locally_and_counted(two: tuple) -> None:
    bus, a, _ = two
    bus.down = True
    a.pipeline.submit(planner(time.time()))

    row = await a.stored("p1")

    assert row["run_id"] == "p1"
    assert a.pipeline.linked_local == 1 and a.client.send_failures == 1


async def test_a_new_owner_replays_the_log_and_links_as_the_old_one_would(two: tuple) -> None:
    _, a, b = two
    now = time.time()
    owner = a if a.owner.leading else b
    other = b if owner is a else a
    owner.pipeline.submit(planner(now))
    await owner.stored("p1")
    await owner.owner.aclose()  # the owner's process dies; its lease lapses

    other.pipeline.submit(writer_call(now))
    row = await other.stored("w1")

    assert other.owner.leading and other.owner.replayed >= 1
    assert row["run_id"] == "p1" and ("p1", "w1", "handoff") in other.edges()


async def test_an_agent_renamed_on_one_replica_is_renamed_by_the_owner(two: tuple) -> None:
    _, a, b = two
    now = time.time()
    a.pipeline.submit(planner(now))
    name = (await a.stored("p1"))["agent"]
    b.client.rename(str(name), "lead-planner", merge=False)
    again = make_call("p2", system="You are the planner.", user="Plan a talk on tidal power.", output="1. Tides",
                      started_at=now + 5, ended_at=now + 6)

    b.pipeline.submit(again)

    assert (await b.stored("p2"))["agent"] == "lead-planner"
