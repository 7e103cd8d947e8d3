from __future__ import annotations

import asyncio
from typing import Any

from proxy.call import Usage
from proxy.guards import GuardChain
from proxy.guards.budget import TokenBudget
from proxy.guards.counters import CounterStore, MemoryCounterStore
from tests.guards.factory import FakeClock, deps, finish, make_call, make_chunk, rule_from_yaml

RUN_BUDGET = "{name: per-run, kind: budget, scope: run, limit_tokens: 10500, action: deny}"


def budget(store: CounterStore, text: str = RUN_BUDGET) -> TokenBudget:
    return TokenBudget(rule_from_yaml(text), deps(store))


def test_rule_parses_from_yaml() -> None:
    rule = rule_from_yaml(
        "{name: b, kind: budget, scope: agent_run, limit_usd: 2.5, window: 1h, cutoff: true, warn_at: 0.8, action: deny}"
    )
    assert (rule.scope, rule.limit_usd, rule.window_s, rule.cutoff, rule.warn_at) == (
        "agent_run",
        2.5,
        3600.0,
        True,
        0.8,
    )


async def test_admits_until_the_worst_case_no_longer_fits(store: CounterStore) -> None:
    guard = budget(store)  # each call reserves 1,000 input + 1,000 max output
    verdicts = [await guard.on_request(make_call()) for _ in range(6)]
    assert [v.action for v in verdicts] == ["allow"] * 5 + ["deny"]


async def test_refusal_tells_the_numbers_and_what_to_do(store: CounterStore) -> None:
    guard = budget(store, "{name: tiny, kind: budget, scope: run, limit_tokens: 1500, action: deny}")
    verdict = await guard.on_request(make_call())
    assert (verdict.status, verdict.code, verdict.rule) == (429, "interlock_budget_exceeded", "tiny")
    assert "0 of 1,500 tokens are spent or reserved" in verdict.reason and "2,000 tokens" in verdict.reason
    assert "report back" in verdict.reason
    assert verdict.data["limit"] == 1500 and verdict.data["requested"] == 2000


async def test_a_refusal_with_tokens_left_does_not_call_the_budget_used_up(store: CounterStore) -> None:
    guard = budget(store, "{name: small, kind: budget, scope: run, limit_tokens: 3000, action: deny}")
    assert (await guard.on_request(make_call())).action == "allow"
    verdict = await guard.on_request(make_call())
    assert "has 1,000 tokens left, too few for this request" in verdict.reason
    assert "used up" not in verdict.reason and verdict.retry_after is None
    assert verdict.refusal_headers() == [(b"x-should-retry", b"false")]


async def test_a_rolling_window_refusal_says_when_room_can_free_up(store: CounterStore) -> None:
    guard = budget(store, "{name: minute, kind: budget, scope: agent, limit_tokens: 1000, window: 2m, action: deny}")
    verdict = await guard.on_request(make_call())
    assert verdict.retry_after == 2.0  # one of the window's 60 buckets
    assert (b"retry-after", b"2") in verdict.refusal_headers()


async def test_a_call_in_no_run_names_the_run_it_starts_not_a_shared_one(store: CounterStore) -> None:
    guard = budget(store, "{name: tiny, kind: budget, scope: agent_run, limit_tokens: 1, action: deny}")
    call = make_call(run_id=None)
    verdict = await guard.on_request(call)
    assert f"in the new run this call starts ('{call.id}')" in verdict.reason and "'?'" not in verdict.reason


async def test_fifty_concurrent_requests_overshoot_by_at_most_one_reservation(store: CounterStore) -> None:
    guard = budget(store)
    calls = [make_call() for _ in range(50)]
    verdicts = await asyncio.gather(*(guard.on_request(c) for c in calls))
    admitted = [c for c, v in zip(calls, verdicts, strict=True) if v.action == "allow"]
    assert len(admitted) == 5
    for call in admitted:  # each used more than reserved: reconciliation may overshoot
        await guard.on_response(finish(call, usage=Usage(input_tokens=1000, output_tokens=1000)))
    assert await store.spent("budget:per-run:run:run:run-1", None) == 10_000 <= 10_500 + 2000


