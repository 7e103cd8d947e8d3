"""Context guards (`kind: context`): one rule builds up to three guards.

    ContextFit       on_request   counted input + requested output > the model's window
                                  → the rule's action (deny answers 400)
    TruncatedOutput  on_response  output cut at max_tokens                    → flag
                     on_request   input carries another agent's cut output     → flag
    DroppedHistory   on_request   the previous turn's messages are no longer all there
                                  although the conversation continues         → flag

The after-the-fact checks can only flag (or escalate when that is the rule's action).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.call import Call
from proxy.guards.base import ALLOW, Action, GuardDeps, RuleGuard, Verdict
from proxy.guards.handoffs import TRUNCATED

if TYPE_CHECKING:
    from proxy.rules import ContextRule

CODE = "interlock_context_overflow"
CODE_LOSS = "interlock_context_loss"
_HISTORY_KEEP = 8
_HISTORY_TTL_S = 3600.0
_MAX_DIGESTS = 512


class _ContextGuard(RuleGuard["ContextRule"]):
    def __init__(self, rule: ContextRule, deps: GuardDeps) -> None:
        super().__init__(rule)
        self.deps = deps

    @property
    def after_action(self) -> Action:
        return "escalate" if self.rule.action == "escalate" else "flag"


@dataclass(frozen=True, slots=True)
class _Fit:
    input: int
    output: int
    margin: int
    window: int

    @property
    def need(self) -> int:
        return self.input + self.output + self.margin

    @property
    def room(self) -> int:
        """Output tokens that would still fit."""
        return self.window - self.input - self.margin

    def advice(self) -> str:
        if self.room > 0:
            return (
                "Shorten the input (summarise or drop old turns) or set max_tokens to at most "
                f"{self.room:,}, then retry."
            )
        return (
            f"The input alone is too long: shorten it by at least {1 - self.room:,} tokens "
            "(summarise or drop old turns), then retry."
        )

    def data(self) -> dict[str, Any]:
        return {
            "check": "fit",
            "input_tokens": self.input,
            "output_tokens": self.output,
            "margin": self.margin,
            "context_window": self.window,
            "over_by": self.need - self.window,
            "max_output_allowed": max(self.room, 0),
        }


class ContextFit(_ContextGuard):
    """Refuses (or flags) a request that cannot fit the model's context window."""

    def __init__(self, rule: ContextRule, deps: GuardDeps) -> None:
        super().__init__(rule, deps)
        self.catalog = deps.catalog.with_overrides({k: v.spec() for k, v in rule.models.items()})

    async def on_request(self, call: Call) -> Verdict:
        spec = self.catalog.lookup(call.model_requested)
        inp = call.input_tokens_counted
        if spec is None or inp is None:
            return ALLOW
        output = call.max_tokens or self.rule.default_output or spec.max_output
        fit = _Fit(inp, output, self.rule.margin_tokens, spec.context_window)
        return ALLOW if fit.need <= fit.window else self._verdict(call, fit)

    def _source(self, call: Call) -> str:
        if call.max_tokens:
            return "max_tokens"
        return "the rule's default_output" if self.rule.default_output else "the model's maximum output"

    def _verdict(self, call: Call, fit: _Fit) -> Verdict:
        margin = f" + {fit.margin:,} margin" if fit.margin else ""
        what = (
            f"This request does not fit the context window of {call.model_requested}: {fit.input:,} input "
            f"tokens + {fit.output:,} output tokens ({self._source(call)}){margin} = {fit.need:,}, over "
            f"the {fit.window:,}-token window by {fit.need - fit.window:,}"
        )
        deny = self.rule.action == "deny"
        verb = "refused it instead of letting the provider fail or truncate" if deny else "flagged it"
        reason = f"{what} (rule '{self.name}'). Interlock {verb}. {fit.advice()}"
        return self.verdict(self.rule.action, reason, fit.data(), code=CODE, status=400)


