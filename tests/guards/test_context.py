from __future__ import annotations

from typing import Any

from proxy.call import Message, Usage
from proxy.catalog import Catalog, ModelSpec
from proxy.guards import GuardStats, build_chain
from proxy.guards.base import GuardDeps, RuleGuard
from proxy.guards.context import ContextFit, DroppedHistory, TruncatedOutput, build, dropped
from proxy.guards.counters import CounterStore, MemoryCounterStore
from proxy.rules import RuleSet
from tests.guards.factory import assistant, deps, finish, make_call, rule_from_yaml, system, user

FIT = "{name: fits, kind: context, action: deny}"


def guard_of(
    kind: type[RuleGuard[Any]], store: CounterStore, text: str = FIT, shared: GuardDeps | None = None
) -> Any:
    return next(g for g in build(rule_from_yaml(text), shared or deps(store)) if isinstance(g, kind))


def test_context_rule_parses_from_yaml() -> None:
    rule = rule_from_yaml(
        "{name: c, kind: context, action: deny, margin_tokens: 10, models: {my-llm: {context_window: 8192, max_output: 1024}}}"
    )
    assert rule.models["my-llm"].spec() == ModelSpec(8192, 1024)
    assert [type(g).__name__ for g in build(rule, deps())] == [
        "ContextFit",
        "TruncatedOutput",
        "DroppedHistory",
    ]


def test_catalog_resolves_snapshots_and_aliases() -> None:
    catalog = Catalog()
    assert catalog.lookup("gpt-4o-2024-08-06") == ModelSpec(128_000, 16_384)
    assert catalog.lookup("gpt-4o-mini") == ModelSpec(128_000, 16_384)
    assert catalog.lookup("claude-sonnet-4-5-20250929") == ModelSpec(200_000, 64_000)
    assert catalog.lookup("openai/gpt-4.1-mini") == ModelSpec(1_047_576, 32_768)
    assert catalog.lookup("gpt-4.5-preview") is None  # never falls back to gpt-4
    assert catalog.lookup("unknown-model") is None


async def test_one_token_over_the_window_is_denied(store: CounterStore) -> None:
    verdict = await guard_of(ContextFit, store).on_request(
        make_call(input_tokens_counted=127_001, max_tokens=1000)
    )
    assert verdict.denied and verdict.status == 400 and verdict.code == "interlock_context_overflow"
    assert verdict.data["over_by"] == 1
    assert "128,000-token window by 1" in verdict.reason and "at most 999" in verdict.reason


async def test_exactly_fitting_and_one_under_are_allowed(store: CounterStore) -> None:
    guard = guard_of(ContextFit, store)
    for inp in (127_000, 126_999):
        assert (
            await guard.on_request(make_call(input_tokens_counted=inp, max_tokens=1000))
        ).action == "allow"


async def test_without_max_tokens_the_models_max_output_is_assumed(store: CounterStore) -> None:
    guard = guard_of(ContextFit, store)
    verdict = await guard.on_request(make_call(input_tokens_counted=120_000, max_tokens=None))
    assert verdict.denied and verdict.data["output_tokens"] == 16_384


async def test_default_output_and_margin_from_the_rule(store: CounterStore) -> None:
    guard = guard_of(
        ContextFit, store, "{name: f, kind: context, action: deny, default_output: 1000, margin_tokens: 100}"
    )
    assert (
        await guard.on_request(make_call(input_tokens_counted=126_900, max_tokens=None))
    ).action == "allow"
    assert (await guard.on_request(make_call(input_tokens_counted=126_901, max_tokens=None))).denied


async def test_input_alone_too_long_says_how_much_to_cut(store: CounterStore) -> None:
    verdict = await guard_of(ContextFit, store).on_request(
        make_call(input_tokens_counted=130_000, max_tokens=10)
    )
    assert "input alone is too long" in verdict.reason and "2,001 tokens" in verdict.reason


async def test_custom_model_from_the_rule(store: CounterStore) -> None:
    text = (
        "{name: f, kind: context, action: deny, models: {my-llm: {context_window: 8192, max_output: 1024}}}"
    )
    guard = guard_of(ContextFit, store, text)
    assert (await guard.on_request(make_call(model_requested="my-llm", input_tokens_counted=7193))).denied


async def test_unknown_model_or_uncounted_input_is_never_denied(store: CounterStore) -> None:
    guard = guard_of(ContextFit, store)
    assert (
        await guard.on_request(make_call(model_requested="mystery", input_tokens_counted=10**9))
    ).action == "allow"
    assert (await guard.on_request(make_call(input_tokens_counted=None))).action == "allow"


async def test_flag_action_only_flags(store: CounterStore) -> None:
    guard = guard_of(ContextFit, store, "{name: f, kind: context}")
    assert (await guard.on_request(make_call(input_tokens_counted=200_000))).action == "flag"


