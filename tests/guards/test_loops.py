from __future__ import annotations

from collections.abc import Sequence

from proxy.call import Call, Message, Usage
from proxy.guards import GuardChain, build_chain
from proxy.guards.base import Guard, GuardDeps, Verdict
from proxy.guards.counters import CounterStore
from proxy.guards.facts import shingles, sketch_of
from proxy.guards.handoffs import Handoff
from proxy.rules import RuleSet
from tests.guards.factory import (
    assistant,
    deps,
    finish,
    make_call,
    rule_from_yaml,
    system,
    tool_call,
    tool_result,
    user,
)


def detector(store: CounterStore, text: str, shared: GuardDeps | None = None) -> GuardChain:
    """One loop rule, wired as the RulesManager wires it (a chain with its observers)."""
    return build_chain(RuleSet((rule_from_yaml(text),)), shared or deps(store))


async def actions(guard: Guard, calls: list[Call]) -> list[str]:
    return [(await guard.on_request(c)).action for c in calls]


# ---------------------------------------------------------------------------- retry

RETRY = "{name: retries, kind: loop, detect: retry, max_repeats: 3, window: 5m, action: flag}"


def test_loop_rule_parses_from_yaml() -> None:
    rule = rule_from_yaml("{name: r, kind: loop, detect: retry, max_repeats: 2, deny_after: 1, window: 90s}")
    assert (rule.detect, rule.max_repeats, rule.deny_after, rule.window_s, rule.scope) == (
        "retry",
        2,
        1,
        90.0,
        "agent_run",
    )


async def test_retry_storm_flagged_at_the_configured_count_and_not_before(store: CounterStore) -> None:
    guard = detector(store, RETRY)
    got = await actions(guard, [make_call(messages=[user("summarise the report")]) for _ in range(4)])
    assert got == ["allow", "allow", "allow", "flag"]


async def test_retry_storm_graduates_from_flag_to_deny(store: CounterStore) -> None:
    text = "{name: retries, kind: loop, detect: retry, max_repeats: 2, deny_after: 2, action: flag}"
    guard = detector(store, text)
    got = await actions(guard, [make_call(messages=[user("same")]) for _ in range(6)])
    assert got == ["allow", "allow", "flag", "flag", "deny", "deny"]


async def test_retry_refusal_names_the_repetition(store: CounterStore) -> None:
    guard = detector(store, "{name: retries, kind: loop, detect: retry, max_repeats: 1, action: deny}")
    await guard.on_request(make_call(messages=[user("same")]))
    verdict = await guard.on_request(make_call(messages=[user("same")]))
    assert verdict.denied and verdict.status == 429 and verdict.code == "interlock_loop_detected"
    assert "has now been sent 2 times" in verdict.reason and "Stop retrying" in verdict.reason
    assert verdict.data["occurrence"] == 2


async def test_retry_compares_normalised_content_not_bytes(store: CounterStore) -> None:
    guard = detector(store, "{name: retries, kind: loop, detect: retry, max_repeats: 1, action: flag}")
    first = make_call(
        system="Now: 2025-01-01T10:00:00Z",
        messages=[system("Now: 2025-01-01T10:00:00Z"), user("fix   the\nbug")],
    )
    again = make_call(
        system="Now: 2025-01-01T10:00:07Z",
        messages=[system("Now: 2025-01-01T10:00:07Z"), user("fix the bug")],
    )
    assert await actions(guard, [first, again]) == ["allow", "flag"]


async def test_same_question_to_ten_workers_is_not_a_retry_storm(store: CounterStore) -> None:
    guard = detector(store, RETRY)
    calls = [
        make_call(agent=f"worker-{i}", messages=[user("What is the capital of France?")]) for i in range(10)
    ]
    assert set(await actions(guard, calls)) == {"allow"}


# ---------------------------------------------------------------------------- tool_repeat

TOOLS = "{name: tools, kind: loop, detect: tool_repeat, max_repeats: 3, action: deny}"


