"""The one alerting path, for escalations, SLA breaches, dead notifications and guard rules.

    rule.notify: [route names] ──▶ AlertRouter.send(alert, names)
        for each route: defined?  ──no──▶ logged, skipped
                        first time for (route, alert.dedup_key) within route.dedup?  (CounterStore:
                        shared by replicas when Redis is configured)
                          no ──▶ suppressed (counted)
                          yes ─▶ Notifier.enqueue (bounded queue; delivery in the background)
        once per alert: the OpenTelemetry event, and a log line

A loop storm of a hundred denials in one run therefore pages once per route and window.
`send` runs in background tasks; it awaits the counter store once per route and never waits
for a delivery.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from proxy.call import new_id
from proxy.escalation.model import Alert, Escalation
from proxy.escalation.notify import EventSink, Notifier
from proxy.guards.counters import StoreUnavailable
from proxy.rulemodels import EscalationRule, RouteSpec, parse_duration

log = logging.getLogger("interlock.alerts")


class AlertStats:
    """Counts by (route, alert kind, outcome): delivered | failed | suppressed | dropped."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str], int] = {}
        self.last_delivered: dict[str, float] = {}

    def count(self, route: str, kind: str, outcome: str, at: float | None = None) -> None:
        key = (route, kind, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
        if outcome == "delivered" and at is not None:
            self.last_delivered[route] = max(at, self.last_delivered.get(route, 0.0))

    def total(self, outcome: str) -> int:
        return sum(n for (_, _, o), n in self.counts.items() if o == outcome)


class AlertRouter:
    def __init__(self, routes: Callable[[], Mapping[str, RouteSpec]], notifier: Notifier, counters: Any,
                 *, events: EventSink | None = None, stats: AlertStats | None = None) -> None:
        self.routes = routes
        self.notifier = notifier
        self.counters = counters
        self.events = events
        self.stats = stats if stats is not None else AlertStats()

    async def send(self, alert: Alert, route_names: Iterable[str]) -> list[str]:
        """Queue `alert` for each named route not deduplicated; returns the routes queued."""
        names = list(dict.fromkeys(route_names))
        queued = []
        routes = self.routes()
        for name in names:
            spec = routes.get(name)
            if spec is None:
                log.warning("alert %s names route %r, which is not defined in the rules", alert.kind, name)
                continue
            if not await self._first(name, spec, alert):
                self.stats.count(name, alert.kind, "suppressed")
                continue
            if self.notifier.enqueue(alert, name, spec):
                queued.append(name)
            else:
                self.stats.count(name, alert.kind, "dropped")
        if queued or not names:
            self._announce(alert, queued)
        return queued

    async def _first(self, route: str, spec: RouteSpec, alert: Alert) -> bool:
        if alert.drill:
            return True
        try:
            return bool(await self.counters.first_seen(f"alert:{route}:{alert.dedup_key}", parse_duration(spec.dedup)))
        except StoreUnavailable:  # Redis down: the store logged the outage once; page rather than miss
            return True
        except Exception:
            log.exception("alert dedup check failed; sending %s to %r anyway", alert.kind, route)
            return True

    def _announce(self, alert: Alert, routes: list[str]) -> None:
        level = logging.ERROR if alert.severity == "critical" else logging.WARNING
        log.log(level, "ALERT %s [%s] %s (routes: %s)", alert.id, alert.kind, alert.summary, ", ".join(routes) or "none")
        if self.events is not None:
            self.events.emit(alert)


# ---------------------------------------------------------------------------- alert builders


def _who(esc: Escalation) -> str:
    agent = f"agent '{esc.agent}'" if esc.agent else "an agent"
    return f"{agent} in run '{esc.run_id}'" if esc.run_id else agent


def opened(esc: Escalation, rule: EscalationRule | None, *, now: float | None = None) -> Alert:
    clock = f" Acknowledge within {rule.ack_within}" if rule is not None and rule.ack_within else " Acknowledge"
    summary = (f"Escalation {esc.id}: {_who(esc)} asked for a human (rule '{esc.rule}'): {esc.reason}."
               f"{clock}: POST /api/escalations/{esc.id}/ack.")
    return Alert(new_id(), "escalation.opened", summary, f"esc:{esc.id}:opened", now or time.time(),
                 "warning", esc.rule, esc.run_id, esc.agent, esc.call_id, esc, {"source": esc.source},
                 drill=esc.drill)


def breached(esc: Escalation, which: str, rule: EscalationRule | None, *, now: float | None = None) -> Alert:
    limit = (rule.ack_within if which == "ack" else rule.resolve_within) if rule is not None else None
    verb = "acknowledged" if which == "ack" else "resolved"
    summary = f"SLA breach: escalation {esc.id} from {_who(esc)} was not {verb} within {limit or 'its SLA'}."
    if esc.hold:
        summary += f" Run '{esc.run_id}' is on hold: its further calls are refused until acknowledged."
    return Alert(new_id(), "escalation.breached", summary, f"esc:{esc.id}:breach:{which}", now or time.time(),
                 "critical", esc.rule, esc.run_id, esc.agent, esc.call_id, esc, {"clock": which, "sla": limit})


def dead(esc: Escalation, route: str, attempts: int, error: str | None, *, now: float | None = None) -> Alert:
    summary = (f"Dead escalation: the notification of escalation {esc.id} ({_who(esc)}, rule '{esc.rule}') "
               f"could not be delivered to route '{route}' after {attempts} attempt(s): {error}. "
               "Nobody may know that a human is needed.")
    return Alert(new_id(), "escalation.dead", summary, f"esc:{esc.id}:dead:{route}", now or time.time(),
                 "critical", esc.rule, esc.run_id, esc.agent, esc.call_id, esc,
                 {"route": route, "attempts": attempts, "error": error})


def guard(event: Mapping[str, Any], *, call_id: str, agent: str | None, run_id: str | None,
          now: float | None = None) -> Alert:
    """An alert for one guard event of a rule with `notify:` (deduplicated per rule, action and
    run, or agent when the call has no run)."""
    action, rule = str(event.get("action")), str(event.get("rule"))
    scope = run_id or agent or "-"
    return Alert(new_id(), f"guard.{action}", str(event.get("reason") or f"rule '{rule}' fired"),
                 f"guard:{rule}:{action}:{scope}", now or time.time(),
                 "critical" if action == "deny" else "warning", rule, run_id, agent, call_id, None,
                 {"kind": event.get("kind"), "code": event.get("code"), **dict(event.get("data") or {})})
