"""Escalations seen in traffic: pure code over one finished Call and its LinkResult.

    the model called a tool named by a rule's `tools` globs      → source "tool" (its id
                                                                   lets the tool result ack it)
    the model's output text matches a rule's `patterns`           → source "pattern"
    a guard verdict with action `escalate` (rule in `from_rules`) → source "verdict"

    acknowledgements: a later request carrying the tool result of an escalation tool call
    (`answered_tool_calls`), or a `human` edge arriving in the run (`human_input`)

Runs in the pipeline worker (off the request path): no I/O, never raises on odd calls.
Credentials in what agents wrote are masked (proxy.redact) before anything is stored or sent.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.call import Call
from proxy.guards.base import Matcher
from proxy.redact import redact_text
from proxy.rulemodels import EscalationRule

_MAX_ARGS = 4000


@dataclass(frozen=True, slots=True)
class Detection:
    rule: EscalationRule
    source: str  # tool | pattern | verdict
    reason: str
    tool_call_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Subject:
    """What a rule's `match:` globs test: the call with the graph's agent name."""

    agent: str | None
    model_requested: str | None
    provider: str | None
    api_key_hash: str | None


def _glob(patterns: Iterable[str]) -> re.Pattern[str] | None:
    pats = list(patterns)
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pats)) if pats else None


class _Compiled:
    __slots__ = ("from_rules", "matches", "patterns", "rule", "tools")

    def __init__(self, rule: EscalationRule) -> None:
        self.rule = rule
        self.matches = Matcher(rule.match.globs())
        self.tools = _glob(rule.tools)
        self.patterns = [re.compile(p) for p in rule.patterns]
        self.from_rules = _glob(rule.from_rules)


class Detector:
    """Compiles the active escalation rules once per rule set (rebuilt when `rules` changes)."""

    def __init__(self) -> None:
        self._source: tuple[EscalationRule, ...] = ()
        self._compiled: list[_Compiled] = []

    def _rules(self, rules: tuple[EscalationRule, ...]) -> list[_Compiled]:
        if rules != self._source:
            self._source, self._compiled = rules, [_Compiled(r) for r in rules]
        return self._compiled

    def detect(self, call: Call, agent: str | None, rules: tuple[EscalationRule, ...]) -> list[Detection]:
        subject = _Subject(agent, call.model_requested, call.provider, call.api_key_hash)
        found: list[Detection] = []
        for c in self._rules(rules):
            if c.rule.enabled and c.matches(subject):  # type: ignore[arg-type]
                found.extend(_tools(c, call, agent))
                found.extend(_patterns(c, call, agent))
                found.extend(_verdicts(c, call))
        return found


def _tools(c: _Compiled, call: Call, agent: str | None) -> list[Detection]:
    if c.tools is None:
        return []
    out = []
    for tc in call.completion.tool_calls:
        if c.tools.match(tc.name):
            args = _arguments(redact_text(tc.arguments))
            why = _why(args)
            reason = f"{agent or 'an agent'} called {tc.name}" + (f": {why}" if why else "")
            out.append(Detection(c.rule, "tool", reason, tc.id or None, {"tool": tc.name, "arguments": args}))
    return out


def _patterns(c: _Compiled, call: Call, agent: str | None) -> list[Detection]:
    text = call.completion.text
    for rx in c.patterns:
        m = rx.search(text) if text else None
        if m is not None:
            excerpt = redact_text(text[max(m.start() - 80, 0): m.end() + 160].strip())
            reason = f"{agent or 'an agent'} wrote {excerpt!r}"
            return [Detection(c.rule, "pattern", reason, None, {"pattern": rx.pattern, "excerpt": excerpt})]
    return []


def _verdicts(c: _Compiled, call: Call) -> list[Detection]:
    if c.from_rules is None:
        return []
    out = []
    for ev in call.guard_events:
        rule = str(ev.get("rule"))
        if ev.get("action") == "escalate" and rule != c.rule.name and c.from_rules.match(rule):
            details = {"from_rule": rule, "kind": ev.get("kind"), "data": ev.get("data") or {}}
            out.append(Detection(c.rule, "verdict", redact_text(str(ev.get("reason") or f"rule '{rule}' escalated")),
                                 None, details))
    return out


def _arguments(raw: str) -> Any:
    try:
        value = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return raw[:_MAX_ARGS]
    if len(raw) > _MAX_ARGS:
        return {"truncated": raw[:_MAX_ARGS]}
    return value


def _why(args: Any) -> str:
    """The human-readable part of an escalation tool's arguments (reason, question, ...)."""
    if isinstance(args, Mapping):
        for key in ("reason", "question", "message", "summary", "request", "description"):
            value = args.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()[:500]
    return args[:500] if isinstance(args, str) else ""


def answered_tool_calls(call: Call) -> list[str]:
    """Ids of the tool calls whose results this request carries."""
    return [m.tool_call_id for m in call.messages if m.role == "tool" and m.tool_call_id]


def human_input(link: Any) -> bool:
    """The graph found new human input in this call (a `human` edge)."""
    return link is not None and any(e.kind == "human" for e in link.edges)
