"""Delivery of alerts to routes, off the request path.

    AlertRouter.send ─enqueue (never blocks)─▶ [bounded queue] ─▶ N workers ─▶ deliver():
                         │ full: dropped, counted, logged          POST webhook, signed;
                         ▼                                         retry with backoff on
                                                                   network errors, 408, 429, 5xx
                                                        on_result(Delivery) ◀─┘ (recorded, metrics,
                                                                                dead-escalation check)

Webhook request: JSON body (`Alert.payload()`, or a Slack-compatible `{"text", "blocks"}` with
`format: slack`), headers `X-Interlock-Event` (alert kind), `X-Interlock-Delivery` (the same
id on every retry: receivers deduplicate on it), `X-Interlock-Timestamp` (unix seconds) and,
when the route has a `secret`, `X-Interlock-Signature: sha256=<hex HMAC-SHA256 of
"{timestamp}.{body}">` (see `verify`).  Every alert is also emitted once as an OpenTelemetry
log event `interlock.alert` by the EventSink.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from proxy.backoff import Backoff
from proxy.call import new_id
from proxy.escalation.model import Alert, Attempt, Delivery

if TYPE_CHECKING:  # imported with the first delivery: most processes never send an alert
    import httpx
from proxy.rulemodels import RouteSpec, parse_duration

log = logging.getLogger("interlock.alerts")

SIGNATURE_HEADER = "X-Interlock-Signature"
TIMESTAMP_HEADER = "X-Interlock-Timestamp"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_RETRYABLE = frozenset({408, 425, 429})


class RouteError(ValueError):
    """A route that cannot be used as configured (e.g. its secret's variable is unset)."""


def expand(text: str, environ: Mapping[str, str], where: str) -> str:
    """`${VAR}` and `${VAR:-default}` replaced from `environ`; an unset VAR without default
    raises RouteError naming `where`."""

    def sub(m: re.Match[str]) -> str:
        value = environ.get(m.group(1), m.group(2))
        if value is None:
            raise RouteError(f"{where}: environment variable {m.group(1)} is not set")
        return value

    return _ENV.sub(sub, text)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of `{timestamp}.{body}` under `secret`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance_s: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent (no replays)."""
    try:
        age = abs((time.time() if now is None else now) - float(timestamp))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign(secret, timestamp, body), signature)


def problems(spec: RouteSpec, environ: Mapping[str, str]) -> list[str]:
    """Configuration problems that would make every delivery on this route fail."""
    found = []
    for where, text in (("secret", spec.secret), *((f"headers.{k}", v) for k, v in spec.headers.items())):
        if text is not None:
            try:
                expand(text, environ, where)
            except RouteError as exc:
                found.append(str(exc))
    return found


_ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def slack_payload(alert: Alert) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (notifications) plus a block with the facts."""
    facts = [f"*{k}:* `{v}`" for k, v in (("rule", alert.rule), ("run", alert.run_id), ("agent", alert.agent),
                                          ("escalation", alert.escalation_id)) if v]
    text = f"{_ICONS.get(alert.severity, '')} [{alert.kind}] {alert.summary}".strip()
    if alert.drill:
        text = "(drill) " + text
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if facts:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": "  ".join(facts)}]})
    return {"text": text, "blocks": blocks}


def render(alert: Alert, spec: RouteSpec) -> bytes:
    return orjson.dumps(slack_payload(alert) if spec.format == "slack" else alert.payload())


def request_headers(alert: Alert, spec: RouteSpec, delivery_id: str, body: bytes,
                    environ: Mapping[str, str], now: float) -> dict[str, str]:
    """Headers of one webhook attempt; raises RouteError when the route's config is unusable."""
    ts = str(int(now))
    headers = {"content-type": "application/json", "user-agent": "interlock-alerts",
               "x-interlock-event": alert.kind, "x-interlock-delivery": delivery_id, TIMESTAMP_HEADER: ts}
    headers.update({k: expand(v, environ, f"headers.{k}") for k, v in spec.headers.items()})
    if spec.secret is not None:
        headers[SIGNATURE_HEADER] = sign(expand(spec.secret, environ, "secret"), ts, body)
    return headers


# ---------------------------------------------------------------------------- events


class EventSink(Protocol):
    def emit(self, alert: Alert) -> None:
        """Called once per alert in a background task; must not block or raise."""
        ...


class MemoryEvents:
    """In-memory twin of OtelEvents (tests)."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)


class OtelEvents:
    """Each alert as an OpenTelemetry log event `interlock.alert` (exported over OTLP when
    INTERLOCK_OTLP_ENDPOINT is set; the provider batches and never blocks)."""

    _SEVERITY = {"info": 9, "warning": 13, "critical": 17}

    def __init__(self, logger: Any) -> None:
        self._logger = logger

    def emit(self, alert: Alert) -> None:
        from opentelemetry._logs import SeverityNumber

        attrs = {"interlock.alert.kind": alert.kind, "interlock.alert.id": alert.id,
                 "interlock.alert.severity": alert.severity, "interlock.alert.drill": alert.drill}
        for key, value in (("rule", alert.rule), ("run_id", alert.run_id), ("agent", alert.agent),
                           ("call_id", alert.call_id), ("escalation_id", alert.escalation_id)):
            if value is not None:
                attrs[f"interlock.{key}"] = value
        try:
            self._logger.emit(event_name="interlock.alert", body=alert.summary, attributes=attrs,
                              severity_number=SeverityNumber(self._SEVERITY.get(alert.severity, 13)),
                              severity_text=alert.severity.upper())
        except Exception:
            log.exception("OpenTelemetry alert event failed")


def otel_events(otlp_endpoint: str | None) -> tuple[OtelEvents | None, Any]:
    """(sink, provider) exporting log events to `{otlp_endpoint}/v1/logs`; (None, None) when
    no endpoint is configured.  Shut the provider down at exit."""
    if not otlp_endpoint:
        return None, None
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider()
    exporter = OTLPLogExporter(endpoint=otlp_endpoint.rstrip("/") + "/v1/logs")
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return OtelEvents(provider.get_logger("interlock.alerts")), provider


# ---------------------------------------------------------------------------- notifier

OnResult = Callable[[Delivery], Awaitable[None]]
_Job = tuple[Alert, str, RouteSpec]


class Notifier:
    """Sends alerts to routes from a bounded queue with a few workers, so one slow route
    delays no other and the caller never waits.  `deliver` (awaited, no queue) is for drills."""

    def __init__(self, on_result: OnResult, *, transport: httpx.AsyncBaseTransport | None = None,
                 environ: Mapping[str, str] | None = None, workers: int = 4, queue_size: int = 1000,
                 max_backoff_s: float = 30.0, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.on_result = on_result
        self.environ = environ if environ is not None else os.environ
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.queue: asyncio.Queue[_Job | None] = asyncio.Queue(queue_size)
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._clock = clock
        self._n_workers = workers
        self._workers: list[asyncio.Task[None]] = []
        self.dropped = 0

    @property
    def client(self) -> httpx.AsyncClient:
        """The webhook client, built on first use."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(transport=self._transport, follow_redirects=False)
        return self._client

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"interlock-notify-{i}")
                         for i in range(self._n_workers)]

    def enqueue(self, alert: Alert, route: str, spec: RouteSpec) -> bool:
        """Non-blocking; False (counted, logged) when the queue is full."""
        try:
            self.queue.put_nowait((alert, route, spec))
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("alert queue full: dropped %s alert %s for route %r", alert.kind, alert.id, route)
            return False

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            try:
                if job is None:
                    return
                delivery = await self.deliver(*job)
                await self.on_result(delivery)
            except Exception:
                log.exception("alert delivery crashed")
            finally:
                self.queue.task_done()

    async def deliver(self, alert: Alert, route: str, spec: RouteSpec) -> Delivery:
        """Send now, retrying per the route; never raises.  May take up to the sum of the
        route's timeouts and backoffs."""
        delivery = Delivery(new_id(), alert, route, "failed")
        if spec.webhook is None:
            delivery.outcome = "delivered"  # a log/OTel-only route
            return delivery
        body = render(alert, spec)
        backoff = Backoff(parse_duration(spec.backoff), self.max_backoff_s)
        for attempt in range(spec.retries + 1):
            if attempt:
                await self._sleep(backoff.delay(attempt))
            retry = await self._attempt(delivery, spec, body)
            if delivery.outcome == "delivered" or not retry:
                break
        self._log(delivery)
        return delivery

    async def _attempt(self, delivery: Delivery, spec: RouteSpec, body: bytes) -> bool:
        """One POST; records it; returns whether another attempt could help."""
        start = self._clock()
        t0 = time.perf_counter()
        attempt = Attempt(start, 0.0)
        delivery.attempts.append(attempt)
        try:
            headers = request_headers(delivery.alert, spec, delivery.id, body, self.environ, start)
            resp = await self.client.post(spec.webhook or "", content=body, headers=headers,
                                          timeout=parse_duration(spec.timeout))
        except RouteError as exc:
            attempt.error = str(exc)
            return False
        except httpx_error() as exc:
            attempt.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return True
        finally:
            attempt.ms = round((time.perf_counter() - t0) * 1000.0, 2)
        attempt.status = resp.status_code
        if resp.is_success:
            delivery.outcome = "delivered"
            return False
        attempt.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
        return resp.status_code >= 500 or resp.status_code in _RETRYABLE

    def _log(self, d: Delivery) -> None:
        if d.outcome == "delivered":
            log.info("alert %s (%s) delivered to route %r", d.alert.id, d.alert.kind, d.route)
        else:
            log.error("alert %s (%s) NOT delivered to route %r after %d attempt(s): %s", d.alert.id,
                      d.alert.kind, d.route, len(d.attempts), d.error)

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Let queued deliveries finish within `grace_s`, then stop the workers."""
        for _ in self._workers:
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._workers = []
        if self._client is not None:
            await self._client.aclose()


def httpx_error() -> type[Exception]:
    import httpx

    return httpx.HTTPError