async def test_reconciles_to_reported_usage(store: CounterStore) -> None:
    guard = budget(store)
    call = make_call()
    await guard.on_request(call)
    await guard.on_response(finish(call, usage=Usage(input_tokens=1000, output_tokens=10)))
    assert await store.spent("budget:per-run:run:run:run-1", None) == 1010


async def test_without_max_tokens_reserves_the_default(store: CounterStore) -> None:
    guard = TokenBudget(rule_from_yaml(RUN_BUDGET), deps(store, default_max_tokens=9000))
    await guard.on_request(make_call(max_tokens=None))
    assert await store.spent("budget:per-run:run:run:run-1", None) == 10_000


async def test_cancelled_stream_is_charged_what_it_consumed(store: CounterStore) -> None:
    guard = budget(store)
    call = make_call(stream=True)
    await guard.on_request(call)
    guard.on_chunk(call, make_chunk(120))
    await guard.on_response(finish(call, outcome="cancelled", text="partial"))
    assert await store.spent("budget:per-run:run:run:run-1", None) == 1120


async def test_denied_request_releases_and_response_is_idempotent(store: CounterStore) -> None:
    guard = budget(store)
    call = make_call()
    await guard.on_request(call)
    await guard.release(call)
    await guard.on_response(finish(call, outcome="denied", status=429))
    await guard.on_response(call)
    assert await store.spent("budget:per-run:run:run:run-1", None) == 0


async def test_later_deny_in_the_chain_gives_the_reservation_back(store: CounterStore) -> None:
    run = budget(store)
    blocker = budget(store, "{name: none-left, kind: budget, scope: global, limit_tokens: 1, action: deny}")
    chain = GuardChain([run, blocker])
    call = make_call()
    assert (await chain.on_request(call)).rule == "none-left"
    await chain.on_response(finish(call, outcome="denied", status=429))
    assert await store.spent("budget:per-run:run:run:run-1", None) == 0


async def test_upstream_error_without_usage_costs_nothing(store: CounterStore) -> None:
    guard = budget(store)
    call = make_call()
    await guard.on_request(call)
    await guard.on_response(finish(call, outcome="upstream_error", status=500))
    assert await store.spent("budget:per-run:run:run:run-1", None) == 0


async def test_stream_is_cut_once_the_budget_is_spent(store: CounterStore) -> None:
    text = "{name: cut, kind: budget, scope: run, limit_tokens: 5000, cutoff: true, action: deny}"
    guard = TokenBudget(rule_from_yaml(text), deps(store, default_max_tokens=1000))
    call = make_call(stream=True, max_tokens=None)  # reserves 2,000; 3,000 more are free
    await guard.on_request(call)
    assert guard.on_chunk(call, make_chunk(4000)).action == "allow"
    verdict = guard.on_chunk(call, make_chunk(4001))
    assert verdict.denied and "mid-stream" in verdict.reason and verdict.data["output_tokens"] == 4001
    assert guard.on_chunk(call, make_chunk(4100)).action == "allow"  # cut once
    await guard.on_response(finish(call, outcome="denied"))
    assert await store.spent("budget:cut:run:run:run-1", None) == 1000 + 4100  # what it streamed


async def test_without_cutoff_streams_are_only_metered(store: CounterStore) -> None:
    guard = TokenBudget(rule_from_yaml(RUN_BUDGET), deps(store, default_max_tokens=10))
    call = make_call(stream=True, max_tokens=None)
    await guard.on_request(call)
    assert guard.on_chunk(call, make_chunk(50_000)).action == "allow"


async def test_rolling_window_rolls_over(store: CounterStore, clock: FakeClock) -> None:
    guard = budget(
        store, "{name: hourly, kind: budget, scope: agent, limit_tokens: 4000, window: 1h, action: deny}"
    )
    assert (await guard.on_request(make_call())).action == "allow"
    assert (await guard.on_request(make_call())).action == "allow"
    assert (await guard.on_request(make_call())).denied
    clock.advance(3600)
    assert (await guard.on_request(make_call())).action == "allow"


