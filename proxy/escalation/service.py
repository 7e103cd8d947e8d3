"""`Escalations`: the one object the runtime builds for escalations, cascades and alerts.

    pipeline worker ──observe(call, link)──▶ cascade taint: Record(call_updates) to the writer
                         │ detections, auto-acks, guard alerts, taint marks
                         ▼ put_nowait (bounded; full: dropped, counted, logged)
                    [work queue] ──▶ worker task: tracker.open / ack, alerts.send, TaintBook.mark
    tracker clock ──breach──▶ alerts.send(breach route)
    notifier ──Delivery──▶ recorded in the store; failed escalation alert ─▶ dead alert (fallback)
    API ──create / ack / resolve / list / health

Nothing here runs on the request path: the relay's guards read holds and taint from the
CounterStore.  Delivery never blocks or fails a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.metrics import Meter
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.backoff import Backoff
from proxy.call import Call
from proxy.cascade import CascadeTracker, Taint, TaintBook, mark_of, taint_update
from proxy.escalation import alerts
from proxy.escalation.alerts import AlertRouter, AlertStats
from proxy.escalation.detect import Detection, Detector, answered_tool_calls, human_input
from proxy.escalation.health import route_health
from proxy.escalation.holds import HoldBook
from proxy.escalation.metrics import register
from proxy.escalation.model import ESCALATION_ALERTS, Delivery, Escalation
from proxy.escalation.notify import EventSink, Notifier, otel_events
from proxy.escalation.store import EscalationStore, SqlEscalationStore
from proxy.escalation.tracker import EscalationTracker
from proxy.failures import FailureLog
from proxy.guards.counters import CounterStore, StoreUnavailable
from proxy.rulemodels import EscalationRule, RouteSpec
from proxy.rules import RuleSet
from proxy.store.rows import Record

log = logging.getLogger("interlock.escalations")


@dataclass(slots=True)
class _Work:
    call: Call
    agent: str | None
    run_id: str | None
    detections: list[Detection] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    human: bool = False
    guard_events: list[dict[str, Any]] = field(default_factory=list)
    taint: Taint | None = None


@dataclass(frozen=True, slots=True)
class _RuleIndex:
    source: RuleSet | None
    rules: dict[str, Any]
    escalation: dict[str, EscalationRule]


def _next_notify_state(current: str, outcome: str) -> str:
    ok = outcome == "delivered"
    if current in ("pending", "none"):
        return "delivered" if ok else "dead"
    if (current == "delivered" and not ok) or (current == "dead" and ok):
        return "degraded"
    return current


class Escalations:
    """Built once per runtime; `start()` in the lifespan, `observe` as a pipeline observer,
    the API's methods from handlers, `aclose()` at shutdown (after the pipeline closed)."""

    def __init__(self, store: EscalationStore, counters: Any, rules: Callable[[], RuleSet],
                 submit: Callable[[Record], None], *, events: EventSink | None = None, meter: Any = None,
                 transport: Any = None, environ: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time,
                 sync_s: float = 5.0, queue_size: int = 10_000, closers: tuple[Any, ...] = ()) -> None:
        self.store = store
        self.counters = counters
        self._rules = rules
        self.submit = submit
        self.clock = clock
        self.stats = AlertStats()
        self.notifier = Notifier(self._delivered, transport=transport, environ=environ, clock=clock)
        self.alerts = AlertRouter(self.routes, self.notifier, counters, events=events, stats=self.stats)
        self.holds = HoldBook(counters)
        self.tracker = EscalationTracker(store, self.holds, self.escalation_rules, self._breached,
                                         clock=clock, sync_s=sync_s)
        self.detector = Detector()
        self.cascade = CascadeTracker()
        self.taints = TaintBook(counters)
        self.queue: asyncio.Queue[_Work | None] = asyncio.Queue(queue_size)
        self.dropped = 0
        self.retries, self.retry_backoff = 4, Backoff(0.5)
        # Database down: every call's escalation step fails; logged once, then at a backoff.
        self._step_failures = FailureLog(log, "escalation step (database)", traceback=False,
                                         hint="retried per call; the escalation queue absorbs the wait")
        self._work_failures = FailureLog(log, "escalation work", hint="that call's escalations were not opened")
        self.dead_total: dict[str, int] = {}
        self._closers = closers
        self._by_name = _RuleIndex(None, {}, {})
        self._task: asyncio.Task[None] | None = None
        if meter is not None:
            register(meter, self)

    @classmethod
    def connect(cls, engine: AsyncEngine, counters: CounterStore, rules: Callable[[], RuleSet],
                submit: Callable[[Record], None], *, otlp_endpoint: str | None, meter: Meter | None,
                **kwargs: Any) -> Escalations:
        """The service on the SQL store, alert events exported to `otlp_endpoint` when set.
        Built in Runtime.start() after the engine, the writer, the counters and the rules."""
        events, provider = otel_events(otlp_endpoint)
        closers = (provider,) if provider is not None else ()
        return cls(SqlEscalationStore(engine), counters, rules, submit,
                   events=events, meter=meter, closers=closers, **kwargs)

    # ------------------------------------------------------------------ rules

    def routes(self) -> Mapping[str, RouteSpec]:
        return self._rules().routes

    def _index(self) -> _RuleIndex:
        """Enabled rules by name, rebuilt when the rules manager swapped its rule set."""
        ruleset = self._rules()
        if self._by_name.source is not ruleset:
            rules = {r.name: r for r in ruleset.rules if r.enabled}
            escalation = {n: r for n, r in rules.items() if isinstance(r, EscalationRule)}
            self._by_name = _RuleIndex(ruleset, rules, escalation)
        return self._by_name

    def rule(self, name: str) -> Any:
        return self._index().rules.get(name)

    def escalation_rules(self) -> dict[str, EscalationRule]:
        return self._index().escalation

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Reload unfinished escalations (clocks re-armed, holds re-published) and start the tasks."""
        self.notifier.start()
        await self.tracker.start()
        try:
            for route, s in (await self.store.route_stats()).items():
                if s.get("last_delivered_at"):
                    self.stats.last_delivered[route] = s["last_delivered_at"]
        except Exception as exc:  # route health starts empty; deliveries refill it
            log.warning("route delivery history not loaded (database unavailable: %s)", exc)
        self._task = asyncio.create_task(self._work(), name="interlock-escalations")

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Drain queued work and deliveries within `grace_s` each, then stop."""
        if self._task is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)
            _, pending = await asyncio.wait([self._task], timeout=grace_s)
            for task in pending:
                task.cancel()
            self._task = None
        await self.tracker.aclose()
        await self.notifier.aclose(grace_s)
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer.shutdown()

    # ------------------------------------------------------------------ pipeline hook

    def observe(self, call: Call, link: Any) -> None:
        """Pipeline observer: runs on the pipeline worker after the call's record went to the
        writer.  Synchronous, no I/O, never raises: hands the call's taint to the writer (an
        UPDATE of its row) and queues the rest for the escalation worker."""
        try:
            work = self._inspect(call, link)
        except Exception:
            log.exception("escalation/cascade inspection failed for call %s", call.id)
            return
        if work is None:
            return
        try:
            self.queue.put_nowait(work)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("escalation queue full: call %s not inspected for escalations", call.id)

    def _inspect(self, call: Call, link: Any) -> _Work | None:
        agent = link.agent if link is not None else call.agent
        run_id = link.run_id if link is not None else call.run_id
        work = _Work(call, agent, run_id, taint=self.cascade.observe(call, link))
        if work.taint is not None:
            self.submit(Record(call_updates=[taint_update(call, link, work.taint)]))
        esc_rules = tuple(self.escalation_rules().values())
        if esc_rules:
            work.detections = self.detector.detect(call, agent, esc_rules)
            work.answered = answered_tool_calls(call)
            work.human = human_input(link)
        rules = self._index().rules
        work.guard_events = [ev for ev in call.guard_events if getattr(rules.get(str(ev.get("rule"))), "notify", None)
                             and ev.get("kind") != "escalation"]
        busy = work.taint or work.detections or work.answered or work.human or work.guard_events
        return work if busy else None

    # ------------------------------------------------------------------ worker

    async def _work(self) -> None:
        while True:
            work = await self.queue.get()
            if work is None:
                self.queue.task_done()
                return
            try:
                await self._handle(work)
            except Exception as exc:
                log.debug("escalation work failed for call %s", work.call.id, exc_info=True)
                self._work_failures.failed(exc)
            else:
                self._work_failures.succeeded()
            finally:
                self.queue.task_done()  # queue.join() waits for work in hand too

    async def _handle(self, work: _Work) -> None:
        for detection in work.detections:
            await self._retrying(functools.partial(self._open_detected, work, detection), work.call.id)
        await self._retrying(functools.partial(self._auto_ack, work), work.call.id)
        for event in work.guard_events:
            rule = self.rule(str(event.get("rule")))
            alert = alerts.guard(event, call_id=work.call.id, agent=work.agent, run_id=work.run_id, now=self.clock())
            await self.alerts.send(alert, rule.notify if rule is not None else [])
        if work.taint is not None:
            await self.taints.mark(work.run_id, mark_of(work.call, work.agent, work.taint))

    async def _retrying(self, step: Callable[[], Awaitable[None]], call_id: str) -> None:
        """A step that writes to the store, retried while the database is briefly away (the
        queue absorbs the wait; a step is idempotent: dedup by tool call, conditional acks)."""
        for attempt in range(self.retries):
            try:
                await step()
            except Exception as exc:
                if attempt == self.retries - 1:
                    raise
                log.debug("escalation step for call %s failed; retrying", call_id, exc_info=True)
                self._step_failures.failed(exc)
                await asyncio.sleep(self.retry_backoff.delay(attempt + 1))
            else:
                self._step_failures.succeeded()
                return

    async def _open_detected(self, work: _Work, d: Detection) -> None:
        if d.tool_call_id and self.tracker.by_tool_calls([d.tool_call_id]):
            return
        if d.source == "verdict" and not await self._first_verdict(d, work.run_id):
            return
        call = work.call
        esc = await self.tracker.open(d.rule, source=d.source, reason=d.reason,
                                      created_at=call.ended_at or call.started_at, run_id=work.run_id,
                                      agent=work.agent, call_id=call.id, tool_call_id=d.tool_call_id,
                                      details=d.details)
        await self.alerts.send(alerts.opened(esc, d.rule, now=self.clock()), d.rule.notify)

    async def _first_verdict(self, d: Detection, run_id: str | None) -> bool:
        """Whether this verdict-raised escalation is the first of its loop (rule, run, source
        rule).  Open ones this replica knows answer at once; a claim in the counter store covers
        another replica's that this one has not synced yet (it expires once a sync has passed).
        Redis down: open it, a duplicate page beats a missed one."""
        origin = d.details.get("from_rule")
        if self.tracker.find(d.rule.name, run_id, origin):
            return False
        try:
            return bool(await self.counters.first_seen(f"esc:opening:{d.rule.name}:{run_id}:{origin}",
                                                       2 * self.tracker.sync_s + 1.0))
        except StoreUnavailable:
            return True

    async def _auto_ack(self, work: _Work) -> None:
        call, rules = work.call, self.escalation_rules()
        if work.answered:
            for esc in self.tracker.by_tool_calls(work.answered):
                if "tool_result" in getattr(rules.get(esc.rule), "auto_ack", ("tool_result",)):
                    await self.tracker.ack(esc.id, by=f"tool result in call {call.id}", source="tool_result")
        if work.human and work.run_id:
            for esc in self.tracker.open_in_run(work.run_id):
                rule = rules.get(esc.rule)
                if "human" in getattr(rule, "auto_ack", ("human",)) and call.started_at >= esc.created_at:
                    await self.tracker.ack(esc.id, by=f"human input in call {call.id}", source="human")

    # ------------------------------------------------------------------ callbacks

    async def _breached(self, esc: Escalation, which: str, rule: EscalationRule | None) -> None:
        """Tracker clock task: alert the breach route (default: the rule's notify routes)."""
        routes = (rule.breach_notify if rule.breach_notify is not None else rule.notify) if rule else []
        await self.alerts.send(alerts.breached(esc, which, rule, now=self.clock()), routes)

    async def _delivered(self, d: Delivery) -> None:
        """Notifier worker: record the outcome; a failed escalation alert is a dead escalation."""
        self.stats.count(d.route, d.alert.kind, d.outcome, self.clock())
        try:
            await self.store.add_delivery(d.row())
        except Exception:
            log.exception("recording delivery %s to route %r failed", d.id, d.route)
        esc = d.alert.escalation
        if esc is None or d.alert.drill or d.alert.kind not in ESCALATION_ALERTS:
            return
        await self._settle_notify(esc.id, d.outcome)
        if d.outcome == "failed":
            await self._dead(esc, d)

    async def _settle_notify(self, esc_id: str, outcome: str) -> None:
        for _ in range(3):  # concurrent workers settle the same escalation: compare and set
            current = await self.store.get(esc_id)
            if current is None:
                return
            state = _next_notify_state(current.notify_state, outcome)
            if state == current.notify_state:
                return
            done = await self.store.update(esc_id, {"notify_state": state, "updated_at": self.clock()},
                                           {"notify_state": current.notify_state})
            if done is not None:
                self.tracker.note(done)
                return

    async def _dead(self, esc: Escalation, d: Delivery) -> None:
        rule = self.escalation_rules().get(esc.rule)
        self.dead_total[esc.rule] = self.dead_total.get(esc.rule, 0) + 1
        log.error("DEAD ESCALATION %s (rule %s, run %s): route %r unreachable after %d attempt(s): %s",
                  esc.id, esc.rule, esc.run_id, d.route, len(d.attempts), d.error)
        alert = alerts.dead(esc, d.route, len(d.attempts), d.error, now=self.clock())
        await self.alerts.send(alert, rule.fallback if rule is not None else [])

    # ------------------------------------------------------------------ API

    async def create(self, *, rule: str | None, reason: str, run_id: str | None = None,
                     agent: str | None = None, details: dict[str, Any] | None = None) -> Escalation:
        """POST /api/escalations.  Raises LookupError naming the rules when `rule` is unknown
        or omitted while several escalation rules exist."""
        esc_rule = self._pick_rule(rule)
        esc = await self.tracker.open(esc_rule, source="api", reason=reason, run_id=run_id, agent=agent,
                                      details=details or {})
        await self.alerts.send(alerts.opened(esc, esc_rule, now=self.clock()), esc_rule.notify)
        return esc

    def _pick_rule(self, name: str | None) -> EscalationRule:
        rules = self.escalation_rules()
        if name is not None and name in rules:
            return rules[name]
        if name is None and len(rules) == 1:
            return next(iter(rules.values()))
        known = ", ".join(sorted(rules)) or "none"
        what = f"no escalation rule named {name!r}" if name else "name the rule"
        raise LookupError(f"{what} (escalation rules: {known})")

    async def ack(self, esc_id: str, *, by: str = "api") -> Escalation | None:
        return await self.tracker.ack(esc_id, by=by, source="api")

    async def resolve(self, esc_id: str, *, by: str = "api") -> Escalation | None:
        return await self.tracker.resolve(esc_id, by=by)

    async def describe(self, escalations: list[Escalation]) -> list[dict[str, Any]]:
        """API JSON of escalations, each with its deliveries (every attempt)."""
        deliveries = await self.store.deliveries([e.id for e in escalations])
        return [{**e.public(), "deliveries": deliveries.get(e.id, [])} for e in escalations]

    def summary(self) -> dict[str, Any]:
        return {**self.tracker.counts(), "held_runs": self.tracker.held_runs(),
                "dead_total": sum(self.dead_total.values()), "queue_dropped": self.dropped,
                "alerts_dropped": self.notifier.dropped, "alerts_suppressed": self.stats.total("suppressed")}

    async def health(self) -> dict[str, Any]:
        return await route_health(self._rules(), self.store, environ=self.notifier.environ, now=self.clock(),
                                  summary=self.summary())
