from __future__ import annotations

from proxy.call import Message
from proxy.guards.counters import CounterStore
from proxy.guards.redelegation import reports_failure
from tests.guards.factory import assistant, system, user
from tests.guards.loopkit import chain_of, flagged, turn

REDELEGATION = (
    "{name: redelegation, kind: loop, detect: redelegation, max_repeats: 1, restated: 0.35, min_words: 3,"
    " novelty: 0.5, action: flag}"
)
GOAL = [
    "Find the population of Quabelnix Harbor in the 2020 census.",
    "Search another credible source for how many people live in Quabelnix Harbor (2020 census).",
    "We still need the Quabelnix Harbor census population; try a different reliable website.",
    "Look up the 2020 census headcount for Quabelnix Harbor on a new source.",
]
OTHER = [
    "Find the founding year of the Torvik copper mine.",
    "Which company operates the Zendra glacier railway today?",
    "List the vineyards on the Belmont volcanic plateau.",
    "Get the annual rainfall of the Ostvo delta wetlands.",
]
FAILED = "I checked https://example.org/{i} but it does not state the population of Quabelnix Harbor."
FOUND = "Found it: {subject} is described on https://example.org/{i}; {i} new facts about granite quarries, ferry routes and lantern festivals."


class Worker:
    """A worker's own conversation: each instruction arrives as a new user message."""

    def __init__(self) -> None:
        self.messages: list[Message] = [system("You are the web surfer.")]

    async def assign(self, chain, instruction: str, answer: str):  # type: ignore[no-untyped-def]
        self.messages.append(user(instruction))
        call = await turn(chain, list(self.messages), answer, agent="web_surfer")
        self.messages.append(assistant(answer))
        return call


async def test_restated_sub_goal_with_a_failed_result_is_flagged(store: CounterStore) -> None:
    chain, worker = chain_of(store, REDELEGATION), Worker()
    first = await worker.assign(chain, GOAL[0], FAILED.format(i=0))
    again = await worker.assign(chain, GOAL[1], FAILED.format(i=1))
    assert not flagged(first) and flagged(again)


async def test_retried_sub_goal_that_then_succeeds_is_not_flagged(store: CounterStore) -> None:
    chain, worker = chain_of(store, REDELEGATION), Worker()
    await worker.assign(chain, GOAL[0], FAILED.format(i=0))
    again = await worker.assign(chain, GOAL[1], FOUND.format(i=1, subject="the harbor"))
    assert not flagged(again)


async def test_different_sub_goals_are_not_restatements(store: CounterStore) -> None:
    chain, worker = chain_of(store, REDELEGATION), Worker()
    calls = [await worker.assign(chain, goal, FAILED.format(i=i)) for i, goal in enumerate(OTHER)]
    assert not any(flagged(c) for c in calls)


async def test_third_sending_is_flagged_when_it_arrives(store: CounterStore) -> None:
    chain, worker = chain_of(store, REDELEGATION), Worker()
    for i in range(2):
        await worker.assign(chain, GOAL[i], FAILED.format(i=i))
    worker.messages.append(user(GOAL[2]))
    from tests.guards.factory import make_call

    call = make_call(messages=list(worker.messages), agent="web_surfer")
    verdict = await chain.on_request(call)
    assert verdict.action == "flag" and verdict.data["occurrence"] == 3


async def test_redelegation_event_names_the_calls_and_the_evidence(store: CounterStore) -> None:
    chain, worker = chain_of(store, REDELEGATION), Worker()
    first = await worker.assign(chain, GOAL[0], FAILED.format(i=0))
    again = await worker.assign(chain, GOAL[1], FAILED.format(i=1))
    (event,) = flagged(again)
    assert event["data"]["calls"] == [first.id, again.id]
    assert event["data"]["worker"] == "web_surfer" and event["data"]["result_failed"] is True
    assert "delegate → return → delegate" in event["reason"]


async def test_the_same_goal_to_another_worker_is_not_a_redelegation(store: CounterStore) -> None:
    chain = chain_of(store, REDELEGATION)
    await turn(chain, [user(GOAL[0])], FAILED.format(i=0), agent="web_surfer")
    other = await turn(chain, [user(GOAL[1])], FAILED.format(i=1), agent="file_surfer")
    assert not flagged(other)


async def test_progress_between_two_sendings_ends_the_loop(store: CounterStore) -> None:
    chain, worker = chain_of(store, REDELEGATION), Worker()
    await worker.assign(chain, GOAL[0], FOUND.format(i=0, subject="the harbor"))
    again = await worker.assign(chain, GOAL[1], FAILED.format(i=1))
    assert not flagged(again)


def test_failure_reports_are_recognised() -> None:
    assert reports_failure("No luck: the page covers ferries, not the census.")
    assert reports_failure("The figure was not on https://example.org/x.")
    assert not reports_failure("According to the census the population is 4,120. Request satisfied: no.")


async def test_a_prompt_template_resent_every_turn_is_not_a_restatement(store: CounterStore) -> None:
    chain = chain_of(store, REDELEGATION)
    template = (
        "Recall we are working on the following request:\nPrepare the harbor census brief for the board.\n"
        "Answer the following questions to update the progress ledger: is the request satisfied, "
        "are we in a loop, is progress being made, who should speak next, and with which instruction?"
    )
    messages: list[Message] = [system("You are the orchestrator.")]
    calls = []
    for i, report in enumerate(OTHER):
        messages.append(user(f"web_surfer: {report}\n{template}"))
        calls.append(await turn(chain, list(messages), FAILED.format(i=i), agent="orchestrator"))
        messages.append(assistant(FAILED.format(i=i)))
    assert not any(flagged(c) for c in calls)