async def test_output_cut_at_max_tokens_is_flagged(store: CounterStore) -> None:
    guard = guard_of(TruncatedOutput, store)
    call = finish(make_call(), text="partial", finish_reason="length", usage=Usage(1000, 1000))
    verdict = await guard.on_response(call)
    assert verdict.action == "flag" and "cut at max_tokens after 1,000 tokens" in verdict.reason
    assert (await guard.on_response(finish(make_call(), text="done"))).action == "allow"


async def test_cut_output_handed_to_another_agent_is_flagged(store: CounterStore) -> None:
    guard = build_chain(RuleSet((rule_from_yaml(FIT),)), deps(store))  # records outputs for handoffs
    cut = "The analysis of the quarterly numbers shows revenue up twelve percent, costs down four percent and"
    await guard.on_response(finish(make_call(agent="analyst"), text=cut, finish_reason="length"))
    verdict = await guard.on_request(make_call(agent="writer", messages=[user(f"Write a summary of: {cut}")]))
    assert verdict.action == "flag" and "truncated handoff" in verdict.reason
    assert verdict.data == {"check": "truncated_handoff", "source": "analyst", "target": "writer"}


def conversation(turns: int) -> list[Message]:
    messages = [system("You are a helpful agent.")]
    for i in range(turns):
        messages += [user(f"question {i}"), assistant(f"answer {i}")]
    return messages + [user(f"question {turns}")]


async def test_dropped_history_between_turns_is_flagged(store: CounterStore) -> None:
    guard = guard_of(DroppedHistory, store)
    full = conversation(5)
    await guard.on_request(make_call(messages=full))
    trimmed = [full[0], *full[5:], assistant("answer 5"), user("question 6")]
    verdict = await guard.on_request(make_call(messages=trimmed))
    assert verdict.action == "flag" and verdict.data["dropped"] == 4
    assert "lost 4 earlier message(s)" in verdict.reason


async def test_growing_conversations_and_new_threads_are_not_flagged(store: CounterStore) -> None:
    guard = guard_of(DroppedHistory, store)
    got = [(await guard.on_request(make_call(messages=conversation(n)))).action for n in range(5)]
    got.append((await guard.on_request(make_call(messages=[system("other"), user("new task")]))).action)
    got.append((await guard.on_request(make_call(messages=conversation(4)))).action)  # a retry
    assert set(got) == {"allow"}


async def test_a_trimmed_turn_is_flagged_once(store: CounterStore) -> None:
    guard = guard_of(DroppedHistory, store)
    full = conversation(5)
    await guard.on_request(make_call(messages=full))
    trimmed = [full[0], *full[5:], assistant("answer 5"), user("question 6")]
    await guard.on_request(make_call(messages=trimmed))
    following = [*trimmed, assistant("answer 6"), user("question 7")]
    assert (await guard.on_request(make_call(messages=following))).action == "allow"


def test_dropped_counts_only_for_continuations() -> None:
    assert dropped(["a", "b", "c"], ["a", "b", "c", "d"]) == 0
    assert dropped(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == 1
    assert dropped(["a", "b", "c", "d"], ["a", "x", "y"]) is None
    assert dropped(["a", "b", "c", "d"], ["a", "b", "c", "x"]) is None  # last message edited


# ---------------------------------------------------------------------------- several rules at once


class NoHistoryStore(MemoryCounterStore):
    """Fails the history pushes only."""

    async def push(self, key: str, item: str, *, keep: int, ttl_s: float) -> list[str]:
        if key.startswith("ctx:history:"):
            raise ConnectionError("store down")
        return await super().push(key, item, keep=keep, ttl_s=ttl_s)


async def test_several_context_rules_flag_in_rule_order(store: CounterStore) -> None:
    texts = [FIT.replace("deny", "flag"), "{name: tight, kind: context, margin_tokens: 5000}"]
    chain = build_chain(RuleSet(tuple(rule_from_yaml(t) for t in texts)), deps(store))
    full = conversation(5)
    calls = [make_call(messages=full), make_call(messages=[full[0], *full[5:]], input_tokens_counted=125_000)]
    for call in calls:
        await chain.on_request(call)
        await chain.on_response(finish(call, text="cut", finish_reason="length"))
    got = [(e["rule"], e["data"].get("check"), e["hook"]) for e in calls[1].guard_events]
    assert got == [  # rule order, and each rule's guards in their order
        ("fits", "dropped_history", "request"),
        ("tight", "fit", "request"),
        ("tight", "dropped_history", "request"),
        ("fits", "output_truncated", "response"),
        ("tight", "output_truncated", "response"),
    ]


async def test_a_failing_history_check_fails_only_its_guards() -> None:
    stats = GuardStats()
    texts = ["{name: a, kind: context, margin_tokens: 5000}", "{name: b, kind: context, margin_tokens: 5000}"]
    chain = build_chain(RuleSet(tuple(rule_from_yaml(t) for t in texts)), deps(NoHistoryStore()), stats=stats)
    call = make_call(input_tokens_counted=125_000)
    assert (await chain.on_request(call)).action == "flag"
    assert [e["rule"] for e in call.guard_events] == ["a", "b"]
    assert stats.errors_by_rule == {"a": 1, "b": 1}
