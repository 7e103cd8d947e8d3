"""Real frameworks' recorded traffic (bench/frameworks/record.py) replayed through the proxy.

Each fixture holds several runs of one framework system (smolagents, pydantic-ai, AutoGen
AgentChat, AG2, CrewAI), recorded once with the real framework against a scripted fake model;
the frameworks are not needed here.  Replayed with the `openai` SDK at plain /v1 (no agent or run
header), all runs of a fixture at once, streaming and not, the proxy must forward every request
byte for byte and record every call.  The graph it recovers is scored (agents ARI, runs ARI,
flow F1) and printed; exact graphs are asserted with `assert_graph` once the linker handles
these systems (issue 12).
"""

from __future__ import annotations

import pytest

from tests.fake_upstream import FakeUpstream
from tests.graph_e2e.frameworks import (
    Fixture,
    assert_graph,
    fixtures,
    inferred_from_api,
    link_in_process,
    replay,
    score,
    unfaithful,
)
from tests.graph_e2e.graphs import Api
from tests.proxyserver import ProxyServer

FIXTURES = fixtures()
IDS = [f.name for f in FIXTURES]
TEAM = {("planner", "writer"), ("planner", "critic"), ("writer", "critic"), ("critic", "writer")}
SELECTED = {("planner", "{s}"), ("writer", "{s}"), ("critic", "{s}"), ("{s}", "planner"), ("{s}", "writer"),
            ("{s}", "critic")}
# The true agent-pair flow of every run, as the truth derivation reads it from the recording.
FLOW = {
    "smolagents_toolcalling": {("manager", "researcher"), ("researcher", "manager"), ("manager", "fact_checker"),
                               ("fact_checker", "manager")},
    "smolagents_code": {("manager", "analyst"), ("analyst", "manager"), ("manager", "statistician"),
                        ("statistician", "manager")},
    "pydantic_ai_delegation": {("coordinator", "researcher"), ("researcher", "coordinator")},
    "pydantic_ai_delegation_bare": {("coordinator", "researcher"), ("researcher", "coordinator")},
    "autogen_roundrobin": TEAM | {("critic", "planner"), ("writer", "planner")},
    "autogen_selector": TEAM | {(a.format(s="selector"), b.format(s="selector")) for a, b in SELECTED},
    "ag2_groupchat": TEAM | {(a.format(s="manager"), b.format(s="manager")) for a, b in SELECTED},
    "ag2_groupchat_default": TEAM | {(a.format(s="manager"), b.format(s="manager")) for a, b in SELECTED},
    "crewai_sequential": {("researcher", "analyst"), ("researcher", "writer"), ("analyst", "writer")},
    "crewai_hierarchical": {("manager", "researcher"), ("researcher", "manager"), ("manager", "analyst"),
                            ("analyst", "manager"), ("manager", "writer"), ("writer", "manager")},
}


# (agents ARI, runs ARI, flow F1) the recovered graph must reach: exact in process.  Live, the request
# path places calls before the linker has seen their sources and replayed runs overlap; what stays open
# (README, "How the graph is recovered"): twin runs on one task text whose first selection is ambiguous
# (AG2), and a speaker's first turn when two chats with identical transcripts are pending at once.
EXACT = (1.0, 1.0, 1.0)
FLOOR: dict[str, tuple[float, float, float]] = {}
LIVE_FLOOR = {
    "ag2_groupchat": (1.0, 0.85, 0.9),
    "ag2_groupchat_default": (1.0, 0.85, 0.9),
    "autogen_roundrobin": (1.0, 1.0, 0.95),
    "autogen_selector": (1.0, 0.85, 0.9),
    "crewai_hierarchical": (0.95, 0.95, 0.95),
    "crewai_sequential": (1.0, 1.0, 0.95),
    "pydantic_ai_delegation": (1.0, 0.95, 0.95),
    "pydantic_ai_delegation_bare": (1.0, 0.95, 0.95),
    "smolagents_code": (1.0, 0.9, 0.95),
    "smolagents_toolcalling": (1.0, 0.9, 0.95),
}


def test_every_framework_is_recorded() -> None:
    assert {f.header["framework"] for f in FIXTURES} >= {"smolagents", "pydantic_ai", "autogen", "ag2"}
    for f in FIXTURES:
        assert len(f.runs) >= 3, f"{f.name}: fewer than 3 runs"
        assert f.truth.pairs, f"{f.name}: no flow between agents in the recording"


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_truth_reads_the_frameworks_flow(fixture: Fixture) -> None:
    per_run: dict[str, set[tuple[str, str]]] = {run: set() for run in fixture.runs}
    for run, source, target in fixture.truth.pairs:
        per_run[run].add((source, target))

    assert per_run == {run: FLOW[fixture.name] for run in fixture.runs}


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_truth_threads_follow_each_agents_conversation(fixture: Fixture) -> None:
    agent_of = {r.id: r.agent for r in fixture.records}
    assert all(agent_of[a] == agent_of[b] for a, b in fixture.truth.threads)


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_fixture_runs_are_distinct_or_twins(fixture: Fixture) -> None:
    """Every run has its own content; the only shared requests are twin runs' first ones."""
    keys: dict[str, set[str]] = {}
    for r in fixture.records:
        keys.setdefault(r.key, set()).add(r.run)
    tasks = {run["id"]: run["task"] for run in fixture.header["runs"]}
    for runs in keys.values():
        assert len({tasks[r] for r in runs}) == 1, f"{fixture.name}: runs {runs} share a request"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_replay_forwards_every_request_faithfully(
    px: ProxyServer, model: FakeUpstream, fixture: Fixture, stream: bool, record_property: pytest.RecordProperty,
) -> None:
    replayed = replay(fixture, px.url, model, stream=stream)

    assert not replayed.errors, f"requests failed: {replayed.errors}"
    assert not replayed.misses, f"the fake model got requests no record has: {replayed.misses[:2]}"
    assert len(replayed.answered) == len(fixture.records)
    assert unfaithful(replayed) == []
    with Api(px) as api:
        inferred = inferred_from_api(api, replayed)
    s = score(fixture, inferred)
    assert s.linked == len(fixture.records), f"{s.linked} of {len(fixture.records)} calls are in the graph"
    record_property("graph", s.row())
    print(f"\n{fixture.name} [{'sse' if stream else 'json'}] live: {s.row()}")
    assert_graph(fixture, *LIVE_FLOOR.get(fixture.name, EXACT), inferred=inferred)


@pytest.mark.parametrize("fixture", FIXTURES, ids=IDS)
def test_in_process_linker_places_every_call(fixture: Fixture, record_property: pytest.RecordProperty) -> None:
    inferred = link_in_process(fixture)

    s = score(fixture, inferred)
    assert s.linked == len(fixture.records)
    record_property("graph", s.row())
    print(f"\n{fixture.name} in-process: {s.row()}")
    assert_graph(fixture, *FLOOR.get(fixture.name, EXACT), inferred=inferred)