def tool_conversation(results: list[str], name: str = "search", args: str = '{"q": "x"}') -> list[Message]:
    messages: list[Message] = [user("find x")]
    for i, result in enumerate(results):
        messages.append(assistant("", tool_call(name, args, id=f"tc-{i}")))
        messages.append(tool_result(f"tc-{i}", result))
    return messages


async def test_tool_repeat_caught_at_the_configured_count_and_not_before(store: CounterStore) -> None:
    guard = detector(store, TOOLS)
    calls = [make_call(messages=tool_conversation(["no results"] * k)) for k in range(1, 5)]
    assert await actions(guard, calls) == ["allow", "allow", "allow", "deny"]


async def test_tool_repeat_refusal_names_the_tool_and_arguments(store: CounterStore) -> None:
    guard = detector(store, "{name: tools, kind: loop, detect: tool_repeat, max_repeats: 1, action: deny}")
    await guard.on_request(make_call(messages=tool_conversation(["none"])))
    verdict = await guard.on_request(
        make_call(messages=tool_conversation(["none", "none"], args='{ "q":"x" }'))
    )
    assert verdict.denied
    assert 'search({"q":"x"}) has now been made 2 times' in verdict.reason and "report back" in verdict.reason


async def test_resending_the_same_tool_result_is_not_another_repeat(store: CounterStore) -> None:
    guard = detector(store, TOOLS)
    same = tool_conversation(["no results"] * 2)
    assert await actions(guard, [make_call(messages=same) for _ in range(5)]) == ["allow"] * 5


async def test_retry_after_a_tool_repeat_refusal_is_refused_again(store: CounterStore) -> None:
    guard = detector(store, "{name: tools, kind: loop, detect: tool_repeat, max_repeats: 1, action: deny}")
    await guard.on_request(make_call(messages=tool_conversation(["none"])))
    again = tool_conversation(["none", "none"])
    assert await actions(guard, [make_call(messages=again), make_call(messages=again)]) == ["deny", "deny"]


async def test_polling_tool_with_changing_results_is_not_flagged(store: CounterStore) -> None:
    guard = detector(store, TOOLS)
    polls = [f'{{"job": 7, "status": "running", "progress": {10 * i}}}' for i in range(10)]
    calls = [make_call(messages=tool_conversation(polls[: k + 1], name="job_status")) for k in range(10)]
    assert set(await actions(guard, calls)) == {"allow"}


# ---------------------------------------------------------------------------- no_progress

STUCK = "{name: stuck, kind: loop, detect: no_progress, max_repeats: 3, action: deny}"
ANSWER = (
    "I could not find the file config.yaml in the repository. I searched the root directory, the src "
    "folder and the deploy folder, and none of them contains it. Please check the path you gave me and "
    "try again, or tell me where the configuration lives so that I can continue with the migration."
)


def turn_of(i: int) -> list[Message]:
    """Turn i of a conversation where the user keeps pushing back: the history grows."""
    history = [system("You migrate configuration files."), user("Migrate config.yaml to the new format.")]
    for _ in range(i):
        history += [assistant(ANSWER), user("That is not it, please try again.")]
    return history


async def answer(guard: Guard, text: str, turn: int = 0, **overrides: object) -> Verdict:
    call = make_call(messages=turn_of(turn), **overrides)
    await guard.on_request(call)
    return await guard.on_response(finish(call, text=text))


async def test_no_progress_flags_at_the_configured_count_then_refuses_the_next_request(
    store: CounterStore,
) -> None:
    guard = detector(store, STUCK)
    got = [(await answer(guard, ANSWER + " " * i, turn=i)).action for i in range(4)]
    assert got == ["allow", "allow", "allow", "flag"]
    verdict = await guard.on_request(make_call(messages=turn_of(4)))
    assert verdict.denied and "last 4 answers" in verdict.reason


