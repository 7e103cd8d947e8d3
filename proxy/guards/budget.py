"""TokenBudget: limits in tokens or USD per scope and window, reserved before the call.

    on_request   reserve worst case = counted input + (max_tokens or default_max_tokens),
                 atomically against the limit (refused → deny, nothing reserved)
    on_chunk     meter the stream; with `cutoff: true` end it once the call has used its
                 reservation plus the room that was free when it was admitted
    on_response  reconcile to the provider's usage, else to what was consumed (input +
                 output so far; nothing for calls that never reached a billing upstream)
    release      a later guard denied: give the whole reservation back

USD budgets count micro-dollars; the worst case prices input without cache hits.

Every hook runs through `Budgets`, the batch of the budget rules on one counter store: the
chain hands it each run of consecutive budget rules of a call (one `reserve_many` and one
`adjust_many`, so one Redis round trip per hook for all of them), a lone rule's hooks call it
with that rule alone.  It keeps the calls' holds: call id → {rule: _Hold}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.call import Call, Chunk
from proxy.guards.base import (
    ALLOW,
    GENERATIVE,
    Action,
    Batch,
    Failed,
    GuardDeps,
    RuleGuard,
    Verdict,
)
from proxy.guards.counters import BUCKETS, Adjustment, Ask, CounterStore
from proxy.guards.scopes import describe_scope, scope_getter, scope_value
from proxy.lru import CallSlots, drop_oldest
from proxy.rulemodels import BudgetRule

if TYPE_CHECKING:
    from proxy.pricing import Price

CODE = "interlock_budget_exceeded"
MICRO = 1_000_000
# outcomes that, before any upstream byte, mean the provider never ran the call
NOT_BILLED = frozenset({"denied", "unreachable", "bad_request", "too_large"})
_UNSET: Any = object()


@dataclass(slots=True)
class _Hold:
    value: str  # the call's scope value
    key: str
    bucket: int
    reserved: int  # units reserved at admission
    base: int  # units for the input
    out_rate: float  # units per output token
    allowance: int  # units the call may use before a cutoff
    so_far: int = 0  # output tokens seen on the stream
    cut: bool = False


class TokenBudget(RuleGuard["BudgetRule"]):
    """One `kind: budget` rule (tokens or USD).  A call without a value for the rule's scope
    (no run id, no agent name...) is not counted; a USD rule skips models without a price
    (add them under `pricing:`)."""

    operations = GENERATIVE | {"embeddings"}
    batch: Budgets

    def __init__(self, rule: BudgetRule, deps: GuardDeps) -> None:
        super().__init__(rule)
        self._counters = deps.counters
        self._prices = deps.prices
        self._default_max = rule.default_max_tokens or deps.default_max_tokens
        self._usd = rule.limit_usd is not None
        self._limit = math.floor((rule.limit_usd or 0) * MICRO) if self._usd else int(rule.limit_tokens or 0)
        self._window = rule.window_s
        self._enforce = rule.action == "deny"
        self._scope = scope_getter(rule.scope)
        self._scope_name = rule.scope
        self._prefix = f"budget:{self.name}:{rule.window}:{rule.scope}:"
        self._admit_limit = self._limit if self._enforce else None
        warn_at = rule.warn_at
        self._warn_from = None if warn_at is None else warn_at * self._limit
        self._quiet = self._enforce and warn_at is None  # no verdict possible after settling
        self._cuts = rule.cutoff
        # scope value → units left, for the metrics: at most 256 values, those first seen longest
        # ago dropped first (an active one dropped comes back with its next call)
        self._left: dict[str, float] = {}
        batch = deps.batches.get("budget")
        if not isinstance(batch, Budgets) or batch.counters is not deps.counters:
            batch = deps.batches["budget"] = Budgets(deps.counters)
        self.batch = batch

    # ------------------------------------------------------------------ units

    def _units(self, units: float) -> str:
        return f"${units / MICRO:,.4f}" if self._usd else f"{int(units):,} tokens"

    def _of(self, part: float, whole: float) -> str:
        """`198,000 of 200,000 tokens` or `$1.2000 of $5.0000`."""
        if self._usd:
            return f"{self._units(part)} of {self._units(whole)}"
        return f"{int(part):,} of {self._units(whole)}"

    # ------------------------------------------------------------------ hooks

    async def on_request(self, call: Call) -> Verdict:
        return (await self.batch.on_request((self,), call, _raise))[0]

    def on_chunk(self, call: Call, chunk: Chunk) -> Verdict:
        """Per stream event: kept apart from `Budgets.on_chunk` (same steps) to stay as cheap
        as a lone rule was before batches."""
        n = chunk.output_tokens_so_far
        tab = self.batch._holds.get(call)
        hold = None if tab is None else tab.get(self)
        if hold is None or n is None:
            return ALLOW
        hold.so_far = n
        if not self._cuts or hold.cut or hold.base + n * hold.out_rate <= hold.allowance:
            return ALLOW
        hold.cut = True
        return self._cutoff(call, n)

    async def on_response(self, call: Call) -> Verdict:
        return (await self.batch.on_response((self,), call, _raise))[0]

    async def release(self, call: Call) -> None:
        hold = self.batch.take(call, self)
        if hold is not None:
            await self._counters.adjust(hold.key, -hold.reserved, self._window, hold.bucket)

    def remaining(self) -> list[tuple[str, str, float]]:
        """(scope value, unit, amount left) for /metrics.  Bounded labels: per value for the
        global and model scopes, else only the tightest recently active scope ("min")."""
        unit, scale = ("usd", 1 / MICRO) if self._usd else ("tokens", 1.0)
        items = list(self._left.items())
        if not items:
            return []
        if self.rule.scope in ("global", "model"):
            return [(value, unit, left * scale) for value, left in items]
        return [("min", unit, min(left for _, left in items) * scale)]

    # ------------------------------------------------------------------ settling

    def _consumed(self, call: Call, hold: _Hold) -> int:
        if call.outcome in NOT_BILLED and call.first_byte_at is None:
            return 0  # refused before forwarding (a mid-stream cut is charged what it used)
        usage = call.usage
        if usage.reported:
            if not self._usd:
                return usage.total()
            cost = self._prices.cost_usd(call.model_served or call.model_requested, usage)
            return hold.reserved if cost is None else math.ceil(cost * MICRO)
        if call.status is not None and call.status >= 400:
            return 0  # the upstream refused; providers do not bill errors
        out = hold.so_far or len(call.completion.text) // 4
        return hold.base + math.ceil(out * hold.out_rate)

    async def _first_warning(self, call: Call, hold: _Hold) -> bool:
        period = "run" if self._window is None else str(int(call.started_at // self._window))
        ttl = 2 * 86_400.0 if self._window is None else self._window
        return await self._counters.first_seen(f"{hold.key}:warned:{period}", ttl)

    # ------------------------------------------------------------------ verdicts

    def _data(self, call: Call, spent: float, **extra: Any) -> dict[str, Any]:
        scale = MICRO if self._usd else 1
        return {
            "unit": "usd" if self._usd else "tokens",
            "limit": self._limit / scale,
            "spent": spent / scale,
            "scope": self.rule.scope,
            "scope_value": scope_value(self.rule.scope, call, missing="?"),
            "window": self.rule.window,
            **extra,
        }

    def _label(self, call: Call) -> str:
        kind = "Cost" if self._usd else "Token"
        return f"{kind} budget '{self.name}' for {describe_scope(self.rule.scope, call)}"

    def _window_text(self) -> str:
        if self._window is not None:
            return f"rolling {self.rule.window}"
        return "for the whole run" if self.rule.scope in ("run", "agent_run") else "no time window"

    def _reset_hint(self) -> str:
        if self._window is not None:
            return f"room frees up as older calls leave the {self.rule.window} window"
        if self.rule.scope in ("run", "agent_run"):
            return "this budget does not reset during the run"
        return "this budget does not reset by itself; ask the operator to raise it"

    def _refusal(self, call: Call, spent: int, need: int, max_out: int) -> Verdict:
        inp = call.input_tokens_counted or 0
        left = max(0, self._limit - spent)
        state = "is used up" if left <= 0 else f"has {self._units(left)} left, too few for this request"
        reason = (
            f"{self._label(call)} {state} ({self._window_text()}): "
            f"{self._of(spent, self._limit)} are spent or reserved, and this "
            f"request needs up to {self._units(need)} ({inp:,} input + {max_out:,} output tokens). "
            f"Interlock refused it. Stop retrying and report back to your caller; {self._reset_hint()}."
        )
        data = self._data(
            call,
            spent,
            requested=need / (MICRO if self._usd else 1),
            input_tokens=inp,
            max_output_tokens=max_out,
        )
        # the earliest any spend can leave a rolling window: one of its buckets
        wait = None if self._window is None else self._window / BUCKETS
        return self.verdict("deny", reason, data, code=CODE, retry_after=wait)

    def _cutoff(self, call: Call, output_tokens: int) -> Verdict:
        reason = (
            f"{self._label(call)} ran out mid-stream: this response reached {output_tokens:,} output "
            f"tokens and the budget ({self._units(self._limit)}, {self._window_text()}) "
            "has no room left. Interlock ended the stream. Stop and report back to your caller with "
            f"what you have; {self._reset_hint()}."
        )
        return self.verdict(
            "deny", reason, self._data(call, self._limit, output_tokens=output_tokens), code=CODE
        )

    def _over(self, call: Call, total: int) -> Verdict:
        reason = (
            f"{self._label(call)} is over its limit ({self._window_text()}): "
            f"{self._of(total, self._limit)} used. The rule only flags, so "
            "the call was not blocked."
        )
        action: Action = "escalate" if self.rule.action == "escalate" else "flag"
        return self.verdict(action, reason, self._data(call, total), code=CODE)

    def _warning(self, call: Call, total: int) -> Verdict:
        share = total / self._limit if self._limit else 1.0
        reason = (
            f"{self._label(call)} has reached {share:.0%} of its limit ({self._window_text()}): "
            f"{self._of(total, self._limit)} used."
        )
        if self._enforce:
            reason += " Requests will be refused once it is spent."
        action: Action = "escalate" if self.rule.action == "escalate" else "flag"
        data = self._data(call, total, warn_at=self.rule.warn_at)
        return self.verdict(action, reason, data, code="interlock_budget_warning")


class Budgets(Batch[TokenBudget]):
    """The budget rules on one counter store (see `GuardDeps.batches`), run together.  The
    per-call arithmetic is done once, the store is asked once per hook, and the holds of a
    call live in one dict (call id → {rule: hold}), bounded like `CallSlots`."""

    def __init__(self, counters: CounterStore) -> None:
        self.counters = counters
        self._holds: CallSlots[dict[TokenBudget, _Hold]] = CallSlots()

    def take(self, call: Call, guard: TokenBudget) -> _Hold | None:
        """Remove and return the guard's hold on the call."""
        tab = self._holds.get(call)
        if tab is None:
            return None
        hold = tab.pop(guard, None)
        if not tab:
            self._holds.pop(call)
        return hold

    async def on_request(
        self, guards: Sequence[TokenBudget], call: Call, failed: Failed[TokenBudget]
    ) -> list[Verdict]:
        """(`failed` is never called: only the store can fail, and then every rule does.)"""
        tab = self._holds.get(call) or {}
        inp = call.input_tokens_counted or 0
        embeddings, out = call.operation == "embeddings", call.max_tokens
        model = call.model_requested
        plans: list[tuple[TokenBudget, str, str, int, int, float, int] | None] = []
        asks: list[Ask] = []
        values: dict[str, str | None] = {}  # scope → the call's value (6 scopes, many rules)
        prices: dict[int, Price | None] = {}  # price table → the model's price (usually one table)
        for g in guards:  # what each rule reserves: hot, so written out in one loop
            value = values.get(g._scope_name, _UNSET)
            if value is _UNSET:
                value = values[g._scope_name] = g._scope(call)
            if not value or g in tab:
                plans.append(None)
                continue
            max_out = 0 if embeddings else out or g._default_max
            if g._usd:
                price = prices.get(id(g._prices), _UNSET)
                if price is _UNSET:
                    price = prices[id(g._prices)] = g._prices.lookup(model)
                if price is None:
                    plans.append(None)
                    continue
                base, rate = math.ceil(inp * price.input), price.output
                need = base + math.ceil(max_out * rate)
            else:
                base, rate, need = inp, 1.0, inp + max_out
            key = g._prefix + value
            plans.append((g, value, key, need, base, rate, max_out))
            asks.append((key, need, g._admit_limit, g._window))
        if not asks:
            return [ALLOW] * len(guards)
        results = iter(await self.counters.reserve_many(asks))
        verdicts: list[Verdict] = []
        for plan in plans:
            if plan is None:
                verdicts.append(ALLOW)
                continue
            res = next(results, None)
            if res is None:
                break
            g, value, key, need, base, rate, max_out = plan
            ok, spent, bucket = res
            if not ok:
                verdicts.append(g._refusal(call, spent, need, max_out))
                break  # reserve_many stopped at this refusal: the later rules do not run
            room = g._limit - spent
            left = g._left  # hot, so inline
            left[value] = room
            if len(left) > 256:
                drop_oldest(left)
            tab[g] = _Hold(value, key, bucket, need, base, rate, need + (room if room > 0 else 0))
            verdicts.append(ALLOW)
        if tab:
            self._holds.put(call, tab)
        return verdicts

    def on_chunk(self, guards: Sequence[TokenBudget], call: Call, chunk: Chunk) -> Sequence[Verdict]:
        n = chunk.output_tokens_so_far
        tab = self._holds.get(call)
        if n is None or tab is None:
            return ()
        for g in guards:  # TokenBudget.on_chunk for each, written out: per rule and event
            hold = tab.get(g)
            if hold is None:
                continue
            hold.so_far = n
            if g._cuts and not hold.cut and hold.base + n * hold.out_rate > hold.allowance:
                hold.cut = True
                return (g._cutoff(call, n),)  # the only verdict a budget gives a chunk
        return ()

    async def on_response(
        self, guards: Sequence[TokenBudget], call: Call, failed: Failed[TokenBudget]
    ) -> list[Verdict]:
        tab = self._holds.get(call)
        verdicts: list[Verdict] = [ALLOW] * len(guards)
        if tab is None:
            return verdicts
        billed = _Billed(call)
        tokens = billed.tokens
        settling: list[tuple[int, _Hold]] = []
        adjustments: list[Adjustment] = []
        for i, g in enumerate(guards):
            hold = tab.pop(g, None)
            if hold is None:
                continue
            consumed = tokens if not g._usd else billed.usd(g, hold)
            delta = (g._consumed(call, hold) if consumed is None else consumed) - hold.reserved
            if delta != 0 or not g._quiet:
                settling.append((i, hold))
                adjustments.append((hold.key, delta, g._window, hold.bucket))
        if not tab:
            self._holds.pop(call)
        if adjustments:
            totals = await self.counters.adjust_many(adjustments)
            for (i, hold), total in zip(settling, totals, strict=True):
                g = guards[i]
                left = g._left  # as in on_request
                left[hold.value] = g._limit - total
                if len(left) > 256:
                    drop_oldest(left)
                if not g._enforce and total > g._limit:
                    verdicts[i] = g._over(call, total)
                elif g._warn_from is not None and total >= g._warn_from:
                    verdicts[i] = g._warning(call, total) if await g._first_warning(call, hold) else ALLOW
        return verdicts


class _Billed:
    """`TokenBudget._consumed` when the provider reported usage, for many rules of one call:
    the tokens, or the cost in one price table, are worked out once.  None: only the guard
    can tell (no usage reported, or never billed)."""

    __slots__ = ("_call", "_costs", "_known", "tokens")

    def __init__(self, call: Call) -> None:
        self._call = call
        self._known = call.usage.reported and not (call.outcome in NOT_BILLED and call.first_byte_at is None)
        self._costs: dict[int, int | None] = {}
        self.tokens = call.usage.total() if self._known else None

    def usd(self, guard: TokenBudget, hold: _Hold) -> int | None:
        """Micro-dollars consumed, in the guard's price table."""
        if not self._known:
            return None
        call = self._call
        prices = guard._prices
        cost = self._costs.get(id(prices), -1)
        if cost == -1:
            usd = prices.cost_usd(call.model_served or call.model_requested, call.usage)
            cost = self._costs[id(prices)] = None if usd is None else math.ceil(usd * MICRO)
        return hold.reserved if cost is None else cost


def _raise(guard: TokenBudget, exc: Exception) -> Verdict:
    raise exc


def build(rule: BudgetRule, deps: GuardDeps) -> list[TokenBudget]:
    return [TokenBudget(rule, deps)]
