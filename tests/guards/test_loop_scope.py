"""A call with no run yet is scoped to its own conversation, never to a bucket shared with
unrelated calls."""

from __future__ import annotations

from proxy.guards.counters import CounterStore
from tests.guards.factory import system, user
from tests.guards.loopkit import chain_of, flagged, turn

NO_PROGRESS = "{name: np, kind: loop, detect: no_progress, max_repeats: 1, similarity: 0.9, action: flag}"
ANSWER = "TERMINATE: the summary above answers the question, nothing more to add here today"


def conversation(task: str) -> list:
    return [system("You are the assistant in a group chat."), user(task)]


async def test_runless_conversations_do_not_share_loop_state(store: CounterStore) -> None:
    chain = chain_of(store, NO_PROGRESS)
    await turn(chain, conversation("Plan a trip to Lisbon"), ANSWER, run_id=None, agent="assistant")
    other = await turn(chain, conversation("Review the Q3 budget"), ANSWER, run_id=None, agent="assistant")
    assert not flagged(other)


async def test_runless_calls_of_one_conversation_share_loop_state(store: CounterStore) -> None:
    chain = chain_of(store, NO_PROGRESS)
    msgs = conversation("Plan a trip to Lisbon")
    await turn(chain, msgs, ANSWER, run_id=None, agent="assistant")
    again = await turn(chain, [*msgs, user("and?")], ANSWER, run_id=None, agent="assistant")
    assert flagged(again)


async def test_runless_reason_names_the_conversation_not_a_run(store: CounterStore) -> None:
    chain = chain_of(store, NO_PROGRESS)
    msgs = conversation("Plan a trip to Lisbon")
    await turn(chain, msgs, ANSWER, run_id=None, agent="assistant")
    again = await turn(chain, [*msgs, user("and?")], ANSWER, run_id=None, agent="assistant")
    (event,) = flagged(again)
    assert "this conversation of agent 'assistant'" in event["reason"] and "'?'" not in event["reason"]


async def test_calls_with_a_run_still_share_it_across_conversations(store: CounterStore) -> None:
    chain = chain_of(store, NO_PROGRESS)
    await turn(chain, conversation("Plan a trip to Lisbon"), ANSWER, run_id="r1", agent="assistant")
    other = await turn(chain, conversation("Review the Q3 budget"), ANSWER, run_id="r1", agent="assistant")
    assert flagged(other)


async def test_unnamed_agents_are_scoped_to_their_conversation(store: CounterStore) -> None:
    chain = chain_of(store, NO_PROGRESS.replace("max_repeats: 1", "max_repeats: 1, scope: agent"))
    await turn(chain, conversation("Plan a trip to Lisbon"), ANSWER, agent=None)
    other = await turn(chain, conversation("Review the Q3 budget"), ANSWER, agent=None)
    assert not flagged(other)
