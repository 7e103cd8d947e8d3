"""Loop detectors (`kind: loop`), one class per `detect:` pattern.

    retry        the same request (normalised content) sent again        on_request
    tool_repeat  the same tool call + arguments, returning the same result  on_request
    no_progress  consecutive near-duplicate outputs of one agent         on_response flags,
                                                                          on_request denies
    ping_pong    A→B→A→B handoffs carrying near-identical content        on_request
    ceiling      a run over a step, depth, duration or tokens/min cap    on_request
    revisit      the same URL, file, query or fetch requested again      on_request, on_response
                 (revisit.py)
    redelegation the same sub-goal restated to the same worker, its      on_request, on_response
                 results adding nothing (redelegation.py)
    stall        outputs adding little not already seen in the run       on_response
                 (stall.py)

LoopDetector (detector.py) holds the shared machinery: scope keys (a call without a run is
scoped to its conversation, never to a shared bucket) and graduated actions.

Graduated: occurrences 1..max_repeats pass; the next one gets the rule's `action`; with
`deny_after: N`, occurrences beyond max_repeats + N are denied.  Counts live in the
CounterStore within `window` and per `scope` (default: agent within run).  A hook the rule
makes a no-op is not run at all (`runs`): no_progress's on_request only when it can deny,
ceiling's on_response only with a tokens-per-minute cap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import orjson

from proxy.call import Call, ToolCall
from proxy.guards.base import ALLOW, Action, GuardDeps, Verdict
from proxy.guards.detector import CODE, CONSEQUENCE, LoopDetector
from proxy.guards.facts import canonical_args, encode_sketch, similarity
from proxy.guards.handoffs import Handoff
from proxy.guards.redelegation import Redelegation
from proxy.guards.revisit import Revisit
from proxy.guards.stall import Stall
from proxy.rulemodels import LoopRule


class RetryStorm(LoopDetector):
    """The same request content sent again and again."""

    async def on_request(self, call: Call) -> Verdict:
        fp = self.facts(call).request_digest
        n = await self.store.hit(self.key(call, fp), self.window)
        if n <= self.max_repeats:
            return ALLOW
        what = (
            f"The same request from {self.describe(call)} has now been sent {n} times "
            f"within {self.rule.window}"
        )
        advice = "Stop retrying the same request: change it, or report the failure back to your caller."
        return self.graded(n, what, advice, {"fingerprint": fp})


class ToolRepeat(LoopDetector):
    """The same tool call with the same canonical arguments returning the same result.  A
    result is counted once per tool-call id, so a resent request does not count twice."""

    async def on_request(self, call: Call) -> Verdict:
        best: tuple[int, ToolCall] | None = None
        for tc, _, fp in self.facts(call).tool_results:
            n = await self._count(call, tc.id or call.id, fp)
            if best is None or n > best[0]:
                best = (n, tc)
        return ALLOW if best is None or best[0] <= self.max_repeats else self._verdict(*best)

    async def _count(self, call: Call, ident: str, fp: str) -> int:
        """Distinct tool-call ids that got this same result (a resent request adds none)."""
        seen = await self.store.remember(self.key(call, fp), ident, keep=self.keep, ttl_s=self.window)
        return len(set(seen))

    def _verdict(self, n: int, tc: ToolCall) -> Verdict:
        args = canonical_args(tc.arguments)
        shown = args if len(args) <= 120 else args[:117] + "..."
        what = (
            f"Tool call {tc.name}({shown}) has now been made {n} times with the same arguments and "
            "returned the same result each time"
        )
        advice = (
            "Stop calling it with these arguments: use the result you already have, try a different "
            "approach, or report back to your caller."
        )
        return self.graded(n, what, advice, {"tool": tc.name, "arguments": shown})


class NoProgress(LoopDetector):
    """Consecutive near-duplicate outputs, turn after turn.  Flagged when the output arrives;
    with a deny level reached, the agent's next request in the same scope is refused.

    A turn is a request that differs from the previous one in the scope: the answer to a
    resent request (the same content again, the retry rule's business) is neither counted nor
    flagged, so a retry storm is reported once per call, as a retry, not twice.  Items are
    stored as `<request digest>|<output sketch>` (an item without `|` is a sketch alone)."""

    def __init__(self, rule: LoopRule, deps: GuardDeps) -> None:
        super().__init__(rule, deps)
        self._can_deny = rule.action == "deny" or rule.deny_after is not None

    def runs(self, hook: str) -> bool:
        return self._can_deny if hook == "on_request" else super().runs(hook)

    async def on_response(self, call: Call) -> Verdict:
        if call.outcome != "ok":
            return ALLOW
        facts = self.facts(call)
        if not facts.output_sketch:
            return ALLOW
        key, request = self.key(call), facts.request_digest
        latest = await self.store.recent(key)
        if latest and latest[0].partition("|")[0] == request:
            return ALLOW  # a resend's answer: not a new turn
        item = f"{request}|{facts.output_encoded}"
        previous = await self.store.push(key, item, keep=self.keep, ttl_s=self.window)
        n = 1 + _streak(facts.output_similarity, [_sketch(raw) for raw in previous], self.rule.similarity)
        action = self.level(n)
        if action != "deny":
            return self._verdict(call, n, action)
        # the output is already delivered: flag it, and refuse the next request in this scope
        return self._verdict(call, n, "flag", " The next request will be refused.")

    async def on_request(self, call: Call) -> Verdict:
        if not self._can_deny:
            return ALLOW
        latest = [_sketch(raw) for raw in await self.store.recent(self.key(call))]
        if not latest:
            return ALLOW
        newest = self.facts.decode(latest[0])
        n = 1 + _streak(
            lambda raw: similarity(newest, self.facts.decode(raw)), latest[1:], self.rule.similarity
        )
        return self._verdict(call, n, "deny") if self.level(n) == "deny" else ALLOW

    def _verdict(self, call: Call, n: int, action: Action | None, note: str = "") -> Verdict:
        if action is None:
            return ALLOW
        what = (
            f"The last {n} answers of {self.describe(call)} were near-identical "
            f"(similarity >= {self.rule.similarity:.2f}): no progress"
        )
        advice = (
            "Stop repeating the same answer: change approach, or report back to your caller with what "
            "you have and where you are stuck." + note
        )
        return self.graded(n, what, advice, {"similarity": self.rule.similarity}, action)


def _sketch(item: str) -> str:
    """The encoded output sketch of a stored no-progress item."""
    return item.rpartition("|")[2]


def _streak(similar_to: Callable[[str], float], previous: list[str], threshold: float) -> int:
    """How many of the previous outputs (encoded sketches, newest first) in a row are alike,
    `similar_to(encoded)` comparing one to the output at hand."""
    n = 0
    for raw in previous:
        if similar_to(raw) < threshold:
            break
        n += 1
    return n


class PingPong(LoopDetector):
    """A→B→A→B handoffs within a run whose content repeats in both directions."""

    uses_handoffs = True

    async def on_request(self, call: Call) -> Verdict:
        handoff = await self.handoffs.handoff_into(call)
        if handoff is None or not call.run_id:
            return ALLOW
        pair = "|".join(sorted((handoff.source_agent, handoff.target_agent)))
        item = orjson.dumps([handoff.source_agent, encode_sketch(handoff.content)]).decode()
        key = ":".join(("loop", self.name, "ping_pong", call.run_id, pair))
        previous = await self.store.push(key, item, keep=2 * self.keep, ttl_s=self.window)
        n = self._occurrence(handoff, [orjson.loads(raw) for raw in previous])
        return self._verdict(handoff, n)

    def _occurrence(self, current: Handoff, previous: list[list[str]]) -> int:
        """1 + earlier same-direction handoffs in the alternating, repeating streak."""
        anchors = {current.source_agent: current.content}
        expected, n = current.target_agent, 1
        for source, encoded in previous:
            if source != expected:
                break
            content = self.facts.decode(encoded)
            anchor = anchors.setdefault(source, content)
            if anchor is not content and similarity(anchor, content) < self.rule.similarity:
                break
            n += source == current.source_agent
            expected = current.source_agent if source != current.source_agent else current.target_agent
        return n

    def _verdict(self, h: Handoff, n: int) -> Verdict:
        what = (
            f"Agents '{h.source_agent}' and '{h.target_agent}' are in a ping-pong loop: near-identical "
            f"content has gone {h.source_agent} → {h.target_agent} {n} times, alternating with "
            "near-identical replies"
        )
        advice = (
            "Stop passing the same work back and forth: resolve it differently, or report the "
            "disagreement back to your caller or a human."
        )
        return self.graded(n, what, advice, {"source": h.source_agent, "target": h.target_agent})


class RunCeiling(LoopDetector):
    """Caps on a whole run: steps (calls), delegation depth, wall-clock, tokens per minute."""

    def __init__(self, rule: LoopRule, deps: GuardDeps) -> None:
        super().__init__(rule, deps)
        self.uses_handoffs = rule.max_depth is not None
        self._max_duration_s = rule.max_duration_s
        self._run_prefix = f"loop:{self.name}:ceiling:"

    def runs(self, hook: str) -> bool:
        if hook == "on_response":  # it only feeds the tokens-per-minute cap
            return self.rule.max_tokens_per_min is not None
        return super().runs(hook)

    async def on_request(self, call: Call) -> Verdict:
        run = call.run_id
        if not run:
            return ALLOW
        breach = await self._breach(call, run)
        if breach is None:
            return ALLOW
        what, data = breach
        over = await self.store.hit(self._key(run, "over"), None)
        deny_after = self.rule.deny_after
        action: Action = "deny" if deny_after is not None and over > deny_after else self.rule.action
        reason = (
            f"{what} (rule '{self.name}'). {CONSEQUENCE[action]} Stop starting new steps: summarise "
            "what you have and report back to your caller."
        )
        return self.verdict(
            action, reason, {"detect": "ceiling", "run": run, "calls_over": over, **data}, code=CODE
        )

    def _key(self, run: str, what: str) -> str:
        return f"{self._run_prefix}{run}:{what}"

    async def _breach(self, call: Call, run: str) -> tuple[str, dict[str, Any]] | None:
        """The first configured cap the run is over (steps, duration, depth, tokens per
        minute, in this order); the caps after it are not checked."""
        rule = self.rule
        if rule.max_steps is not None:
            steps = await self.store.hit(self._key(run, "steps"), None)
            if steps > rule.max_steps:
                return self._steps(run, steps)
        if self._max_duration_s is not None:
            start = await self.store.setdefault(self._key(run, "start"), repr(call.started_at), 2 * 86_400.0)
            elapsed = call.started_at - float(start)
            if elapsed > self._max_duration_s:
                return self._duration(run, elapsed)
        if rule.max_depth is not None:
            handoff = await self.handoffs.handoff_into(call)
            if handoff is not None and handoff.depth is not None and handoff.depth > rule.max_depth:
                return self._depth(call, run, handoff.depth)
        if rule.max_tokens_per_min is not None:
            used = await self.store.spent(self._key(run, "tpm"), 60.0)
            if used > rule.max_tokens_per_min:
                return self._velocity(run, used)
        return None

    def _steps(self, run: str, steps: int) -> tuple[str, dict[str, Any]]:
        cap = self.rule.max_steps or 0
        return f"Run '{run}' has made {steps:,} model calls, over its ceiling of {cap:,}", {
            "steps": steps,
            "max_steps": cap,
        }

    def _duration(self, run: str, elapsed: float) -> tuple[str, dict[str, Any]]:
        what = f"Run '{run}' has been going for {elapsed / 60:,.1f} minutes, over its ceiling of {self.rule.max_duration}"
        return what, {"elapsed_s": round(elapsed, 3), "max_duration": self.rule.max_duration}

    def _depth(self, call: Call, run: str, depth: int) -> tuple[str, dict[str, Any]]:
        cap = self.rule.max_depth or 0
        what = f"Agent '{call.agent}' is {depth} handoffs deep in run '{run}', over its ceiling of {cap}"
        return what, {"depth": depth, "max_depth": cap}

    def _velocity(self, run: str, used: int) -> tuple[str, dict[str, Any]]:
        cap = self.rule.max_tokens_per_min or 0
        what = f"Run '{run}' used {used:,} tokens in the last minute, over its ceiling of {cap:,} tokens per minute"
        return what, {"tokens_last_minute": used, "max_tokens_per_min": cap}

    async def on_response(self, call: Call) -> Verdict:
        run = call.run_id
        if not run:
            return ALLOW
        if self.rule.max_tokens_per_min is not None:
            used = call.usage.total() if call.usage.reported else (call.input_tokens_counted or 0)
            if used:
                await self.store.hit(self._key(run, "tpm"), 60.0, used)
        return ALLOW


DETECTORS: Mapping[str, type[LoopDetector]] = MappingProxyType(
    {
        "retry": RetryStorm,
        "tool_repeat": ToolRepeat,
        "no_progress": NoProgress,
        "ping_pong": PingPong,
        "ceiling": RunCeiling,
        "revisit": Revisit,
        "redelegation": Redelegation,
        "stall": Stall,
    }
)


def build(rule: LoopRule, deps: GuardDeps) -> list[LoopDetector]:
    return [DETECTORS[rule.detect](rule, deps)]
