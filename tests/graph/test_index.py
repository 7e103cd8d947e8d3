"""MemoryLineageIndex: bounded by count and event-time TTL, boilerplate never matches."""

from __future__ import annotations

from proxy.graph.index import LineageIndex, MemoryLineageIndex
from proxy.graph.model import CallRecord, Ref


def record(cid: str, fps: tuple[int, ...], ended: float = 1.0) -> CallRecord:
    return CallRecord(cid, "agent", cid, "run", 0.0, ended, "stop", 100, fps, (len(fps),))


def ref(cid: str, ended: float = 1.0) -> Ref:
    return Ref(cid, cid, "run", "agent", ended, "00")


def test_memory_index_satisfies_the_protocol() -> None:
    index: LineageIndex = MemoryLineageIndex()
    assert index.get_refs(["missing"]) == [None]


def test_lookup_returns_posting_calls() -> None:
    index = MemoryLineageIndex()
    index.add_call(record("a", (1, 2, 3)))
    index.add_call(record("b", (3, 4)))
    assert index.lookup({2, 3, 9}) == {2: ("a",), 3: ("a", "b")}


def test_boilerplate_hashes_never_match() -> None:
    index = MemoryLineageIndex(df_max=2)
    for i in range(3):
        index.add_call(record(f"c{i}", (7, 100 + i)))
    assert 7 not in index.lookup({7})
    assert index.lookup({101}) == {101: ("c1",)}


def test_oldest_calls_are_evicted_and_unposted() -> None:
    index = MemoryLineageIndex(max_calls=2)
    for i in range(3):
        index.add_call(record(f"c{i}", (i,)))
    assert index.get_calls(["c0", "c1", "c2"]).keys() == {"c1", "c2"}
    assert index.lookup({0, 1}) == {1: ("c1",)}


def test_ttl_runs_on_event_time() -> None:
    index = MemoryLineageIndex(ttl_s=10.0)
    index.add_call(record("old", (1,), ended=0.0))
    index.put_refs({"h:old": ref("old", ended=0.0)})
    index.add_call(record("new", (2,), ended=20.0))
    index.put_refs({"h:new": ref("new", ended=20.0)})
    assert index.get_calls(["old"]) == {}
    assert index.get_refs(["h:old", "h:new"])[0] is None


def test_merged_runs_answer_as_their_root() -> None:
    index = MemoryLineageIndex()
    index.touch_run("r1", started_at=0.0, ended_at=5.0, pairs=[("a", "b")])
    index.touch_run("r2", started_at=2.0, ended_at=9.0, pairs=[("b", "c")])
    index.add_run_seen("r2", [42])
    state = index.merge_runs("r1", ["r2"])
    assert (state.run_id, state.last_seen, state.pairs) == ("r1", 9.0, frozenset({("a", "b"), ("b", "c")}))
    assert index.get_run("r2") == state
    assert index.run_seen("r2", {42, 43}) == {42}
    index.touch_run("r2", started_at=10.0, ended_at=11.0)
    assert index.get_run("r1") == index.get_run("r2") and state.run_id == "r1"


def test_idle_runs_close_once() -> None:
    index = MemoryLineageIndex()
    index.touch_run("quiet", started_at=0.0, ended_at=1.0)
    index.touch_run("busy", started_at=0.0, ended_at=50.0)
    assert index.close_idle_runs(idle_before=10.0) == ["quiet"]
    assert index.close_idle_runs(idle_before=10.0) == []
    state = index.get_run("quiet")
    assert state is not None and state.closed


def test_thread_sources_accumulate() -> None:
    index = MemoryLineageIndex()
    index.add_thread_sources("t", ["a"])
    index.add_thread_sources("t", ["b", "a"])
    assert index.thread_sources(["t", "u"]) == {"t": frozenset({"a", "b"})}


def test_first_claim_owns_a_name() -> None:
    index = MemoryLineageIndex()
    assert index.claim_name("researcher", "fp1") == "fp1"
    assert index.claim_name("researcher", "fp2") == "fp1"


def test_a_frozenset_of_seen_inputs_is_shared_until_its_run_adds_more() -> None:
    index = MemoryLineageIndex()
    for run in ("r1", "r2", "r3"):
        index.touch_run(run, started_at=0.0, ended_at=1.0)
    shared = frozenset({1, 2, 3})
    for run in ("r1", "r2", "r3"):
        index.add_run_seen(run, shared)
    index.add_run_seen("r2", [4])
    index.merge_runs("r3", ["r2"])
    assert index.run_seen("r1", {1, 4, 9}) == {1}
    assert index.run_seen("r3", {1, 4, 9}) == {1, 4}
    assert shared == {1, 2, 3}
