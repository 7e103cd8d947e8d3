from __future__ import annotations

from proxy.guards.counters import CounterStore
from tests.guards.factory import user
from tests.guards.loopkit import chain_of, flagged, turn

STALL = "{name: stall, kind: loop, detect: stall, scope: run, max_repeats: 1, novelty: 0.3, action: flag}"


def status(i: int) -> str:
    return (
        f"Status of the nightly build at 2025-01-0{1 + i % 9}T10:{10 + i}:00Z: still running, {17 * i % 100}% "
        f"complete, {300 - i} tasks pending (https://ci.example/jobs/{4000 + i}). Waiting before the next check."
    )


def fresh(i: int) -> str:
    topics = (
        "copper harbor tariffs shaped coastal trade routes",
        "glacier melt feeds the reservoir behind the dam",
        "vineyard terraces climb the volcanic plateau slopes",
        "railway sawmill towns grew along the canyon river",
        "monsoon rains flood the delta estuary wetlands",
    )
    return f"Finding {i}: {topics[i % len(topics)]}; archive records confirm it."


async def test_status_lines_whose_figures_change_are_a_stall(store: CounterStore) -> None:
    chain = chain_of(store, STALL)
    calls = [await turn(chain, [user(f"check {i}")], status(i)) for i in range(4)]
    assert [bool(flagged(c)) for c in calls] == [False, False, True, True]


async def test_outputs_with_new_content_are_not_a_stall(store: CounterStore) -> None:
    chain = chain_of(store, STALL)
    calls = [await turn(chain, [user(f"next {i}")], fresh(i)) for i in range(5)]
    assert not any(flagged(c) for c in calls)


async def test_stall_event_names_the_calls_and_their_novelty(store: CounterStore) -> None:
    chain = chain_of(store, STALL)
    calls = [await turn(chain, [user(f"check {i}")], status(i)) for i in range(3)]
    (event,) = flagged(calls[2])
    assert event["data"]["calls"] == [calls[1].id, calls[2].id]
    assert event["data"]["novelty"] == [0.0, 0.0] and event["data"]["threshold"] == 0.3
    assert "stall" in event["reason"]


async def test_short_turns_neither_count_nor_break_a_stall(store: CounterStore) -> None:
    chain = chain_of(store, STALL)
    await turn(chain, [user("a")], status(0))
    await turn(chain, [user("b")], status(1))
    short = await turn(chain, [user("c")], "TERMINATE")
    after = await turn(chain, [user("d")], status(2))
    assert not flagged(short) and flagged(after)[0]["data"]["occurrence"] == 2


async def test_the_answer_to_a_resent_request_is_not_counted(store: CounterStore) -> None:
    chain = chain_of(store, STALL)
    await turn(chain, [user("first")], status(0))
    await turn(chain, [user("same request")], status(1))
    again = await turn(chain, [user("same request")], status(2))
    assert not flagged(again)


async def test_runs_do_not_share_a_stall(store: CounterStore) -> None:
    chain = chain_of(store, STALL)
    await turn(chain, [user("a")], status(0), run_id="run-a")
    await turn(chain, [user("b")], status(1), run_id="run-a")
    other = await turn(chain, [user("c")], status(2), run_id="run-b")
    assert not flagged(other)


async def test_a_deny_reached_by_an_output_refuses_the_next_request(store: CounterStore) -> None:
    chain = chain_of(store, STALL.replace("action: flag", "deny_after: 1, action: flag"))
    calls = [await turn(chain, [user(f"check {i}")], status(i)) for i in range(4)]
    assert [e["action"] for c in calls for e in flagged(c)] == ["flag", "flag"]
    assert "next request will be refused" in flagged(calls[3])[0]["reason"]
    nxt = await turn(chain, [user("check again")], status(9))
    assert flagged(nxt)[0]["action"] == "deny" and flagged(nxt)[0]["hook"] == "request"
