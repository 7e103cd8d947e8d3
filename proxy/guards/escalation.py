"""EscalationSLA (`kind: escalation` with `on_breach: hold`): a run whose escalation went
unacknowledged past its SLA is held — every further call in that run is refused (HTTP 423,
code `interlock_escalation_hold`) until a human acknowledges.

Detection, clocks and notifications live in proxy/escalation/ (off the request path); this
guard only reads the run's holds from the HoldBook: one CounterStore read per call.  It runs
for every call of every agent, whatever the rule's `match:` (which selects the calls that can
raise an escalation): a hold stops the whole run.  A request carrying the answer to the
escalation's own tool call passes — that answer is the acknowledgement.
"""

from __future__ import annotations

import time

from proxy.call import Call
from proxy.escalation.holds import Hold, HoldBook
from proxy.guards.base import ALLOW, GuardDeps, Matcher, RuleGuard, Verdict
from proxy.rulemodels import EscalationRule

CODE = "interlock_escalation_hold"
STATUS = 423


class EscalationSLA(RuleGuard["EscalationRule"]):
    def __init__(self, rule: EscalationRule, deps: GuardDeps) -> None:
        super().__init__(rule)
        self.matches = Matcher({})
        self.book = HoldBook(deps.counters)

    async def on_request(self, call: Call) -> Verdict:
        """Hot path: one store read when the call has a run; deny while a hold of this rule stands."""
        if not call.run_id:
            return ALLOW
        holds = [h for h in await self.book.holds(call.run_id) if h.rule == self.name]
        if not holds or _answers(call, holds):
            return ALLOW
        hold = min(holds, key=lambda h: h.since)
        return self.verdict("deny", self._reason(call.run_id, hold), _data(hold, len(holds)), code=CODE,
                            status=STATUS)

    def _reason(self, run_id: str, hold: Hold) -> str:
        limit = self.rule.ack_within if hold.phase == "ack" else self.rule.resolve_within
        verb = "acknowledged" if hold.phase == "ack" else "resolved"
        waited = max(time.time() - hold.since, 0.0)
        return (
            f"Run '{run_id}' is on hold by rule '{self.name}': escalation {hold.escalation_id} asked for "
            f"a human and was not {verb} within {limit} (breached {waited:.0f}s ago). Interlock refuses "
            f"further calls in this run until someone acknowledges it (POST /api/escalations/"
            f"{hold.escalation_id}/ack). Wait for the human's answer instead of retrying."
        )


def _answers(call: Call, holds: list[Hold]) -> bool:
    tools = {h.tool_call_id for h in holds if h.tool_call_id}
    return bool(tools) and any(m.role == "tool" and m.tool_call_id in tools for m in call.messages)


def _data(hold: Hold, count: int) -> dict[str, object]:
    return {"escalation_id": hold.escalation_id, "phase": hold.phase, "breached_at": hold.since,
            "holds": count}


def build(rule: EscalationRule, deps: GuardDeps) -> list[EscalationSLA]:
    return [EscalationSLA(rule, deps)] if rule.on_breach == "hold" else []
