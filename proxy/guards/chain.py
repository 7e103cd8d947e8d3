"""GuardChain: many rule guards behind the interface of one.

Runs guards in rule order, stops `on_request`/`on_chunk` at the first deny, appends every
non-allow verdict to `call.guard_events`, and isolates a guard that throws (logged, counted in
`GuardStats`, treated as allow unless its rule is `fail_closed`).  A guard whose shared store
is unreachable (`StoreUnavailable`) is not a bug: its rule's `on_store_error` answers (allow, or
deny with 503 `interlock_store_unavailable`), counted per rule, and the store logs the outage
once.  When a guard denies in `on_request`, the guards before it are told to `release` what
they reserved.

Per kind of call (operation, agent, model, provider, API key: the fields `match:` reads) the
chain works out once which guards apply and splits them by hook into steps:

    matching guards ──▶ per hook, the guards that run it (`Guard.runs`) ──▶ steps
                        step = one guard, or a run of consecutive guards sharing a `Batch`
                               (e.g. twenty budgets: one counter-store round trip per hook)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.call import Call, Chunk
from proxy.failures import FailureLog
from proxy.guards.base import (
    ALLOW,
    GENERATIVE,
    SEVERITY,
    Batch,
    Guard,
    RuleGuard,
    Verdict,
    overrides,
    worst,
)
from proxy.guards.counters import StoreUnavailable
from proxy.lru import CallSlots, Memo

log = logging.getLogger("interlock.guards")

AnyGuard = RuleGuard[Any]
_MATCH_CACHE_MAX = 10_000


@dataclass(slots=True)
class GuardStats:
    """Guard failures, shared by successive chains so counters survive a hot reload."""

    errors_total: int = 0
    errors_by_rule: dict[str, int] = field(default_factory=dict)
    # (rule, kind, outcome "allowed" | "denied") → guard runs the shared store failed
    store_errors: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def count(self, rule: str) -> None:
        self.errors_total += 1
        self.errors_by_rule[rule] = self.errors_by_rule.get(rule, 0) + 1

    def count_store_error(self, rule: str, kind: str, outcome: str) -> None:
        key = (rule, kind, outcome)
        self.store_errors[key] = self.store_errors.get(key, 0) + 1


Step = tuple["Batch[Any] | None", tuple[AnyGuard, ...]]  # (None, (guard,)) or (batch, guards)


def _steps(guards: Sequence[AnyGuard], *, lone: bool = True) -> tuple[Step, ...]:
    """Consecutive guards sharing a batch become one step (a lone one too, when `lone`: the
    batch is its fast path); every other guard is its own step."""
    steps: list[tuple[Batch[Any] | None, list[AnyGuard]]] = []
    for guard in guards:
        batch = guard.batch
        if batch is not None and steps and steps[-1][0] is batch:
            steps[-1][1].append(guard)
        else:
            steps.append((batch, [guard]))
    return tuple((batch if lone or len(run) > 1 else None, tuple(run)) for batch, run in steps)


@dataclass(slots=True, frozen=True)
class _Active:
    """The guards that apply to one kind of call, split by the hooks they actually run, so
    the hot loops never await a hook that would only return ALLOW."""

    guards: tuple[AnyGuard, ...]
    requesters: tuple[AnyGuard, ...]  # in rule order; verdict indices refer to this
    releasers: frozenset[AnyGuard]
    request_steps: tuple[Step, ...]
    chunk_steps: tuple[Step, ...]
    response_steps: tuple[Step, ...]

    @classmethod
    def of(cls, guards: tuple[AnyGuard, ...]) -> _Active:
        releasers = frozenset(g for g in guards if overrides(g, "release"))
        requesters = tuple(g for g in guards if g.runs("on_request") or g in releasers)
        return cls(
            guards,
            requesters,
            releasers,
            _steps(requesters),
            _steps([g for g in guards if g.runs("on_chunk")], lone=False),  # per stream event
            _steps([g for g in guards if g.runs("on_response")]),
        )


def _store_failure(guard: AnyGuard) -> Verdict:
    if guard.on_store_error == "allow":
        return ALLOW
    reason = (
        f"Interlock could not reach its shared state store (Redis) to evaluate rule '{guard.name}', "
        "and the rule sets on_store_error: deny, so the request was not sent. Retry in a few "
        "seconds; if it persists, report it to the operator of this Interlock proxy."
    )
    return Verdict("deny", guard.name, guard.kind, reason, {"store_error": True}, 503,
                   "interlock_store_unavailable", 1.0)


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
    remote (Redis), starts every step's hook at once so a call waits about one store round
    trip instead of one per rule; verdicts are still read in rule order, and the guards that
    ran past the first deny release their holds like the ones before it.  `done` is told
    when a call's `on_response` finished (the facts cache drops what it computed for it).
    """

    def __init__(
        self,
        guards: Sequence[AnyGuard],
        *,
        stats: GuardStats | None = None,
        clock: Callable[[], float] = time.time,
        observers: Sequence[Callable[[Call], Awaitable[None]]] = (),
        concurrent: bool = False,
        done: Callable[[Call], None] | None = None,
    ) -> None:
        self.guards = tuple(guards)
        self.concurrent = concurrent
        self.observers = tuple(observers)
        self._done = done
        self.stats = stats if stats is not None else GuardStats()
        self._clock = clock
        self._active: CallSlots[_Active] = CallSlots()
        self._match_cache: Memo[tuple[str | None, ...], _Active] = Memo(_MATCH_CACHE_MAX)
        self._failures: dict[str, FailureLog] = {}  # per guard: Redis down fails every call

    @property
    def errors_total(self) -> int:
        return self.stats.errors_total

    # ------------------------------------------------------------------ selection

    def _select(self, call: Call) -> _Active:
        key = (call.operation, call.agent, call.model_requested, call.provider, call.api_key_hash)
        active = self._match_cache.get(key)
        if active is None:
            active = _Active.of(
                tuple(g for g in self.guards if call.operation in g.operations and g.matches(call))
            )
            self._match_cache.keep(key, active)
        return active

    def _record(self, call: Call, verdict: Verdict, hook: str) -> None:
        call.guard_events.append(verdict.event(hook, self._clock()))

    def _failed(self, guard: AnyGuard, hook: str, call: Call, exc: BaseException | None = None) -> Verdict:
        """Counts `exc` (default: the exception being handled) and logs it: the first in full,
        repeats at a backoff (a store that is down fails every call, thousands a second).  A
        store outage is the rule's `on_store_error`, counted apart and logged by the store."""
        exc = exc if exc is not None else sys.exc_info()[1]
        if isinstance(exc, StoreUnavailable):
            verdict = _store_failure(guard)
            self.stats.count_store_error(guard.name, guard.kind, "denied" if verdict.denied else "allowed")
            return verdict
        self.stats.count(guard.name)
        failures = self._failures.get(guard.name)
        if failures is None:
            failures = self._failures[guard.name] = FailureLog(
                log, f"guard {guard.name!r} ({guard.kind})",
                hint=f"first in {hook} for call {call.id}; each failing call is allowed unless the rule sets fail_closed")
        failures.failed(exc or RuntimeError("unknown failure"))
        return _failure(guard)

    # ------------------------------------------------------------------ hooks

    async def on_request(self, call: Call) -> Verdict:
        """Runs each matching guard's `on_request` in rule order; the first deny wins, the
        events after it are dropped and every other guard releases what it reserved.
        Returns the deny, else the most severe flag/escalate, else ALLOW."""
        active = self._select(call)
        self._active.put(call, active)
        if self.concurrent and len(active.request_steps) > 1:
            notable, ran = await self._at_once(call, active.request_steps), len(active.requesters)
        else:
            notable, ran = await self._in_order(call, active.request_steps)
        if not notable:
            return ALLOW
        return await self._settle(call, active, notable, ran)

    async def _in_order(self, call: Call, steps: tuple[Step, ...]) -> tuple[list[tuple[int, Verdict]], int]:
        """(index, verdict) of the non-allow answers, and how many guards ran (up to a deny)."""
        notable: list[tuple[int, Verdict]] = []
        i = 0
        for step in steps:
            batch, guards = step
            if batch is None:
                guard = guards[0]
                try:
                    verdict = await guard.on_request(call)
                except Exception:
                    verdict = self._failed(guard, "on_request", call)
                if verdict is not ALLOW and verdict.action != "allow":
                    notable.append((i, verdict))
                    if verdict.action == "deny":
                        return notable, i + 1
                i += 1
                continue
            for j, verdict in enumerate(await self._step(step, call, "on_request")):
                if verdict is not ALLOW and verdict.action != "allow":
                    notable.append((i + j, verdict))
                    if verdict.action == "deny":
                        return notable, i + j + 1
            i += len(guards)
        return notable, i

    async def _at_once(self, call: Call, steps: tuple[Step, ...]) -> list[tuple[int, Verdict]]:
        """Every step started at once: (index, verdict) of the non-allow answers.  A batch that
        stopped at a deny answers for fewer guards than it has; the ones after it hold nothing."""
        runs = await asyncio.gather(*(self._step(step, call, "on_request") for step in steps))
        notable: list[tuple[int, Verdict]] = []
        offset = 0
        for (_, guards), verdicts in zip(steps, runs, strict=True):
            notable += [(offset + j, v) for j, v in enumerate(verdicts) if v.action != "allow"]
            offset += len(guards)
        return notable

    async def _step(self, step: Step, call: Call, hook: str) -> Sequence[Verdict]:
        """One step's `hook` ("on_request" or "on_response"): the verdicts of its guards, a
        guard that raised (or, in a batch, every guard when the batch raised) as failed."""
        batch, guards = step
        try:
            if batch is None:
                return (await getattr(guards[0], hook)(call),)
            return await getattr(batch, hook)(guards, call, lambda g, exc: self._failed(g, hook, call, exc))
        except Exception:
            return [self._failed(g, hook, call) for g in guards]

    async def _settle(
        self, call: Call, active: _Active, notable: list[tuple[int, Verdict]], ran: int
    ) -> Verdict:
        result = ALLOW
        guards = active.requesters
        for i, verdict in notable:
            self._record(call, verdict, "request")
            if verdict.denied:
                others = [g for g in guards[:i] + guards[i + 1 : ran] if g in active.releasers]
                await self._release(others, call)
                return verdict
            result = worst(result, verdict)
        return result

    def on_chunk(self, call: Call, chunk: Chunk) -> Verdict:
        """Runs the guards that meter streams; the first deny cuts the stream."""
        active = self._active.get(call)
        for batch, guards in (active if active is not None else self._select(call)).chunk_steps:
            if batch is not None:
                verdict = self._chunk_batch(batch, guards, call, chunk)
            else:
                guard = guards[0]
                try:
                    verdict = guard.on_chunk(call, chunk)
                except Exception:
                    verdict = self._failed(guard, "on_chunk", call)
                if verdict is not ALLOW and verdict.action != "allow":
                    self._record(call, verdict, "chunk")
            if verdict.action == "deny":
                return verdict
        return ALLOW

    def _chunk_batch(
        self, batch: Batch[Any], guards: tuple[AnyGuard, ...], call: Call, chunk: Chunk
    ) -> Verdict:
        """Records the batch's non-allow verdicts; returns its deny, else ALLOW."""
        try:
            verdicts = batch.on_chunk(guards, call, chunk)
        except Exception:
            verdicts = [self._failed(g, "on_chunk", call) for g in guards]
        for verdict in verdicts:
            if verdict.action != "allow":
                self._record(call, verdict, "chunk")
                if verdict.action == "deny":
                    return verdict
        return ALLOW

    async def on_response(self, call: Call) -> Verdict:
        """Runs every guard that saw the request (all of them, even after a deny), so that each
        settles its reservation, then the observers.  Idempotent per guard.  Returns the most
        severe verdict.  Events are recorded once every guard ran."""
        steps = (self._active.pop(call) or self._select(call)).response_steps
        if self.concurrent and len(steps) > 1:
            runs = await asyncio.gather(*(self._step(step, call, "on_response") for step in steps))
            notable = [v for run in runs for v in run if v is not ALLOW and v.action != "allow"]
        else:
            notable = await self._responses(call, steps)
        result = ALLOW
        for verdict in notable:
            self._record(call, verdict, "response")
            result = worst(result, verdict)
        if self.observers:
            await self._observe(call)
        if self._done is not None:
            self._done(call)
        return result

    async def _responses(self, call: Call, steps: tuple[Step, ...]) -> list[Verdict]:
        """The non-allow verdicts of every step's `on_response`, run one after the other."""
        notable: list[Verdict] = []
        for step in steps:
            batch, guards = step
            if batch is None:
                guard = guards[0]
                try:
                    verdict = await guard.on_response(call)
                except Exception:
                    verdict = self._failed(guard, "on_response", call)
                if verdict is not ALLOW and verdict.action != "allow":
                    notable.append(verdict)
                continue
            notable += [v for v in await self._step(step, call, "on_response") if v is not ALLOW and v.action != "allow"]
        return notable

    async def _observe(self, call: Call) -> None:
        """Observers see every generation, matched by a rule or not (e.g. the handoff index)."""
        if call.operation not in GENERATIVE:
            return
        for observe in self.observers:
            try:
                await observe(call)
            except StoreUnavailable:  # counted, not logged per call: the store logs the outage
                self.stats.count_store_error("(observer)", "observer", "allowed")
            except Exception:
                self.stats.count("(observer)")
                log.exception("guard observer failed for call %s", call.id)

    async def release(self, call: Call) -> None:
        active = self._active.get(call)
        if active is not None:
            await self._release([g for g in active.guards if g in active.releasers], call)

    async def _release(self, guards: Sequence[AnyGuard], call: Call) -> None:
        for guard in guards:
            try:
                await guard.release(call)
            except Exception:
                self._failed(guard, "release", call)

    def __len__(self) -> int:
        return len(self.guards)


__all__ = ["SEVERITY", "GuardChain", "GuardStats"]