async def test_scopes_keep_separate_counters(store: CounterStore) -> None:
    guard = budget(store, "{name: per-agent, kind: budget, scope: agent, limit_tokens: 2000, action: deny}")
    assert (await guard.on_request(make_call(agent="a"))).action == "allow"
    assert (await guard.on_request(make_call(agent="b"))).action == "allow"
    assert (await guard.on_request(make_call(agent="a"))).denied


async def test_call_without_the_scope_value_is_not_counted(store: CounterStore) -> None:
    guard = budget(store, "{name: tiny, kind: budget, scope: agent, limit_tokens: 1, action: deny}")
    assert (await guard.on_request(make_call(agent=None))).action == "allow"


async def test_a_call_in_no_run_yet_counts_as_its_runs_first_call(store: CounterStore) -> None:
    guard = budget(store, "{name: tiny, kind: budget, scope: run, limit_tokens: 1, action: deny}")
    assert (await guard.on_request(make_call(run_id=None))).action == "deny"


async def test_warn_at_flags_once_when_crossed(store: CounterStore) -> None:
    guard = budget(
        store, "{name: w, kind: budget, scope: run, limit_tokens: 10000, warn_at: 0.3, action: deny}"
    )
    actions = []
    for _ in range(4):
        call = make_call()
        await guard.on_request(call)
        actions.append((await guard.on_response(finish(call, usage=Usage(1000, 500)))).action)
    assert actions == ["allow", "flag", "allow", "allow"]


async def test_flag_budget_never_blocks_and_flags_when_over(store: CounterStore) -> None:
    guard = budget(store, "{name: soft, kind: budget, scope: run, limit_tokens: 2500, action: flag}")
    results = []
    for _ in range(2):
        call = make_call()
        assert (await guard.on_request(call)).action == "allow"
        results.append(await guard.on_response(finish(call, usage=Usage(1000, 500))))
    assert [r.action for r in results] == ["allow", "flag"]
    assert results[1].data["spent"] == 3000 and "not blocked" in results[1].reason


async def test_usd_budget_prices_the_worst_case_and_reconciles(store: CounterStore) -> None:
    # gpt-4o: $2.50 in, $10.00 out per 1M → 1,000 in + 1,000 out = $0.0125 worst case
    guard = budget(store, "{name: usd, kind: budget, scope: run, limit_usd: 0.03, action: deny}")
    first, second, third = make_call(), make_call(), make_call()
    assert (await guard.on_request(first)).action == "allow"
    assert (await guard.on_request(second)).action == "allow"
    denied = await guard.on_request(third)
    assert denied.denied and "$0.0250 of $0.0300" in denied.reason
    await guard.on_response(finish(first, usage=Usage(1000, 100, cached_tokens=1000)))
    assert await store.spent("budget:usd:run:run:run-1", None) == 12_500 + 2_250


async def test_usd_budget_ignores_unpriced_models(store: CounterStore) -> None:
    guard = budget(store, "{name: usd, kind: budget, scope: run, limit_usd: 0.000001, action: deny}")
    assert (await guard.on_request(make_call(model_requested="my-local-llama"))).action == "allow"


async def test_listing_models_or_counting_tokens_is_never_budgeted(store: CounterStore) -> None:
    guard = GuardChain(
        [budget(store, "{name: tiny, kind: budget, scope: run, limit_tokens: 1, action: deny}")]
    )
    for operation in ("other", "count_tokens"):
        assert (await guard.on_request(make_call(operation=operation, max_tokens=None))).action == "allow"


async def test_embeddings_reserve_their_input_only(store: CounterStore) -> None:
    guard = budget(store)
    await guard.on_request(make_call(operation="embeddings", max_tokens=None, input_tokens_counted=300))
    assert await store.spent("budget:per-run:run:run:run-1", None) == 300


# ---------------------------------------------------------------------------- several rules at once

