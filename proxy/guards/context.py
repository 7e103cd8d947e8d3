"""Context guards (`kind: context`): one rule builds up to three guards.

    ContextFit       on_request   counted input + requested output > the model's window
                                  → the rule's action (deny answers 400)
    TruncatedOutput  on_response  output cut at max_tokens                    → flag
                     on_request   input carries another agent's cut output     → flag
    DroppedHistory   on_request   the previous turn's messages are no longer all there
                                  although the conversation continues         → flag

The after-the-fact checks can only flag (or escalate when that is the rule's action).  The
three guards of a rule (hence 30 guards for 10 context rules) run, with those of the rules
next to it, as one `ContextChecks` batch: the handoff lookup and the history check are
shared by every rule of a call and awaited once, the rest are plain function calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from proxy.call import Call, Chunk
from proxy.guards.base import ALLOW, Action, Batch, Failed, GuardDeps, RuleGuard, Verdict
from proxy.guards.facts import lazy
from proxy.guards.handoffs import TRUNCATED, Handoff
from proxy.rulemodels import ContextRule

CODE = "interlock_context_overflow"
CODE_LOSS = "interlock_context_loss"
_HISTORY_KEEP = 8
_HISTORY_TTL_S = 3600.0
_MAX_DIGESTS = 512
_UNKNOWN: Any = object()


class _ContextGuard(RuleGuard["ContextRule"]):
    """`on_request` = `decide(call, await fact(call))`: the fact (a handoff, a history check)
    is shared by every context rule of a call, so `ContextChecks` awaits it once for all."""

    needs: str | None = None  # which shared fact `decide` needs (None: no I/O at all); a
    # guard that needs one allows when it is None (nothing found), without being asked

    def __init__(self, rule: ContextRule, deps: GuardDeps) -> None:
        super().__init__(rule)
        self.deps = deps
        batch = deps.batches.setdefault("context", ContextChecks())
        self.batch = batch if isinstance(batch, ContextChecks) else None

    @property
    def after_action(self) -> Action:
        return "escalate" if self.rule.action == "escalate" else "flag"

    async def on_request(self, call: Call) -> Verdict:
        fact = await self.fact(call)
        return ALLOW if fact is None and self.needs is not None else self.decide(call, fact)

    async def fact(self, call: Call) -> Any:
        """The shared fact `decide` needs (may await the counter store)."""
        return None

    def decide(self, call: Call, fact: Any) -> Verdict:
        """The `on_request` verdict, given the fact.  Synchronous."""
        return ALLOW

    def settle(self, call: Call) -> Verdict:
        """The `on_response` verdict.  Synchronous: no context check does I/O after a call."""
        return ALLOW

    async def on_response(self, call: Call) -> Verdict:
        return self.settle(call)


class ContextChecks(Batch[_ContextGuard]):
    """Consecutive context guards of a call (a rule's three, the next rule's three...) in one
    pass: each shared fact is awaited once, when the first guard in rule order needs it, and
    the checks themselves are plain function calls.  Stateless."""

    async def on_request(
        self, guards: Sequence[_ContextGuard], call: Call, failed: Failed[_ContextGuard]
    ) -> list[Verdict]:
        facts: dict[str, Any] = {}
        out: list[Verdict] = []
        for guard in guards:
            need = guard.needs
            try:
                if need is None:
                    verdict = guard.decide(call, None)
                else:
                    fact = facts.get(need, _UNKNOWN)
                    if fact is _UNKNOWN:
                        fact = facts[need] = await guard.fact(call)
                    verdict = ALLOW if fact is None else guard.decide(call, fact)
            except Exception as exc:  # this guard fails alone; the next one asking retries
                verdict = failed(guard, exc)
            out.append(verdict)
            if verdict is not ALLOW and verdict.action == "deny":
                break
        return out

    def on_chunk(self, guards: Sequence[_ContextGuard], call: Call, chunk: Chunk) -> Sequence[Verdict]:
        return ()

    async def on_response(
        self, guards: Sequence[_ContextGuard], call: Call, failed: Failed[_ContextGuard]
    ) -> list[Verdict]:
        out: list[Verdict] = []
        for guard in guards:
            try:
                out.append(guard.settle(call))
            except Exception as exc:
                out.append(failed(guard, exc))
        return out


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

    def runs(self, hook: str) -> bool:
        return hook != "on_response" and super().runs(hook)

    def decide(self, call: Call, fact: Any) -> Verdict:
        spec = self.catalog.lookup(call.model_requested)
        inp = call.input_tokens_counted
        if spec is None or inp is None:
            return ALLOW
        output = call.max_tokens or self.rule.default_output or spec.max_output
        if inp + output + self.rule.margin_tokens <= spec.context_window:
            return ALLOW
        return self._verdict(call, _Fit(inp, output, self.rule.margin_tokens, spec.context_window))

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

    needs: str | None = "handoff"

    def settle(self, call: Call) -> Verdict:
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

    async def fact(self, call: Call) -> Handoff | None:
        return await self.deps.handoffs.handoff_into(call)

    def decide(self, call: Call, fact: Any) -> Verdict:
        handoff: Handoff | None = fact
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
    """One request's message digests, indexed (lazily) to test whether it continues an earlier one."""

    def __init__(self, digests: list[str]) -> None:
        self.digests = digests

    @lazy
    def present(self) -> set[str]:
        return set(self.digests)

    @lazy
    def pairs(self) -> set[tuple[str, str]]:
        return set(zip(self.digests, self.digests[1:], strict=False))

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

    needs: str | None = "history"

    def runs(self, hook: str) -> bool:
        return hook != "on_response" and super().runs(hook)

    async def fact(self, call: Call) -> tuple[int, int, int] | None:
        facts = self.deps.facts(call)  # one push per call, shared by every context rule
        found = facts.get("history", _UNKNOWN)
        if found is _UNKNOWN:
            found = await facts.once(
                "history", lambda: self._check(call, facts.message_digests[-_MAX_DIGESTS:])
            )
        return cast("tuple[int, int, int] | None", found)

    def decide(self, call: Call, fact: Any) -> Verdict:
        return ALLOW if fact is None else self._verdict(call, *fact)

    async def _check(self, call: Call, digests: list[str]) -> tuple[int, int, int] | None:
        if not digests:
            return None
        key = f"ctx:history:{call.agent or '-'}:{call.run_id or '-'}"
        joined = ",".join(digests)
        previous = await self.deps.counters.push(key, joined, keep=_HISTORY_KEEP, ttl_s=_HISTORY_TTL_S)
        history = History(digests)
        for raw in previous:  # newest first: the turn this request continues decides
            if joined.startswith(raw) and joined[len(raw) : len(raw) + 1] in ("", ","):
                return None  # continued whole (a resend, or the next turn): `dropped` gives 0
            if raw[raw.rfind(",") + 1 :] not in history.present:
                continue  # its last message is gone: not continued here (what `dropped` finds first)
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
