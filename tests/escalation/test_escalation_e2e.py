"""Escalations through the real SDKs: detection, signed webhooks, acks, breaches, holds, dead
notifications, health.  The webhook receivers are real HTTP servers."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.escalation.harness import escalations, post, server, wait_escalations, wait_for
from tests.escalation.receiver import Post, Receiver, dead_url
from tests.fake_upstream import FakeUpstream, Reply, ToolCall

SECRET = "whsec-test-0123456789"
TOOLS = [{"type": "function", "function": {"name": "escalate_to_human", "description": "ask a person",
                                           "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}}}]


def rules(hook: str, *, ack: str = "1s", extra: str = "", route: str = "", fallback: str = "") -> str:
    return f"""
routes:
  oncall: {{webhook: "{hook}", secret: "{SECRET}", backoff: 20ms, retries: 2, timeout: 2s}}
{route}
rules:
  - name: human-review
    kind: escalation
    tools: ["escalate_to_*"]
    ack_within: {ack}
    notify: [oncall]
{fallback}{extra}
"""


def client(px: Any, agent: str = "support", run: str = "run-1") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{px.url}/agents/{agent}/v1", api_key="sk-test", max_retries=0, timeout=20,
                         default_headers={"X-Interlock-Run": run})


def ask_for_human(c: openai.OpenAI, upstream: FakeUpstream, call_id: str = "call_esc_1") -> Any:
    upstream.script(Reply(tool_calls=[ToolCall("escalate_to_human", {"reason": "refund of 4,000 EUR is over my limit"},
                                               id=call_id)]))
    return c.chat.completions.create(model="gpt-4o", tools=TOOLS,  # type: ignore[arg-type]
                                     messages=[{"role": "user", "content": "Refund order 991 please."}])


def signature_ok(p: Post) -> bool:
    """What a receiver does (README): HMAC-SHA256 over "{timestamp}.{body}" with the shared secret."""
    ts, sig = p.header("x-interlock-timestamp") or "", p.header("x-interlock-signature") or ""
    expected = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + p.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, sig) and abs(time.time() - int(ts)) < 300


def test_tool_call_escalates_with_a_signed_webhook_and_an_api_ack_stops_the_clock(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    with Receiver() as rx, server(tmp_path, upstream.url, rules(rx.url)) as px:
        ask_for_human(client(px), upstream)
        [hook] = rx.wait(1, kind="escalation.opened")
        assert signature_ok(hook)
        body = hook.json
        esc = body["escalation"]
        assert body["type"] == "escalation.opened" and body["rule"] == "human-review"
        assert (esc["run_id"], esc["agent"], esc["source"], esc["status"]) == ("run-1", "support", "tool", "open")
        assert "refund of 4,000 EUR" in esc["reason"] and esc["tool_call_id"] == "call_esc_1"
        acked = post(px, esc["ack_path"], {"by": "alice"})
        assert (acked["status"], acked["acked_by"], acked["ack_source"]) == ("acknowledged", "alice", "api")
        time.sleep(1.3)  # past ack_within: an acknowledged escalation never breaches
        [row] = escalations(px)
        assert row["status"] == "acknowledged" and not row["breached"] and row["notify_state"] == "delivered"
        assert [d["outcome"] for d in row["deliveries"]] == ["delivered"]
        assert rx.of("escalation.breached") == []


def test_the_tool_result_in_later_traffic_acknowledges(tmp_path: Path, upstream: FakeUpstream) -> None:
    with Receiver() as rx, server(tmp_path, upstream.url, rules(rx.url, ack="3s")) as px:
        c = client(px)
        first = ask_for_human(c, upstream)
        wait_escalations(px, 1)
        tc = first.choices[0].message.tool_calls[0]
        c.chat.completions.create(model="gpt-4o", tools=TOOLS, messages=[  # type: ignore[arg-type, list-item]
            {"role": "user", "content": "Refund order 991 please."},
            {"role": "assistant", "content": None, "tool_calls": [tc.model_dump()]},
            {"role": "tool", "tool_call_id": tc.id, "content": "Approved by Dana from finance."}])
        row = wait_for(lambda: next((e for e in escalations(px) if e["status"] == "acknowledged"), None),
                       what="the tool result to acknowledge")
        assert row["ack_source"] == "tool_result" and row["tool_call_id"] == tc.id


def test_breach_alerts_the_breach_route_and_hold_refuses_the_run_until_acked(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    with Receiver() as rx, Receiver() as pager:
        route = f'  pager: {{webhook: "{pager.url}", backoff: 20ms}}'
        extra = "    on_breach: hold\n    breach_notify: [pager]\n"
        with server(tmp_path, upstream.url, rules(rx.url, ack="0.5s", route=route, extra=extra)) as px:
            c = client(px)
            ask_for_human(c, upstream)
            [breach] = pager.wait(1, kind="escalation.breached")
            assert breach.json["escalation"]["hold"] is True and "on hold" in breach.json["summary"]
            assert rx.of("escalation.breached") == [], "breach_notify replaces notify for breaches"
            with pytest.raises(openai.APIStatusError) as err:
                c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "still there?"}])
            assert err.value.status_code == 423 and err.value.code == "interlock_escalation_hold"
            assert "human-review" in err.value.message and "/ack" in err.value.message
            client(px, run="run-2").chat.completions.create(  # another run is not held
                model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
            esc_id = breach.json["escalation"]["id"]
            post(px, f"/api/escalations/{esc_id}/ack")
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "go on"}])
            [row] = escalations(px, run_id="run-1")
            assert row["ack_breached_at"] and row["hold"] is False and row["status"] == "acknowledged"


def test_webhook_down_is_a_dead_escalation_alerted_on_the_fallback_route(
        tmp_path: Path, upstream: FakeUpstream) -> None:
    with Receiver() as backup:
        route = f'  backup: {{webhook: "{backup.url}", backoff: 20ms}}'
        with server(tmp_path, upstream.url, rules(dead_url(), ack="1h", route=route,
                                                  fallback="    fallback: [backup]\n")) as px:
            ask_for_human(client(px), upstream)
            [alert] = backup.wait(1, kind="escalation.dead")
            body = alert.json
            assert body["severity"] == "critical" and "could not be delivered to route 'oncall'" in body["summary"]
            row = wait_for(lambda: next((e for e in escalations(px, dead=True)), None), what="dead escalation")
            assert row["notify_state"] == "dead" and row["dead"] is True
            [failed] = [d for d in row["deliveries"] if d["route"] == "oncall"]
            assert failed["outcome"] == "failed" and len(failed["attempts"]) == 3  # 1 + retries: 2
            assert all("Connect" in a["error"] for a in failed["attempts"])
            health = px.api("/api/escalations/health")
            assert health["status"] == "degraded" and "oncall" in health["broken_routes"]
            assert health["escalations"]["dead_total"] == 1
            metrics = httpx.get(px.url + "/metrics").text
            assert re.search(r'interlock_escalations_dead_total\{[^}]*rule="human-review"[^}]*\} 1', metrics)


def test_a_loop_storm_pages_once(tmp_path: Path, upstream: FakeUpstream) -> None:
    extra = """  - {name: retry-storm, kind: loop, detect: retry, window: 10m, max_repeats: 1, action: deny, notify: [oncall]}