class TruncatedOutput(_ContextGuard):
    """Flags output cut at max_tokens, and requests that carry such a cut output onwards."""

    uses_handoffs = True

    async def on_response(self, call: Call) -> Verdict:
        if call.finish_reason not in TRUNCATED:
            return ALLOW
        out = call.usage.output_tokens or call.max_tokens
        size = f" after {out:,} tokens" if out else ""
        reason = (
            f"The output of agent '{call.agent or '?'}' ({call.model_requested}) was cut at max_tokens{size} "
            f"(rule '{self.name}'). Whoever receives it gets an incomplete answer; raise max_tokens or "
            "ask for a shorter answer."
        )
        data = {"check": "output_truncated", "output_tokens": out, "max_tokens": call.max_tokens}
        return self.verdict(self.after_action, reason, data, code=CODE_LOSS)

    async def on_request(self, call: Call) -> Verdict:
        handoff = await self.deps.handoffs.handoff_into(call)
        if handoff is None or not handoff.truncated:
            return ALLOW
        reason = (
            f"Agent '{handoff.target_agent}' received output of agent '{handoff.source_agent}' that had been "
            f"cut at max_tokens (rule '{self.name}'): it is working from a truncated handoff. Ask "
            f"'{handoff.source_agent}' for a complete answer or raise its max_tokens."
        )
        data = {"check": "truncated_handoff", "source": handoff.source_agent, "target": handoff.target_agent}
        return self.verdict(self.after_action, reason, data, code=CODE_LOSS)


class History:
    """One request's message digests, indexed to test whether it continues an earlier one."""

    def __init__(self, digests: list[str]) -> None:
        self.digests = digests
        self.present = set(digests)
        self.pairs = set(zip(digests, digests[1:], strict=False))

    def dropped(self, previous: list[str]) -> int | None:
        """How many messages of `previous` are missing here, when this request continues it
        (the last two messages of `previous` appear, in order); None when it does not."""
        if not previous:
            return None
        if self.digests[: len(previous)] == previous:
            return 0
        if previous[-1] not in self.present or (
            len(previous) > 1 and (previous[-2], previous[-1]) not in self.pairs
        ):
            return None
        return sum(1 for d in previous if d not in self.present)


def dropped(previous: list[str], current: list[str]) -> int | None:
    return History(current).dropped(previous)


class DroppedHistory(_ContextGuard):
    """Flags a conversation whose earlier turns vanished between two requests of one agent in
    one run (the framework trimmed the history)."""

    async def on_request(self, call: Call) -> Verdict:
        facts = self.deps.facts(call)  # one push per call, shared by every context rule
        found = await facts.once("history", lambda: self._check(call, facts.message_digests[-_MAX_DIGESTS:]))
        return ALLOW if found is None else self._verdict(call, *found)

    async def _check(self, call: Call, digests: list[str]) -> tuple[int, int, int] | None:
        if not digests:
            return None
        key = f"ctx:history:{call.agent or '-'}:{call.run_id or '-'}"
        previous = await self.deps.counters.push(
            key, ",".join(digests), keep=_HISTORY_KEEP, ttl_s=_HISTORY_TTL_S
        )
        history = History(digests)
        for raw in previous:  # newest first: the turn this request continues decides
            before = raw.split(",")
            lost = history.dropped(before)
            if lost is not None:
                return (lost, len(before), len(digests)) if lost else None
        return None

    def _verdict(self, call: Call, lost: int, before: int, now: int) -> Verdict:
        reason = (
            f"The conversation of agent '{call.agent or '?'}' lost {lost} earlier message(s) between turns: "
            f"the previous request had {before} messages and this one ({now} messages) no longer contains "
            f"{lost} of them (rule '{self.name}'). The history was trimmed, so the model no longer sees "
            "those turns; summarise them instead if they matter."
        )
        data = {"check": "dropped_history", "dropped": lost, "previous_messages": before, "messages": now}
        return self.verdict(self.after_action, reason, data, code=CODE_LOSS)


def build(rule: ContextRule, deps: GuardDeps) -> list[_ContextGuard]:
    guards: list[_ContextGuard] = []
    if rule.check_fit:
        guards.append(ContextFit(rule, deps))
    if rule.check_truncated_output:
        guards.append(TruncatedOutput(rule, deps))
    if rule.check_dropped_history:
        guards.append(DroppedHistory(rule, deps))
    return guards
