"""Runs held by an SLA breach (`on_breach: hold`), in the CounterStore so every replica's
escalation guard sees a hold or its release at once.

    key esc:hold:{run_id} ── a set of items "state␟phase␟escalation␟rule␟tool_call_id␟since"
        state hold|free, phase ack|resolve.  A (phase, escalation) is held while its `hold`
        item is there without a `free` one.  Both are final, so the set is order-free and
        re-adding an item (after a restart) is harmless.

`holds(run)` is one store round trip on the request path; `hold` / `release` run in the
escalation tracker's background task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.escalation.model import Escalation

_SEP = "\x1f"
TTL_S = 30 * 86_400.0
KEEP = 256


@dataclass(frozen=True, slots=True)
class Hold:
    escalation_id: str
    rule: str
    phase: str  # ack | resolve
    tool_call_id: str | None
    since: float


def phase_of(esc: Escalation) -> str:
    return "resolve" if esc.resolve_breached_at is not None else "ack"


class HoldBook:
    def __init__(self, counters: Any) -> None:
        self.counters = counters

    async def hold(self, esc: Escalation) -> None:
        if esc.run_id is None:
            return
        phase = phase_of(esc)
        since = esc.resolve_breached_at if phase == "resolve" else esc.ack_breached_at
        item = _SEP.join(("hold", phase, esc.id, esc.rule, esc.tool_call_id or "", repr(since or 0.0)))
        await self.counters.remember(f"esc:hold:{esc.run_id}", item, keep=KEEP, ttl_s=TTL_S)

    async def release(self, esc: Escalation, phases: tuple[str, ...] = ("ack", "resolve")) -> None:
        if esc.run_id is None:
            return
        for phase in phases:
            item = _SEP.join(("free", phase, esc.id, "", "", ""))
            await self.counters.remember(f"esc:hold:{esc.run_id}", item, keep=KEEP, ttl_s=TTL_S)

    async def holds(self, run_id: str) -> list[Hold]:
        held: dict[tuple[str, str], Hold] = {}
        freed: set[tuple[str, str]] = set()
        for raw in await self.counters.recent(f"esc:hold:{run_id}"):
            state, phase, esc_id, rule, tool, since = raw.split(_SEP)
            if state == "free":
                freed.add((phase, esc_id))
            else:
                held[(phase, esc_id)] = Hold(esc_id, rule, phase, tool or None, float(since))
        return [h for key, h in held.items() if key not in freed]