"""
    with Receiver() as rx, server(tmp_path, upstream.url, rules(rx.url, extra=extra)) as px:
        c = client(px, agent="fetcher")
        msgs: Any = [{"role": "user", "content": "fetch https://example.com/status"}]
        c.chat.completions.create(model="gpt-4o", messages=msgs)
        for _ in range(12):
            with pytest.raises(openai.RateLimitError):
                c.chat.completions.create(model="gpt-4o", messages=msgs)
        px.wait_calls(13)
        [page] = rx.wait(1, kind="guard.deny")
        time.sleep(0.3)
        assert len(rx.of("guard.deny")) == 1
        assert page.json["rule"] == "retry-storm" and page.json["run_id"] == "run-1"
        metrics = httpx.get(px.url + "/metrics").text
        assert re.search(r'interlock_alerts_total\{[^}]*outcome="suppressed"[^}]*route="oncall"[^}]*\} 11', metrics) \
            or re.search(r'interlock_alerts_total\{[^}]*route="oncall"[^}]*outcome="suppressed"[^}]*\} 11', metrics), metrics


def test_health_reports_routes_never_exercised(tmp_path: Path, upstream: FakeUpstream) -> None:
    route = '  quiet: {webhook: "https://hooks.invalid/x", exercise_within: 1h}'
    with Receiver() as rx, server(tmp_path, upstream.url, rules(rx.url, route=route)) as px:
        health = px.api("/api/escalations/health")
        by_name = {r["name"]: r for r in health["routes"]}
        assert by_name["quiet"]["stale"] and by_name["oncall"]["stale"]
        assert "no rule refers to this route" in by_name["quiet"]["problems"]
        created = post(px, "/api/escalations", {"reason": "manual page from the orchestrator", "run_id": "r9"})
        assert created["source"] == "api" and created["rule"] == "human-review"
        rx.wait(1, kind="escalation.opened")
        wait_for(lambda: not {r["name"]: r for r in px.api("/api/escalations/health")["routes"]}["oncall"]["stale"],
                 what="the route to count as exercised")
        assert set(px.api("/api/escalations/health")["stale_routes"]) == {"quiet"}
