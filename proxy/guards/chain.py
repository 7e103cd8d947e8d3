"""GuardChain: many rule guards behind the interface of one.

Runs guards in rule order, stops `on_request`/`on_chunk` at the first deny, appends every
non-allow verdict to `call.guard_events`, and isolates a guard that throws (logged, counted in
`GuardStats`, treated as allow unless its rule is `fail_closed`).  When a guard denies in
`on_request`, the guards before it are told to `release` what they reserved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.call import Call, Chunk
from proxy.guards.base import (
    ALLOW,
    GENERATIVE,
    SEVERITY,
    CallSlots,
    Guard,
    RuleGuard,
    Verdict,
    overrides,
    worst,
)

log = logging.getLogger("interlock.guards")

AnyGuard = RuleGuard[Any]
_MATCH_CACHE_MAX = 10_000


@dataclass(slots=True)
class GuardStats:
    """Guard failures, shared by successive chains so counters survive a hot reload."""

    errors_total: int = 0
    errors_by_rule: dict[str, int] = field(default_factory=dict)

    def count(self, rule: str) -> None:
        self.errors_total += 1
        self.errors_by_rule[rule] = self.errors_by_rule.get(rule, 0) + 1


@dataclass(slots=True, frozen=True)
class _Active:
    guards: tuple[AnyGuard, ...]
    chunkers: tuple[AnyGuard, ...]


def _failure(guard: AnyGuard) -> Verdict:
    if not guard.fail_closed:
        return ALLOW
    reason = (
        f"Interlock could not evaluate rule '{guard.name}' because of an internal error, and the "
        "rule is fail-closed, so the request was not sent. Retry later; if it persists, report "
        "it to the operator of this Interlock proxy."
    )
    return Verdict("deny", guard.name, guard.kind, reason, {"error": True}, 503, "interlock_guard_error")


class GuardChain(Guard):
    """Runs rule guards in order.  Keep one chain object for a call's whole life (from
    `on_request` to `on_response`); a hot reload swaps the manager's chain, not yours.

    `observers` run at the end of every generation's `on_response`, whatever matched (the
    handoff index records outputs this way).  `concurrent=True`, chosen when the counters are
    remote (Redis), starts every guard's hook at once so a call waits about one store round
    trip instead of one per rule; verdicts are still read in rule order, and the guards that
    ran past the first deny release their holds like the ones before it.
    """

    def __init__(
        self,
        guards: Sequence[AnyGuard],
        *,
        stats: GuardStats | None = None,
        clock: Callable[[], float] = time.time,
        observers: Sequence[Callable[[Call], Awaitable[None]]] = (),
        concurrent: bool = False,
    ) -> None:
        self.guards = tuple(guards)
        self.concurrent = concurrent
        self.observers = tuple(observers)
        self.stats = stats if stats is not None else GuardStats()
        self._clock = clock
        self._active: CallSlots[_Active] = CallSlots()
        self._match_cache: dict[tuple[str | None, ...], _Active] = {}

    @property
    def errors_total(self) -> int:
        return self.stats.errors_total

    # ------------------------------------------------------------------ selection

    def _select(self, call: Call) -> _Active:
        key = (call.operation, call.agent, call.model_requested, call.provider, call.api_key_hash)
        active = self._match_cache.get(key)
        if active is None:
            guards = tuple(g for g in self.guards if call.operation in g.operations and g.matches(call))
            active = _Active(guards, tuple(g for g in guards if overrides(g, "on_chunk")))
            if len(self._match_cache) >= _MATCH_CACHE_MAX:
                self._match_cache.clear()
            self._match_cache[key] = active
        return active

    def _record(self, call: Call, verdict: Verdict, hook: str) -> None:
        call.guard_events.append(verdict.event(hook, self._clock()))

    def _failed(self, guard: AnyGuard, hook: str, call: Call) -> Verdict:
        self.stats.count(guard.name)
        log.exception("guard %r (%s) failed in %s for call %s", guard.name, guard.kind, hook, call.id)
        return _failure(guard)

    # ------------------------------------------------------------------ hooks

    async def on_request(self, call: Call) -> Verdict:
        """Runs each matching guard's `on_request` in rule order; the first deny wins, the
        events after it are dropped and every other guard releases what it reserved.
        Returns the deny, else the most severe flag/escalate, else ALLOW."""
        active = self._select(call)
        self._active.put(call, active)
        if self.concurrent and len(active.guards) > 1:
            verdicts = list(await asyncio.gather(*(self._request(g, call) for g in active.guards)))
        else:
            verdicts = []
            for guard in active.guards:
                verdicts.append(await self._request(guard, call))
                if verdicts[-1].denied:
                    break
        return await self._settle(call, active.guards, verdicts)

    async def _request(self, guard: AnyGuard, call: Call) -> Verdict:
        try:
            return await guard.on_request(call)
        except Exception:
            return self._failed(guard, "on_request", call)

    async def _settle(self, call: Call, guards: tuple[AnyGuard, ...], verdicts: list[Verdict]) -> Verdict:
        result = ALLOW
        for i, verdict in enumerate(verdicts):
            if verdict.action == "allow":
                continue
            self._record(call, verdict, "request")
            if verdict.denied:
                await self._release(guards[:i] + guards[i + 1 : len(verdicts)], call)
                return verdict
            result = worst(result, verdict)
        return result

    def on_chunk(self, call: Call, chunk: Chunk) -> Verdict:
        """Runs the guards that meter streams; the first deny cuts the stream."""
        active = self._active.get(call)
        chunkers = active.chunkers if active is not None else self._select(call).chunkers
        for guard in chunkers:
            try:
                verdict = guard.on_chunk(call, chunk)
            except Exception:
                verdict = self._failed(guard, "on_chunk", call)
            if verdict.action != "allow":
                self._record(call, verdict, "chunk")
                if verdict.action == "deny":
                    return verdict
        return ALLOW

    async def on_response(self, call: Call) -> Verdict:
        """Runs every guard that saw the request (all of them, even after a deny), so that each
        settles its reservation, then the observers.  Idempotent per guard.  Returns the most
        severe verdict."""
        guards = (self._active.pop(call) or self._select(call)).guards
        if self.concurrent and len(guards) > 1:
            verdicts = await asyncio.gather(*(self._response(g, call) for g in guards))
        else:
            verdicts = [await self._response(g, call) for g in guards]
        result = ALLOW
        for verdict in verdicts:
            if verdict.action != "allow":
                self._record(call, verdict, "response")
                result = worst(result, verdict)
        await self._observe(call)
        return result

    async def _response(self, guard: AnyGuard, call: Call) -> Verdict:
        try:
            return await guard.on_response(call)
        except Exception:
            return self._failed(guard, "on_response", call)

    async def _observe(self, call: Call) -> None:
        """Observers see every generation, matched by a rule or not (e.g. the handoff index)."""
        if call.operation not in GENERATIVE:
            return
        for observe in self.observers:
            try:
                await observe(call)
            except Exception:
                self.stats.count("(observer)")
                log.exception("guard observer failed for call %s", call.id)

    async def release(self, call: Call) -> None:
        active = self._active.get(call)
        if active is not None:
            await self._release(active.guards, call)

    async def _release(self, guards: Sequence[AnyGuard], call: Call) -> None:
        for guard in guards:
            try:
                await guard.release(call)
            except Exception:
                self._failed(guard, "release", call)

    def __len__(self) -> int:
        return len(self.guards)


__all__ = ["SEVERITY", "GuardChain", "GuardStats"]
