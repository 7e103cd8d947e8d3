from __future__ import annotations

from proxy.guards.counters import CounterStore
from tests.guards.factory import assistant, system, user
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


AGENT_STALL = "{name: stall, kind: loop, detect: stall, scope: agent_run, max_repeats: 1, novelty: 0.25, action: flag}"
CLOSING = ("Waiting before the next check.", "I will check again shortly.", "Pausing until the job reports completion.",
           "Nothing to do until it completes.")


async def test_status_lines_in_new_closing_words_are_a_stall(store: CounterStore) -> None:
    chain = chain_of(store, AGENT_STALL)
    calls = [await turn(chain, [user(f"check {i}")], status(i).replace(CLOSING[0], CLOSING[i])) for i in range(3)]
    assert [bool(flagged(c)) for c in calls] == [False, False, True]


async def test_two_agents_circling_in_a_runless_chat_are_a_stall(store: CounterStore) -> None:
    chain = chain_of(store, AGENT_STALL)
    writer = (
        "I revised the harbor census note to address the ferry tariff concern.",
        "Updated the harbor census draft; the ferry tariff issue should now be handled.",
        "New version of the harbor census note attached, covering the ferry tariff problem.",
    )
    critic = (
        "The harbor census note still does not handle the ferry tariff concern. Please revise.",
        "Still missing: the ferry tariff issue in the harbor census draft needs another pass.",
        "This harbor census version leaves the ferry tariff problem open; revise again.",
    )
    chat: list[tuple[str, str]] = []
    calls = []
    for w, c in zip(writer, critic, strict=True):
        for agent, text in (("writer", w), ("critic", c)):
            msgs = [system(f"You are {agent} in a group chat."), user("Write a note on the harbor census.")]
            msgs += [assistant(t) if a == agent else user(f"{a}: {t}") for a, t in chat]
            calls.append(await turn(chain, msgs, text, agent=agent, run_id=None))
            chat.append((agent, text))
    assert not any(flagged(c) for c in calls[:2]) and any(flagged(c) for c in calls[2:5])


async def test_news_from_another_agent_ends_a_streak(store: CounterStore) -> None:
    chain = chain_of(store, AGENT_STALL)
    await turn(chain, [user("a")], status(0), agent="poller")
    await turn(chain, [user("b")], status(1), agent="poller")
    await turn(chain, [user("c")], fresh(1), agent="analyst")
    after = await turn(chain, [user("d")], status(2), agent="poller")
    assert not flagged(after)


async def test_an_instruction_reusing_the_findings_it_answers_is_not_stale(store: CounterStore) -> None:
    chain = chain_of(store, AGENT_STALL)
    ledger = "Progress ledger: request satisfied: no. Next speaker: web_surfer. Instruction: {}"
    await turn(chain, [user("go")], ledger.format("get the annual rainfall of the Ostvo delta wetlands"), agent="lead")
    await turn(chain, [user("w")], fresh(4) + " Ostvo delta wetlands rainfall 1,400 mm.", agent="web_surfer")
    nxt = await turn(chain, [user("r")], ledger.format("now find the total area of the Ostvo delta wetlands"),
                     agent="lead")
    retry = await turn(chain, [user("r2")], ledger.format("find the Ostvo wetlands' total area in another atlas"),
                       agent="lead")
    assert not flagged(nxt) and not flagged(retry)
