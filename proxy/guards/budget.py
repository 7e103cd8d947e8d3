"""TokenBudget: limits in tokens or USD per scope and window, reserved before the call.

    on_request   reserve worst case = counted input + (max_tokens or default_max_tokens),
                 atomically against the limit (refused → deny, nothing reserved)
    on_chunk     meter the stream; with `cutoff: true` end it once the call has used its
                 reservation plus the room that was free when it was admitted
    on_response  reconcile to the provider's usage, else to what was consumed (input +
                 output so far; nothing for calls that never reached a billing upstream)
    release      a later guard denied: give the whole reservation back

USD budgets count micro-dollars; the worst case prices input without cache hits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.call import Call, Chunk
from proxy.guards.base import ALLOW, GENERATIVE, Action, CallSlots, GuardDeps, RuleGuard, Verdict
from proxy.guards.scopes import describe_scope, scope_getter, scope_value

if TYPE_CHECKING:
    from proxy.rules import BudgetRule

CODE = "interlock_budget_exceeded"
MICRO = 1_000_000
# outcomes that, before any upstream byte, mean the provider never ran the call
NOT_BILLED = frozenset({"denied", "unreachable", "bad_request", "too_large"})


@dataclass(slots=True)
class _Hold:
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

    def __init__(self, rule: BudgetRule, deps: GuardDeps) -> None:
        super().__init__(rule)
        self._counters = deps.counters
        self._prices = deps.prices
        self._default_max = rule.default_max_tokens or deps.default_max_tokens
        self._usd = rule.limit_usd is not None
        self._limit = math.floor((rule.limit_usd or 0) * MICRO) if self._usd else int(rule.limit_tokens or 0)
        self._window = rule.window_s
        self._enforce = rule.action == "deny"
        self._holds: CallSlots[_Hold] = CallSlots()
        self._scope = scope_getter(rule.scope)
        self._prefix = f"budget:{self.name}:{rule.window}:{rule.scope}:"
        self._admit_limit = self._limit if self._enforce else None
        self._left: dict[str, float] = {}  # scope value → units left, recently active ones (metrics)

    # ------------------------------------------------------------------ units

    def _units(self, units: float) -> str:
        return f"${units / MICRO:,.4f}" if self._usd else f"{int(units):,} tokens"

    def _of(self, part: float, whole: float) -> str:
        """`198,000 of 200,000 tokens` or `$1.2000 of $5.0000`."""
        if self._usd:
            return f"{self._units(part)} of {self._units(whole)}"
        return f"{int(part):,} of {self._units(whole)}"

    def _rates(self, call: Call) -> tuple[int, float] | None:
        """(units for the counted input, units per output token); None when unpriced."""
        inp = call.input_tokens_counted or 0
        if not self._usd:
            return inp, 1.0
        price = self._prices.lookup(call.model_requested)
        if price is None:
            return None
        return math.ceil(inp * price.input), price.output

    # ------------------------------------------------------------------ hooks

    async def on_request(self, call: Call) -> Verdict:
        value = self._scope(call)
        rates = self._rates(call)
        if not value or rates is None or self._holds.get(call) is not None:
            return ALLOW
        base, rate = rates
        max_out = 0 if call.operation == "embeddings" else call.max_tokens or self._default_max
        need = base + math.ceil(max_out * rate)
        key = self._prefix + value
        res = await self._counters.reserve(key, need, self._admit_limit, self._window)
        if not res.ok:
            return self._refusal(call, res.spent_after, need, max_out)
        allowance = need + max(0, self._limit - res.spent_after)
        self._note(value, res.spent_after)
        self._holds.put(call, _Hold(key, res.bucket, need, base, rate, allowance))
        return ALLOW

    def on_chunk(self, call: Call, chunk: Chunk) -> Verdict:
        hold = self._holds.get(call)
        n = chunk.output_tokens_so_far
        if hold is None or n is None:
            return ALLOW
        hold.so_far = n
        if hold.cut or not self.rule.cutoff or hold.base + n * hold.out_rate <= hold.allowance:
            return ALLOW
        hold.cut = True
        return self._cutoff(call, n)

    async def on_response(self, call: Call) -> Verdict:
        hold = self._holds.pop(call)
        if hold is None:
            return ALLOW
        delta = self._consumed(call, hold) - hold.reserved
        if delta == 0 and self._enforce and self.rule.warn_at is None:
            return ALLOW
        total = await self._counters.adjust(hold.key, delta, self._window, hold.bucket)
        self._note(self._scope(call) or "", total)
        return await self._after(call, hold, total)

    def _note(self, value: str, spent: float) -> None:
        left = self._left
        left.pop(value, None)
        left[value] = self._limit - spent
        if len(left) > 256:
            left.pop(next(iter(left)))

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

    async def release(self, call: Call) -> None:
        hold = self._holds.pop(call)
        if hold is not None:
            await self._counters.adjust(hold.key, -hold.reserved, self._window, hold.bucket)

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

    async def _after(self, call: Call, hold: _Hold, total: int) -> Verdict:
        if not self._enforce and total > self._limit:
            return self._over(call, total)
        warn_at = self.rule.warn_at
        if warn_at is not None and total >= warn_at * self._limit and await self._first_warning(call, hold):
            return self._warning(call, total)
        return ALLOW

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
        reason = (
            f"{self._label(call)} is used up ({self._window_text()}): "
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
        return self.verdict("deny", reason, data, code=CODE)

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


def build(rule: BudgetRule, deps: GuardDeps) -> list[TokenBudget]:
    return [TokenBudget(rule, deps)]
