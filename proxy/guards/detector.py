"""LoopDetector: what every `kind: loop` detector shares (scope keys, graduated actions,
reason sentences).  The detectors themselves are in loops.py, revisit.py, redelegation.py and
stall.py; the registry of `detect:` values is `loops.DETECTORS`.

Scope.  A rule's `scope` names whose repetitions count together (default: an agent within a
run).  A call lacking a part of its scope (no run resolved yet, no agent name) is scoped to
its own conversation, `conv:<agent>/<digest of system prompt + first user message>`: never to
a bucket shared with unrelated calls, where one conversation's "TERMINATE" would match
another's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import orjson

from proxy.call import Call
from proxy.guards.base import ALLOW, Action, GuardDeps, RuleGuard, Verdict
from proxy.guards.scopes import describe_scope, scope_getter
from proxy.rulemodels import LoopRule

CODE = "interlock_loop_detected"
CONSEQUENCE = MappingProxyType(
    {
        "deny": "Interlock refused this request.",
        "flag": "Interlock flagged it (not blocked).",
        "escalate": "Interlock raised it for human review.",
    }
)
_MAX_VALUE = 200


def _agent_run(call: Call) -> str | None:
    agent, run = call.agent, call.run_id
    if not agent or not run:
        return None
    value = f"{agent}@{run}"
    return value if len(value) <= _MAX_VALUE else None


def scope_of(scope: str) -> Callable[[Call], str | None]:
    """The call's value for a loop rule's scope, None when the call lacks a part of it."""
    if scope == "agent_run":
        return _agent_run
    if scope == "thread":
        return lambda call: None  # the conversation itself
    return scope_getter(scope)


class LoopDetector(RuleGuard["LoopRule"]):
    """Shared machinery: scope keys, graduated actions, reason sentences."""

    def __init__(self, rule: LoopRule, deps: GuardDeps) -> None:
        super().__init__(rule)
        self.store = deps.counters
        self.facts = deps.facts
        self.handoffs = deps.handoffs
        self.window = rule.window_s
        self.keep = rule.max_repeats + (rule.deny_after or 0) + 1
        self.max_repeats = rule.max_repeats
        self._prefix = f"loop:{self.name}:{rule.detect}:"
        self._scope_of = scope_of(rule.scope)
        self.can_deny = rule.action == "deny" or rule.deny_after is not None

    def conversation(self, call: Call) -> str:
        """`conv:<agent>/<digest>`: the call's own conversation, for calls lacking a scope."""
        return "conv:" + self.facts(call).thread

    def scope(self, call: Call) -> str:
        value = self._scope_of(call)
        return value if value is not None else self.conversation(call)

    def run_scope(self, call: Call) -> str:
        """The run, or the conversation when the call has no run yet."""
        return call.run_id or self.conversation(call)

    def key(self, call: Call, *parts: str) -> str:
        """`loop:<rule>:<detect>:<scope value>[:<part>...]`."""
        key = self._prefix + self.scope(call)
        return f"{key}:{':'.join(parts)}" if parts else key

    async def deny_next(self, call: Call, verdict: Verdict) -> Verdict:
        """A deny reached in `on_response` (the output is already delivered): remember it, so
        that `refused` turns down the scope's next request within `window`, and flag this call."""
        if verdict.action != "deny":
            return verdict
        await self.store.push(self.key(call, "refused"), orjson.dumps(verdict.data).decode(), keep=1,
                              ttl_s=self.window)
        return dataclasses.replace(verdict, action="flag", reason=verdict.reason + " The next request will be refused.")

    async def refused(self, call: Call) -> Verdict:
        """`on_request`: the deny an earlier `deny_next` left for this scope, else ALLOW."""
        if not self.can_deny:
            return ALLOW
        found = await self.store.recent(self.key(call, "refused"))
        if not found:
            return ALLOW
        data = orjson.loads(found[0])
        what = f"The loop {self.describe(call)} is in was refused by rule '{self.name}' (calls {', '.join(data.get('calls', []))})"
        reason = f"{what}. {CONSEQUENCE['deny']} Stop and report back to your caller with what is known."
        return self.verdict("deny", reason, data, code=CODE)

    def describe(self, call: Call) -> str:
        """Whose repetitions: `agent 'w' in run 'r1'`, or this conversation when scoped to it."""
        if self._scope_of(call) is None:
            return f"this conversation of agent '{call.agent or '?'}'"
        return describe_scope(self.rule.scope, call)

    def level(self, n: int) -> Action | None:
        """The action for the n-th occurrence (None: still tolerated)."""
        rule = self.rule
        if n <= self.max_repeats:
            return None
        if rule.deny_after is not None and n > self.max_repeats + rule.deny_after:
            return "deny"
        return rule.action

    def graded(
        self, n: int, what: str, advice: str, data: dict[str, Any], action: Action | None = None
    ) -> Verdict:
        action = action or self.level(n)
        if action is None:
            return ALLOW
        limits = f"rule '{self.name}' allows {self.max_repeats} within {self.rule.window}"
        reason = f"{what} ({limits}). {CONSEQUENCE[action]} {advice}"
        full = {
            "detect": self.rule.detect,
            "occurrence": n,
            "max_repeats": self.max_repeats,
            "deny_after": self.rule.deny_after,
            "window": self.rule.window,
            **data,
        }
        return self.verdict(action, reason, full, code=CODE)
