"""Records the escalation modules pass around: an Escalation, an Alert, a Delivery.

    Escalation  one agent's request for a human: who, why, and its SLA clocks
                status: open ──ack──▶ acknowledged ──resolve──▶ resolved   (resolve also from open)
    Alert       one thing a person should hear about (an escalation opened, a clock ran out,
                a notification could not be delivered, a guard fired), with its dedup key
    Delivery    one alert sent to one route: outcome and every attempt

Times are epoch seconds (floats) everywhere; `row()` / `from_row()` convert for the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

ESCALATION_ALERTS = frozenset({"escalation.opened", "escalation.breached"})
OPEN_STATES = ("open", "acknowledged")


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()


def epoch(value: Any) -> float | None:
    """A stored timestamp (aware datetime, naive UTC datetime, float or None) as epoch seconds."""
    if value is None or isinstance(value, int | float):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


@dataclass(slots=True)
class Escalation:
    id: str
    rule: str
    source: str  # tool | pattern | verdict | api | drill
    created_at: float
    reason: str = ""
    status: str = "open"
    run_id: str | None = None
    agent: str | None = None
    call_id: str | None = None
    tool_call_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    drill: bool = False
    ack_due_at: float | None = None
    resolve_due_at: float | None = None
    acked_at: float | None = None
    acked_by: str | None = None
    ack_source: str | None = None  # api | tool_result | human
    resolved_at: float | None = None
    resolved_by: str | None = None
    ack_breached_at: float | None = None
    resolve_breached_at: float | None = None
    hold: bool = False
    notify_state: str = "pending"  # pending | delivered | degraded | dead | none
    updated_at: float = 0.0

    def row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Escalation:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in names}
        for k in values:
            if k.endswith("_at"):
                values[k] = epoch(values[k])
        return cls(**values)

    def due(self) -> tuple[float, str] | None:
        """The next clock to run out, as (when, "ack" | "resolve"), or None."""
        clocks = []
        if self.status == "open" and self.ack_due_at is not None and self.ack_breached_at is None:
            clocks.append((self.ack_due_at, "ack"))
        if self.status != "resolved" and self.resolve_due_at is not None and self.resolve_breached_at is None:
            clocks.append((self.resolve_due_at, "resolve"))
        return min(clocks) if clocks else None

    @property
    def breached(self) -> bool:
        return self.ack_breached_at is not None or self.resolve_breached_at is not None

    def public(self) -> dict[str, Any]:
        """JSON for the API and webhook payloads (ISO times)."""
        out = {k: (iso(v) if k.endswith("_at") else v) for k, v in self.row().items()}
        out["breached"] = self.breached
        out["dead"] = self.notify_state in ("dead", "degraded")
        out["ack_path"] = f"/api/escalations/{self.id}/ack"
        return out


@dataclass(frozen=True, slots=True)
class Alert:
    """Something a person should hear about.  `dedup_key` names "the same alert": a route
    sends one per key within its `dedup` window."""

    id: str
    kind: str  # escalation.opened | escalation.breached | escalation.dead | guard.<action>
    summary: str
    dedup_key: str
    at: float
    severity: str = "warning"  # info | warning | critical
    rule: str | None = None
    run_id: str | None = None
    agent: str | None = None
    call_id: str | None = None
    escalation: Escalation | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    drill: bool = False

    @property
    def escalation_id(self) -> str | None:
        return self.escalation.id if self.escalation is not None else None

    def payload(self) -> dict[str, Any]:
        """The webhook JSON body (format: json)."""
        return {
            "id": self.id,
            "type": self.kind,
            "at": iso(self.at),
            "severity": self.severity,
            "summary": self.summary,
            "rule": self.rule,
            "run_id": self.run_id,
            "agent": self.agent,
            "call_id": self.call_id,
            "escalation": self.escalation.public() if self.escalation is not None else None,
            "data": dict(self.data),
            "drill": self.drill,
        }


@dataclass(slots=True)
class Attempt:
    at: float
    ms: float
    status: int | None = None
    error: str | None = None


@dataclass(slots=True)
class Delivery:
    """The outcome of sending one alert to one route (after every retry)."""

    id: str
    alert: Alert
    route: str
    outcome: str  # delivered | failed | suppressed
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def http_status(self) -> int | None:
        return self.attempts[-1].status if self.attempts else None

    @property
    def error(self) -> str | None:
        return self.attempts[-1].error if self.attempts and self.outcome == "failed" else None

    def row(self) -> dict[str, Any]:
        a = self.alert
        return {
            "id": self.id,
            "at": self.attempts[0].at if self.attempts else a.at,
            "route": self.route,
            "alert_kind": a.kind,
            "rule": a.rule,
            "escalation_id": a.escalation_id,
            "run_id": a.run_id,
            "dedup_key": a.dedup_key[:2048],
            "outcome": self.outcome,
            "attempts": [asdict(t) for t in self.attempts],
            "http_status": self.http_status,
            "error": self.error,
            "drill": a.drill,
        }