async def test_no_progress_sees_near_duplicates(store: CounterStore) -> None:
    guard = detector(
        store, "{name: stuck, kind: loop, detect: no_progress, max_repeats: 1, similarity: 0.85}"
    )
    await answer(guard, ANSWER)
    assert (await answer(guard, ANSWER.replace("Please check", "Kindly verify"), turn=1)).action == "flag"


async def test_a_resent_request_s_answer_is_a_retry_not_a_turn(store: CounterStore) -> None:
    """The same request sent five times gets the same answer five times: the retry rule
    reports that; no-progress counts turns, so it stays quiet (one event per call, not two)."""
    shared = deps(store)
    chain = build_chain(
        RuleSet((rule_from_yaml(STUCK.replace("deny", "flag")), rule_from_yaml(RETRY))), shared
    )
    rules = []
    for _ in range(5):
        call = make_call(messages=turn_of(0))
        await chain.on_request(call)
        await chain.on_response(finish(call, text=ANSWER))
        rules.append([e["rule"] for e in call.guard_events])
    assert rules == [[], [], [], ["retries"], ["retries"]]
    # the next real turn, with the same answer again, is the second turn of the streak
    call = make_call(messages=turn_of(1))
    await chain.on_request(call)
    await chain.on_response(finish(call, text=ANSWER))
    assert call.guard_events == []


async def test_progressing_answers_are_not_flagged(store: CounterStore) -> None:
    guard = detector(store, STUCK)
    steps = [
        f"Step {i}: parsed section {i} of the report, found {i * 3} tables and {i + 7} figures."
        for i in range(8)
    ]
    assert {(await answer(guard, s)).action for s in steps} == {"allow"}


async def test_ten_workers_giving_the_same_answer_is_not_no_progress(store: CounterStore) -> None:
    guard = detector(store, STUCK)
    assert {(await answer(guard, "Paris", agent=f"worker-{i}")).action for i in range(10)} == {"allow"}


# ---------------------------------------------------------------------------- ping_pong

PING = "{name: pingpong, kind: loop, detect: ping_pong, max_repeats: 2, action: deny}"
DRAFT = "Here is the draft of the release notes: version 2.1 adds retries, fixes the login bug and drops python 3.8."
REVIEW = "The draft is missing the migration steps for the database schema and the new config flag; please add them."


async def turn(guard: Guard, agent: str, incoming: str, output: str) -> Verdict:
    call = make_call(agent=agent, messages=[system(f"You are {agent}."), user(incoming)])
    verdict = await guard.on_request(call)
    await guard.on_response(finish(call, text=output))
    return verdict


async def test_ping_pong_caught_at_the_configured_count_and_not_before(store: CounterStore) -> None:
    guard = detector(store, PING)
    await turn(guard, "writer", "write the release notes", DRAFT)
    got = []
    for _ in range(3):
        got.append((await turn(guard, "reviewer", f"Please review:\n{DRAFT}", REVIEW)).action)
        got.append((await turn(guard, "writer", f"Feedback: {REVIEW}", DRAFT)).action)
    assert got == ["allow", "allow", "allow", "allow", "deny", "deny"]


async def test_ping_pong_refusal_names_both_agents(store: CounterStore) -> None:
    guard = detector(store, "{name: pingpong, kind: loop, detect: ping_pong, max_repeats: 1, action: deny}")
    await turn(guard, "writer", "go", DRAFT)
    await turn(guard, "reviewer", DRAFT, REVIEW)
    await turn(guard, "writer", REVIEW, DRAFT)
    verdict = await turn(guard, "reviewer", DRAFT, REVIEW)
    assert (
        verdict.denied
        and "'writer' and 'reviewer'" in verdict.reason
        and "writer → reviewer 2 times" in verdict.reason
    )


async def test_back_and_forth_that_makes_progress_is_not_ping_pong(store: CounterStore) -> None:
    guard = detector(store, PING)
    await turn(guard, "writer", "write the release notes", DRAFT)
    got = []
    for i in range(4):
        draft = f"Draft {i}: " + " ".join(f"section-{i}-{j} covers topic {i * j}" for j in range(12))
        review = f"Review {i}: " + " ".join(f"point-{i}-{j} needs work on item {i + j}" for j in range(12))
        got.append((await turn(guard, "reviewer", draft, review)).action)
        got.append((await turn(guard, "writer", review, draft)).action)
    assert set(got) == {"allow"}


