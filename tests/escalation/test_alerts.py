"""The alerting path: routes by name, dedup within the route's window, an event per alert."""

from __future__ import annotations

from proxy.escalation import alerts
from proxy.escalation.alerts import AlertRouter
from proxy.escalation.model import Alert, Delivery
from proxy.escalation.notify import MemoryEvents, Notifier
from proxy.guards.counters import MemoryCounterStore
from tests.escalation.factory import escalation, route, rule


class Queue(Notifier):
    """A notifier that only records what it was asked to send."""

    def __init__(self) -> None:
        async def ignore(_: Delivery) -> None:
            return None

        super().__init__(ignore)
        self.sent: list[tuple[str, str]] = []

    def enqueue(self, alert: Alert, route: str, spec: object) -> bool:  # type: ignore[override]
        self.sent.append((route, alert.kind))
        return True


def _router(counters: MemoryCounterStore | None = None) -> tuple[AlertRouter, Queue, MemoryEvents]:
    q, events = Queue(), MemoryEvents()
    routes = {"oncall": route("{dedup: 10m}"), "chat": route("{dedup: 10m}")}
    return AlertRouter(lambda: routes, q, counters or MemoryCounterStore(), events=events), q, events


def _deny(run: str = "r1") -> Alert:
    event = {"rule": "retry-storm", "kind": "loop", "action": "deny", "reason": "loop", "data": {"n": 4}}
    return alerts.guard(event, call_id="c", agent="fetcher", run_id=run)


async def test_a_loop_storm_is_sent_once_per_route_and_window() -> None:
    router, q, events = _router()
    for _ in range(100):
        await router.send(_deny(), ["oncall", "chat"])
    assert q.sent == [("oncall", "guard.deny"), ("chat", "guard.deny")]
    assert router.stats.total("suppressed") == 198 and len(events.alerts) == 1
    await router.send(_deny(run="r2"), ["oncall"])  # another run is another alert
    assert len(q.sent) == 3


async def test_dedup_is_shared_by_replicas_through_the_counter_store() -> None:
    counters = MemoryCounterStore()
    (a, qa, _), (b, qb, _) = _router(counters), _router(counters)
    await a.send(_deny(), ["oncall"])
    await b.send(_deny(), ["oncall"])
    assert len(qa.sent) + len(qb.sent) == 1


async def test_every_escalation_is_its_own_alert_and_unknown_routes_are_skipped() -> None:
    router, q, _ = _router()
    for _ in range(3):
        await router.send(alerts.opened(escalation(), rule()), ["oncall", "gone"])
    assert q.sent == [("oncall", "escalation.opened")] * 3