MIXED = [
    "{name: run-tokens, kind: budget, scope: run, limit_tokens: 5000, action: deny}",
    "{name: agent-hourly, kind: budget, scope: agent, window: 1h, limit_tokens: 100000, warn_at: 0.01, action: deny}",
    "{name: key-usd, kind: budget, scope: api_key, limit_usd: 1.0, action: flag}",
    "{name: all-tokens, kind: budget, scope: global, window: 1m, limit_tokens: 3000, cutoff: true, action: deny}",
]
KEYS = [("budget:run-tokens:run:run:run-1", None), ("budget:agent-hourly:1h:agent:agent-a", 3600.0)]


class CountingStore(MemoryCounterStore):
    """A memory store that counts the calls guards make to it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[str] = []

    async def reserve(self, *args: Any) -> Any:
        self.calls.append("reserve")
        return await super().reserve(*args)

    async def reserve_many(self, asks: Any) -> Any:
        self.calls.append("reserve_many")
        return await super().reserve_many(asks)

    async def adjust_many(self, adjustments: Any) -> Any:
        self.calls.append("adjust_many")
        return await super().adjust_many(adjustments)


def budgets(store: CounterStore, texts: list[str] = MIXED, *, together: bool = True) -> list[TokenBudget]:
    """The rules on one store; `together`: sharing deps, so the chain runs them as one batch."""
    shared = deps(store)
    return [TokenBudget(rule_from_yaml(t), shared if together else deps(store)) for t in texts]


async def replay(guards: list[TokenBudget]) -> list[tuple[Any, ...]]:
    """Five streamed calls through a chain of the rules: every verdict and guard event."""
    chain = GuardChain(guards)
    seen: list[tuple[Any, ...]] = []
    for i in range(5):
        call = make_call(stream=True, max_tokens=500)
        seen.append((await chain.on_request(call)).action)
        seen.append(chain.on_chunk(call, make_chunk(300 * (i + 1))).action)
        seen.append((await chain.on_response(finish(call, usage=Usage(1000, 300 * (i + 1))))).action)
        seen += [(e["hook"], e["action"], e["rule"], e["reason"], e["data"]) for e in call.guard_events]
    return seen


async def test_rules_run_together_answer_as_one_by_one(store: CounterStore) -> None:
    one_by_one = MemoryCounterStore(clock=FakeClock())
    together = await replay(budgets(store))
    alone = await replay(budgets(one_by_one, together=False))
    assert together == alone and {s[1] for s in together if isinstance(s, tuple)} >= {"deny", "flag"}
    for key, window in KEYS:
        assert await store.spent(key, window) == await one_by_one.spent(key, window) > 0


async def test_rules_together_cost_one_store_call_per_hook() -> None:
    store = CountingStore()
    chain = GuardChain(budgets(store))
    call = make_call()
    await chain.on_request(call)
    await chain.on_response(finish(call, usage=Usage(1000, 10)))
    assert store.calls == ["reserve_many", "adjust_many"]


async def test_a_refusal_inside_a_run_releases_the_rules_before_it(store: CounterStore) -> None:
    texts = [MIXED[0], "{name: tiny, kind: budget, scope: run, limit_tokens: 10, action: deny}", MIXED[1]]
    guards = budgets(store, texts)
    call = make_call()
    verdict = await GuardChain(guards).on_request(call)
    assert verdict.denied and verdict.rule == "tiny"
    assert [await store.spent(k, w) for k, w in KEYS] == [0, 0]
    await GuardChain(guards).on_response(finish(call, outcome="denied", status=429))
    assert [await store.spent(k, w) for k, w in KEYS] == [0, 0]


async def test_the_first_rule_out_of_room_cuts_the_stream(store: CounterStore) -> None:
    texts = [MIXED[0].replace("deny", "deny, cutoff: true"), MIXED[3]]
    chain = GuardChain(budgets(store, texts))
    call = make_call(stream=True, max_tokens=100)
    await chain.on_request(call)
    assert chain.on_chunk(call, make_chunk(1900)).action == "allow"
    verdict = chain.on_chunk(call, make_chunk(2100))
    assert verdict.denied and verdict.rule == "all-tokens"
    assert [e["hook"] for e in call.guard_events] == ["chunk"]
