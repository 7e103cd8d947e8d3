"""Escalation and alert instruments on the runtime's MeterProvider (so /metrics shows them).

    interlock_alerts_total{route,kind,outcome}     delivered | failed | suppressed | dropped
    interlock_escalations_dead_total{rule}         notifications that could not be delivered
    interlock_escalations{state}                   open, acknowledged, breached, held (unfinished)
    interlock_route_last_delivery_age_seconds{route}   -1 when a route never delivered

All observable: the SDK reads the service's plain counters at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from proxy.escalation.alerts import AlertStats
from proxy.rulemodels import RouteSpec


class _Clocks(Protocol):
    def counts(self) -> Mapping[str, int]: ...


class Observed(Protocol):
    """What the instruments read at scrape time (the `Escalations` service is one)."""

    @property
    def stats(self) -> AlertStats: ...
    @property
    def dead_total(self) -> Mapping[str, int]: ...
    @property
    def tracker(self) -> _Clocks: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    def routes(self) -> Mapping[str, RouteSpec]: ...


def register(meter: Meter, svc: Observed) -> None:
    def alerts(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"route": r, "kind": k, "outcome": o}) for (r, k, o), n in list(svc.stats.counts.items())]

    def dead(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"rule": rule}) for rule, n in list(svc.dead_total.items())]

    def states(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"state": s}) for s, n in svc.tracker.counts().items()]

    def ages(_: CallbackOptions) -> Iterable[Observation]:
        now = svc.clock()
        last = svc.stats.last_delivered
        return [Observation(now - last[r] if r in last else -1.0, {"route": r}) for r in svc.routes()]

    meter.create_observable_counter("interlock.alerts", callbacks=[alerts], unit="{alert}",
                                    description="Alerts per route by kind and outcome")
    meter.create_observable_counter("interlock.escalations.dead", callbacks=[dead], unit="{escalation}",
                                    description="Escalation notifications that could not be delivered")
    meter.create_observable_gauge("interlock.escalations", callbacks=[states], unit="{escalation}",
                                  description="Unfinished escalations by state")
    meter.create_observable_gauge("interlock.route.last_delivery_age", callbacks=[ages], unit="s",
                                  description="Seconds since each route last delivered (-1: never)")
