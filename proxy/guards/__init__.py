"""Guards: the registry of rule kinds and the chain builder.

`RULE_KINDS` is the one explicit list of rule kinds: each pairs the kind's model
(proxy/rulemodels.py) with its builder (which turns one rule into its guards).  The builders
(`GUARD_BUILDERS`), the union a rules file is parsed with and rules/schema.json
(proxy/rules.py) are all derived from it.  Escalation rules are mostly enforced off the request path (proxy/escalation/);
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
from proxy.rulemodels import BudgetRule, CascadeRule, ContextRule, EscalationRule, LoopRule, RuleBase

Builder = Callable[[Any, GuardDeps], Iterable[RuleGuard[Any]]]


@dataclasses.dataclass(frozen=True)
class RuleKind:
    """One kind of rule: the model a rules file is validated with, and its guards' builder."""

    model: type[RuleBase]
    build: Builder

    @property
    def name(self) -> str:
        return self.model.kind_name()


RULE_KINDS: Mapping[str, RuleKind] = MappingProxyType(
    {
        kind.name: kind
        for kind in (
            RuleKind(BudgetRule, budget.build),
            RuleKind(LoopRule, loops.build),
            RuleKind(ContextRule, context.build),
            RuleKind(EscalationRule, escalation.build),
            RuleKind(CascadeRule, cascade.build),
        )
    }
)
GUARD_BUILDERS: Mapping[str, Builder] = MappingProxyType({name: k.build for name, k in RULE_KINDS.items()})


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
    "RULE_KINDS",
    "RedisCounterStore",
    "RuleGuard",
    "RuleKind",
    "Verdict",
    "build_chain",
    "make_counter_store",
    "make_deps",
]
