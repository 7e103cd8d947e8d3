"""Quarantine (`kind: cascade`): act on a request whose new input carries tainted content —
another call's output that is faulty (cut, filtered, errored, flagged) or descends from one —
before the model builds on it.  Deny answers HTTP 400, code `interlock_quarantined`.

    on_request   TaintBook.lookup: is most of a tainted output (same run) in the new input?
                 → the rule's action, when the fault kinds are in `sources` and the
                   hop count is within `max_depth`, and the call matches the rule
    on_response  this call is a fault, or consumed taint → TaintBook.mark its output, so its
                 own consumers are recognised at once (the graph's verdict follows later)

It watches every call (to follow taint), whatever `match:` says; `match:` selects the calls it
acts on.  One CounterStore read per call, one write per tainted call.
"""

from __future__ import annotations

from proxy.call import Call
from proxy.cascade import Hit, TaintBook, mark_of, request_taint
from proxy.guards.base import ALLOW, GuardDeps, Matcher, RuleGuard, Verdict
from proxy.lru import CallSlots
from proxy.rulemodels import CascadeRule

CODE = "interlock_quarantined"
_FAULTS = {
    "length": "its output was cut at max_tokens",
    "content_filter": "its output was filtered",
    "upstream_error": "the upstream failed",
    "guard": "a guard rule flagged it",
    "truncated_handoff": "its own input was a truncated handoff",
}


class Quarantine(RuleGuard["CascadeRule"]):
    def __init__(self, rule: CascadeRule, deps: GuardDeps) -> None:
        super().__init__(rule)
        self.applies = self.matches
        self.matches = Matcher({})
        self.deps = deps
        self.book = TaintBook(deps.counters, deps.facts)
        self._hits: CallSlots[Hit] = CallSlots(cap=50_000)

    async def on_request(self, call: Call) -> Verdict:
        """Hot path: one store read (shared by every cascade rule with the same overlap)."""
        overlap = self.rule.overlap
        hit = await self.deps.facts(call).once(f"taint:{overlap}", lambda: self.book.lookup(call, overlap))
        if hit is None:
            return ALLOW
        self._hits.put(call, hit)
        if not self.applies(call) or not self._acts_on(hit):
            return ALLOW
        return self.verdict(self.rule.action, self._reason(hit), _data(hit), code=CODE, status=400)

    def _acts_on(self, hit: Hit) -> bool:
        deep_ok = self.rule.max_depth is None or hit.depth <= self.rule.max_depth
        return deep_ok and bool(set(hit.mark.faults) & set(self.rule.sources))

    def _reason(self, hit: Hit) -> str:
        m = hit.mark
        why = "; ".join(_FAULTS.get(k, k) for k in m.faults)
        origin = (f"which is faulty ({why})" if m.depth == 0
                  else f"which descends from faulty call(s) {', '.join(m.roots)} ({why})")
        verb = {"deny": "refused", "flag": "flagged", "escalate": "escalated"}[self.rule.action]
        return (
            f"Interlock {verb} this request (quarantine rule '{self.name}'): its new input contains "
            f"{hit.overlap:.0%} of the output of call {m.call_id} (agent '{m.agent}'), {origin}. Building on "
            f"it would carry the damage {hit.depth} hop(s) down the run. Regenerate that output or have a "
            "human check it, instead of resending this input."
        )

    async def on_response(self, call: Call) -> Verdict:
        """Marks the output of a faulty or tainted call (one store write); never denies."""
        hit = self._hits.pop(call)
        mine = request_taint(call, hit) if call.outcome != "denied" else None
        if mine is not None:
            await self.book.mark(call.run_id, mark_of(call, call.agent, mine, self.deps.facts(call)))
        return ALLOW


def _data(hit: Hit) -> dict[str, object]:
    m = hit.mark
    return {"source_call": m.call_id, "source_agent": m.agent, "roots": list(m.roots) or [m.call_id],
            "faults": list(m.faults), "depth": hit.depth, "overlap": round(hit.overlap, 3)}


def build(rule: CascadeRule, deps: GuardDeps) -> list[Quarantine]:
    return [Quarantine(rule, deps)]
