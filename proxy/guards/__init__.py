"""Guards: the registry of rule kinds and the chain builder.

`GUARD_BUILDERS` is the one explicit list of enforced kinds (a builder turns one rule into
its guards).  Escalation rules are mostly enforced off the request path (proxy/escalation/);
their guard only holds runs after an SLA breach (`on_breach: hold`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from proxy.catalog import Catalog
from proxy.guards import budget, cascade, context, escalation, loops
from proxy.guards.base import ALLOW, Guard, GuardDeps, RuleGuard, Verdict
from proxy.guards.chain import GuardChain, GuardStats
from proxy.guards.counters import CounterStore, MemoryCounterStore, RedisCounterStore, make_counter_store
from proxy.guards.facts import FactsCache, Fingerprints
from proxy.guards.handoffs import FingerprintHandoffs, Handoff, HandoffSource
from proxy.pricing import Price, PriceTable

Builder = Callable[[Any, GuardDeps], Iterable[RuleGuard[Any]]]

GUARD_BUILDERS: Mapping[str, Builder] = MappingProxyType(
    {
        "budget": budget.build,
        "loop": loops.build,
        "context": context.build,
        "escalation": escalation.build,
        "cascade": cascade.build,
    }
)


def make_deps(
    counters: CounterStore,
    *,
    default_max_tokens: int = 4096,
    pricing: Mapping[str, Price] | None = None,
    handoffs: HandoffSource | None = None,
    fingerprint_chars: int = 8_000_000,
) -> GuardDeps:
    """Dependencies shared by every guard of every rule-set generation; `fingerprint_chars`
    bounds the texts kept to fingerprint (proxy/memory.py)."""
    facts = FactsCache(known=Fingerprints(max_chars=fingerprint_chars))
    return GuardDeps(
        counters=counters,
        prices=PriceTable(pricing),
        catalog=Catalog(),
        handoffs=handoffs if handoffs is not None else FingerprintHandoffs(counters, facts),
        facts=facts,
        default_max_tokens=default_max_tokens,
    )


def build_guards(rules: Iterable[Any], deps: GuardDeps) -> list[RuleGuard[Any]]:
    guards: list[RuleGuard[Any]] = []
    for rule in rules:
        builder = GUARD_BUILDERS.get(rule.kind)
        if rule.enabled and builder is not None:
            guards.extend(builder(rule, deps))
    return guards


def build_chain(ruleset: Any, deps: GuardDeps, *, stats: GuardStats | None = None) -> GuardChain:
    """A chain for a RuleSet; its `pricing:` entries override the deps' prices."""
    if getattr(ruleset, "pricing", None):
        deps = dataclasses.replace(deps, prices=deps.prices.with_overrides(ruleset.pricing))
    guards = build_guards(ruleset.rules, deps)
    observers = [deps.handoffs.record_output] if any(g.uses_handoffs for g in guards) else []
    return GuardChain(
        guards, stats=stats, observers=observers, concurrent=deps.counters.remote, done=deps.facts.forget
    )


__all__ = [
    "ALLOW",
    "GUARD_BUILDERS",
    "CounterStore",
    "FingerprintHandoffs",
    "Guard",
    "GuardChain",
    "GuardDeps",
    "GuardStats",
    "Handoff",
    "HandoffSource",
    "MemoryCounterStore",
    "RedisCounterStore",
    "RuleGuard",
    "Verdict",
    "build_chain",
    "make_counter_store",
    "make_deps",
]
