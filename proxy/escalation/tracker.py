"""SLA clocks: open escalations, acknowledgements, breaches, holds.  Survives restarts.

    open() ──insert──▶ store (the truth) ──▶ memory: unfinished escalations, by tool-call id
                                             │
    clock task: sleeps until the next due clock (or `sync_s`, or a wake-up)
        due ──claim: UPDATE ... SET ack_breached_at WHERE it is NULL AND status = 'open'──┐
              one replica wins; a lost claim means acked meanwhile or claimed elsewhere   │
        won ──▶ on_breach: hold → HoldBook (run refused until ack) ──▶ breach alert ◀─────┘
        every sync_s: reload unfinished escalations from the store (a restart, another
        replica's escalations and acks) and re-publish their holds

    ack()/resolve() ── conditional UPDATE on status ──▶ memory, holds released

Everything here runs in background tasks or API handlers and awaits the store; nothing runs
on the request path (the escalation guard reads holds from the HoldBook only).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from proxy.call import new_id
from proxy.escalation.holds import HoldBook, phase_of
from proxy.escalation.model import OPEN_STATES, Escalation
from proxy.escalation.store import EscalationStore
from proxy.failures import FailureLog
from proxy.rulemodels import EscalationRule

log = logging.getLogger("interlock.escalations")

OnBreach = Callable[[Escalation, str, "EscalationRule | None"], Awaitable[None]]


class EscalationTracker:
    """Owns the clocks.  `rules()` returns the active escalation rules by name (read at
    breach time, so an edited SLA applies to the alert text and routes, not to due times
    already stored)."""

    def __init__(self, store: EscalationStore, holds: HoldBook, rules: Callable[[], dict[str, EscalationRule]],
                 on_breach: OnBreach, *, clock: Callable[[], float] = time.time, sync_s: float = 5.0) -> None:
        self.store = store
        self.holds = holds
        self.rules = rules
        self.on_breach = on_breach
        self.clock = clock
        self.sync_s = sync_s
        self.unfinished: dict[str, Escalation] = {}
        self._by_tool: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.breaches = 0
        self.retry_s = 1.0  # the clock's pause after a failed tick (database down)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Reload unfinished escalations (clocks re-armed, holds re-published), then run the clock.
        A database that is down now is retried by the clock's periodic sync."""
        try:
            await self.sync()
        except Exception as exc:
            log.warning("escalations not reloaded yet (database unavailable: %s); retrying in the background", exc)
        self._task = asyncio.create_task(self._run(), name="interlock-escalation-clock")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sync(self) -> None:
        rows = await self.store.unfinished()
        self.unfinished.clear()
        self._by_tool.clear()
        for esc in rows:
            self._track(esc)
            if esc.hold:
                await self.holds.hold(esc)
        self._wake.set()

    # ------------------------------------------------------------------ transitions

    async def open(self, rule: EscalationRule, *, source: str, reason: str, created_at: float | None = None,
                   run_id: str | None = None, agent: str | None = None, call_id: str | None = None,
                   tool_call_id: str | None = None, details: dict[str, Any] | None = None,
                   drill: bool = False) -> Escalation:
        """Insert a new escalation with its due times and start its clocks (drills: no clocks)."""
        now = self.clock()
        start = created_at if created_at is not None else now
        esc = Escalation(
            new_id(), rule.name, source, start, reason, run_id=run_id, agent=agent, call_id=call_id,
            tool_call_id=tool_call_id, details=details or {}, drill=drill,
            ack_due_at=_plus(start, rule.ack_within_s), resolve_due_at=_plus(start, rule.resolve_within_s),
            notify_state="pending" if rule.notify else "none", updated_at=now,
        )  # fmt: skip
        await self.store.insert(esc)
        if not drill:
            self._track(esc)
            self._wake.set()
        return esc

    async def ack(self, esc_id: str, *, by: str, source: str) -> Escalation | None:
        """Acknowledge (idempotent); releases an ack-breach hold.  The escalation as it now is,
        None when unknown."""
        now = self.clock()
        changes = {"status": "acknowledged", "acked_at": now, "acked_by": by[:200], "ack_source": source,
                   "updated_at": now}
        esc = await self.store.update(esc_id, changes, {"status": "open"})
        if esc is None:
            return await self._refresh(esc_id)
        log.info("escalation %s acknowledged by %s (%s)", esc_id, by, source)
        if esc.hold and esc.resolve_breached_at is None:
            esc = await self._release(esc, ("ack",))
        self._track(esc)
        return esc

    async def resolve(self, esc_id: str, *, by: str) -> Escalation | None:
        """Resolve (idempotent; acknowledges too when still open); releases any hold."""
        now = self.clock()
        current = await self.store.get(esc_id)
        if current is None or current.status == "resolved":
            return current
        changes: dict[str, Any] = {"status": "resolved", "resolved_at": now, "resolved_by": by[:200],
                                   "updated_at": now}
        if current.acked_at is None:
            changes.update(acked_at=now, acked_by=by[:200], ack_source="api")
        esc = await self.store.update(esc_id, changes, {"status": OPEN_STATES})
        if esc is None:
            return await self._refresh(esc_id)
        if esc.hold:
            esc = await self._release(esc, ("ack", "resolve"))
        self._track(esc)
        return esc

    async def _release(self, esc: Escalation, phases: tuple[str, ...]) -> Escalation:
        await self.holds.release(esc, phases)
        done = await self.store.update(esc.id, {"hold": False, "updated_at": self.clock()}, {"hold": True})
        return done or esc

    async def _refresh(self, esc_id: str) -> Escalation | None:
        esc = await self.store.get(esc_id)
        if esc is not None:
            self._track(esc)
        return esc

    # ------------------------------------------------------------------ lookups (memory)

    def by_tool_calls(self, ids: Iterable[str]) -> list[Escalation]:
        found = (self.unfinished.get(self._by_tool.get(i, "")) for i in ids)
        return [e for e in found if e is not None and e.status == "open"]

    def open_in_run(self, run_id: str) -> list[Escalation]:
        return [e for e in self.unfinished.values() if e.run_id == run_id and e.status == "open"]

    def find(self, rule: str, run_id: str | None, origin: str | None) -> Escalation | None:
        """An open escalation of `rule` in `run_id` raised by the same source rule (dedup of
        verdict-raised escalations: a looping agent escalates once, not on every call)."""
        for e in self.unfinished.values():
            if e.rule == rule and e.run_id == run_id and e.status == "open" and e.details.get("from_rule") == origin:
                return e
        return None

    def note(self, esc: Escalation) -> None:
        """Take a fresher copy of an escalation (e.g. after its notify_state changed)."""
        self._track(esc)

    def _track(self, esc: Escalation) -> None:
        if esc.status == "resolved" or esc.drill:
            self.unfinished.pop(esc.id, None)
            if esc.tool_call_id:
                self._by_tool.pop(esc.tool_call_id, None)
            return
        self.unfinished[esc.id] = esc
        if esc.tool_call_id:
            self._by_tool[esc.tool_call_id] = esc.id
        self._wake.set()

    # ------------------------------------------------------------------ the clock

    def next_due(self) -> tuple[float, str, Escalation] | None:
        best: tuple[float, str, Escalation] | None = None
        for esc in self.unfinished.values():
            due = esc.due()
            if due is not None and (best is None or due[0] < best[0]):
                best = (due[0], due[1], esc)
        return best

    async def _run(self) -> None:
        synced = self.clock()
        failures = FailureLog(log, "escalation clock", hint=f"retrying every {self.retry_s:g}s")
        while True:
            try:
                synced = await self._tick(synced)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures.failed(exc)
                await asyncio.sleep(self.retry_s)
            else:
                failures.succeeded()

    async def _tick(self, synced: float) -> float:
        now = self.clock()
        if now - synced >= self.sync_s:
            await self.sync()
            synced = now
        due = self.next_due()
        if due is not None and due[0] <= now:
            await self.breach(due[2], due[1])
            return synced
        wait = min(due[0] - now if due else self.sync_s, self.sync_s - (now - synced))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.005))
        return synced

    async def breach(self, esc: Escalation, which: str) -> Escalation | None:
        """Claim the breach of clock `which` (ack | resolve); the claimer holds the run (rule
        `on_breach: hold`) and alerts.  None when the claim was lost."""
        rule = self.rules().get(esc.rule)
        now = self.clock()
        hold = rule is not None and rule.on_breach == "hold" and esc.run_id is not None
        changes: dict[str, Any] = {f"{which}_breached_at": now, "updated_at": now}
        if hold:
            changes["hold"] = True
        expect = {f"{which}_breached_at": None, "status": "open" if which == "ack" else OPEN_STATES}
        claimed = await self.store.update(esc.id, changes, expect)
        if claimed is None:
            await self._refresh(esc.id)
            return None
        self.breaches += 1
        self._track(claimed)
        log.warning("escalation %s: %s SLA breached (rule %s, run %s)%s", esc.id, which, esc.rule, esc.run_id,
                    "; run held" if hold else "")
        if hold:
            await self.holds.hold(claimed)
        await self.on_breach(claimed, which, rule)
        return claimed

    def held_runs(self) -> list[str]:
        return sorted({e.run_id for e in self.unfinished.values() if e.hold and e.run_id})

    def counts(self) -> dict[str, int]:
        values = list(self.unfinished.values())
        return {
            "open": sum(e.status == "open" for e in values),
            "acknowledged": sum(e.status == "acknowledged" for e in values),
            "breached": sum(e.breached for e in values),
            "held": sum(e.hold for e in values),
        }


def _plus(start: float, seconds: float | None) -> float | None:
    return None if seconds is None else start + seconds


__all__ = ["EscalationTracker", "phase_of"]
