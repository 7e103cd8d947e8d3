"""Factories for escalation unit tests: rules from YAML, escalations, a tracker over the
in-memory store and counters with a hand-driven clock."""

from __future__ import annotations

import itertools
from typing import Any

import yaml

from proxy.escalation.holds import HoldBook
from proxy.escalation.model import Escalation
from proxy.escalation.store import MemoryEscalationStore
from proxy.escalation.tracker import EscalationTracker
from proxy.guards.counters import MemoryCounterStore
from proxy.rulemodels import EscalationRule, RouteSpec
from proxy.rules import parse_rule

_ids = itertools.count(1)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rule(text: str = "{}") -> EscalationRule:
    data: dict[str, Any] = {"name": "human-review", "kind": "escalation", "tools": ["escalate_*"],
                            "ack_within": "10s", **yaml.safe_load(text)}
    parsed = parse_rule(data)
    assert isinstance(parsed, EscalationRule)
    return parsed


def route(text: str = "{}") -> RouteSpec:
    return RouteSpec.model_validate({"webhook": "http://127.0.0.1:9/hook", **yaml.safe_load(text)})


def escalation(**overrides: Any) -> Escalation:
    fields: dict[str, Any] = {"id": f"esc-{next(_ids)}", "rule": "human-review", "source": "tool",
                              "created_at": 1_000_000.0, "reason": "help", "run_id": "run-1"}
    fields.update(overrides)
    return Escalation(**fields)


class Breaches:
    """The tracker's on_breach callback, recording what it was told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, esc: Escalation, which: str, rule: EscalationRule | None) -> None:
        self.seen.append((esc.id, which))


def tracker(store: MemoryEscalationStore, counters: MemoryCounterStore, clock: Clock, rules: list[EscalationRule],
            breaches: Breaches) -> EscalationTracker:
    by_name = {r.name: r for r in rules}
    return EscalationTracker(store, HoldBook(counters), lambda: by_name, breaches, clock=clock, sync_s=3600.0)