# ---------------------------------------------------------------------------- ceiling


async def test_step_ceiling_flags_then_denies(store: CounterStore) -> None:
    guard = detector(
        store, "{name: ceil, kind: loop, detect: ceiling, max_steps: 3, deny_after: 1, action: flag}"
    )
    assert await actions(guard, [make_call() for _ in range(5)]) == [
        "allow",
        "allow",
        "allow",
        "flag",
        "deny",
    ]


async def test_step_ceiling_is_per_run(store: CounterStore) -> None:
    guard = detector(store, "{name: ceil, kind: loop, detect: ceiling, max_steps: 1, action: deny}")
    assert await actions(guard, [make_call(run_id="r1"), make_call(run_id="r2")]) == ["allow", "allow"]


async def test_duration_ceiling_uses_the_runs_first_call(store: CounterStore) -> None:
    guard = detector(store, "{name: ceil, kind: loop, detect: ceiling, max_duration: 30m, action: deny}")
    first = make_call(started_at=1000.0)
    late = make_call(started_at=1000.0 + 1801)
    assert await actions(guard, [first, make_call(started_at=1000.0 + 1800), late]) == [
        "allow",
        "allow",
        "deny",
    ]


async def test_token_velocity_ceiling(store: CounterStore) -> None:
    guard = detector(
        store, "{name: ceil, kind: loop, detect: ceiling, max_tokens_per_min: 5000, action: deny}"
    )
    for _ in range(2):
        call = make_call()
        assert (await guard.on_request(call)).action == "allow"
        await guard.on_response(finish(call, usage=Usage(2000, 1000)))
    assert (await guard.on_request(make_call())).denied


async def test_depth_ceiling_follows_handoffs(store: CounterStore) -> None:
    guard = detector(store, "{name: ceil, kind: loop, detect: ceiling, max_depth: 2, action: deny}")
    texts = [
        f"Task for level {i}: analyse subsystem {i} with components {' '.join(str(i * k) for k in range(20))}"
        for i in range(4)
    ]
    got = [(await turn(guard, "agent-0", "start", texts[0])).action]
    for level in range(1, 4):
        got.append((await turn(guard, f"agent-{level}", texts[level - 1], texts[level])).action)
    assert got == ["allow", "allow", "allow", "deny"]


async def test_loop_guards_share_handoffs_through_a_chain(store: CounterStore) -> None:
    shared = deps(store)
    chain = build_chain(RuleSet((rule_from_yaml(PING), rule_from_yaml(RETRY))), shared)
    call = make_call()
    await chain.on_request(call)
    await chain.on_response(finish(call, text="x"))
    assert call.guard_events == []


class ScriptedHandoffs:
    """A HandoffSource fed from elsewhere (as the graph module will): one handoff per call."""

    def __init__(self, handoffs: Sequence[Handoff | None]) -> None:
        self.handoffs = list(handoffs)

    async def handoff_into(self, call: Call) -> Handoff | None:
        return self.handoffs.pop(0)

    async def record_output(self, call: Call) -> None:
        return None


async def test_ping_pong_works_from_an_external_handoff_source(store: CounterStore) -> None:
    a, b = sketch_of(shingles(DRAFT)), sketch_of(shingles(REVIEW))
    script = [Handoff("w", "r", a, 1.0), Handoff("r", "w", b, 1.0), Handoff("w", "r", a, 1.0)]
    guard = detector(
        store,
        PING.replace("max_repeats: 2", "max_repeats: 1"),
        deps(store, handoffs=ScriptedHandoffs(script)),
    )
    assert await actions(guard, [make_call() for _ in range(3)]) == ["allow", "allow", "deny"]
