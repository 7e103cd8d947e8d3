"""Webhook delivery: signatures, payload formats, retries with backoff, failures recorded."""

from __future__ import annotations

import pytest

from proxy.escalation import alerts
from proxy.escalation.model import Delivery
from proxy.escalation.notify import Notifier, RouteError, expand, render, sign, slack_payload, verify
from tests.escalation.factory import escalation, route, rule
from tests.escalation.receiver import Receiver, dead_url


async def _ignore(_: Delivery) -> None:
    return None


def _notifier(sleeps: list[float] | None = None, environ: dict[str, str] | None = None) -> Notifier:
    async def sleep(s: float) -> None:
        if sleeps is not None:
            sleeps.append(s)

    return Notifier(_ignore, environ=environ or {}, sleep=sleep)


def test_signature_round_trip_and_tampering() -> None:
    body = b'{"type":"escalation.opened"}'
    sig = sign("k", "1700000000", body)
    assert sig.startswith("sha256=") and verify("k", "1700000000", body, sig, now=1_700_000_010)
    assert not verify("k", "1700000000", body + b" ", sig, now=1_700_000_010)
    assert not verify("other", "1700000000", body, sig, now=1_700_000_010)
    assert not verify("k", "1700000000", body, sig, now=1_700_001_000), "stale timestamps are replays"


def test_env_expansion_names_the_missing_variable() -> None:
    assert expand("${A}-${B:-dflt}", {"A": "x"}, "secret") == "x-dflt"
    with pytest.raises(RouteError, match="secret: environment variable NOPE is not set"):
        expand("${NOPE}", {}, "secret")


def test_slack_format_is_a_text_and_blocks_message() -> None:
    alert = alerts.opened(escalation(agent="support"), rule())
    msg = slack_payload(alert)
    assert msg["text"].startswith(":warning: [escalation.opened]") and msg["blocks"][0]["type"] == "section"
    assert render(alert, route("{format: slack}")).startswith(b'{"text"')
    assert b'"escalation":{' in render(alert, route())


async def test_retries_with_backoff_until_delivered() -> None:
    sleeps: list[float] = []
    with Receiver(fail_first=2) as rx:
        d = await _notifier(sleeps).deliver(alerts.opened(escalation(), rule()), "oncall",
                                            route(f'{{webhook: "{rx.url}", backoff: 1s, retries: 3}}'))
    assert d.outcome == "delivered" and [a.status for a in d.attempts] == [500, 500, 200]
    assert sleeps == [1.0, 2.0]
    ids = {p.header("x-interlock-delivery") for p in rx.posts}
    assert len(ids) == 1, "retries carry the same delivery id"


async def test_unreachable_route_fails_after_every_retry() -> None:
    d = await _notifier().deliver(alerts.opened(escalation(), rule()), "oncall",
                                  route(f'{{webhook: "{dead_url()}", retries: 2}}'))
    assert d.outcome == "failed" and len(d.attempts) == 3 and "Connect" in (d.error or "")
    assert d.row()["outcome"] == "failed" and len(d.row()["attempts"]) == 3


async def test_a_client_error_is_not_retried_and_a_missing_secret_is_reported() -> None:
    with Receiver(status=404) as rx:
        d = await _notifier().deliver(alerts.opened(escalation(), rule()), "r", route(f'{{webhook: "{rx.url}"}}'))
        assert d.outcome == "failed" and len(d.attempts) == 1 and d.http_status == 404
        d = await _notifier().deliver(alerts.opened(escalation(), rule()), "r",
                                      route(f'{{webhook: "{rx.url}", secret: "${{HOOK_KEY}}"}}'))
        assert d.error == "secret: environment variable HOOK_KEY is not set" and rx.posts[1:] == []


async def test_signed_with_the_secret_from_the_environment() -> None:
    with Receiver() as rx:
        n = _notifier(environ={"HOOK_KEY": "abc"})
        await n.deliver(alerts.opened(escalation(), rule()), "r",
                        route(f'{{webhook: "{rx.url}", secret: "${{HOOK_KEY}}", headers: {{X-Team: ops}}}}'))
        await n.aclose()
    [p] = rx.posts
    assert verify("abc", p.header("x-interlock-timestamp") or "", p.body, p.header("x-interlock-signature") or "")
    assert p.header("x-team") == "ops" and p.header("x-interlock-event") == "escalation.opened"


def test_every_alert_is_an_opentelemetry_log_event() -> None:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    from proxy.escalation.notify import OtelEvents

    provider, exporter = LoggerProvider(), InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    esc = escalation(agent="support")
    OtelEvents(provider.get_logger("test")).emit(alerts.breached(esc, "ack", rule()))
    [record] = exporter.get_finished_logs()
    log = record.log_record
    assert log.event_name == "interlock.alert" and "SLA breach" in str(log.body)
    assert log.attributes is not None and log.attributes["interlock.alert.kind"] == "escalation.breached"
    assert log.attributes["interlock.escalation_id"] == esc.id and log.severity_text == "CRITICAL"
