"""Escalations with two `interlock serve --workers 2` replicas sharing Redis and PostgreSQL: every
process runs the SLA clock, one alert goes out per breach, and the hold is enforced by all."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.escalation.receiver import Receiver
from tests.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.replicas import Replicas

TOOLS = [{"type": "function", "function": {"name": "escalate_to_human", "description": "ask a person",
                                           "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}}}]


def rules(hook: str) -> str:
    return f"""
routes:
  oncall: {{webhook: "{hook}", backoff: 20ms, retries: 2, timeout: 2s}}
rules:
  - name: human-review
    kind: escalation
    tools: ["escalate_to_*"]
    ack_within: 1500ms
    on_breach: hold
    notify: [oncall]
  - {{name: retries, kind: loop, detect: retry, max_repeats: 1, action: escalate, match: {{agent: retrier}}}}
"""


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


def client(url: str, run: str, agent: str = "support") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/agents/{agent}/v1", api_key="sk-test", max_retries=0, timeout=20,
                         default_headers={"X-Interlock-Run": run})


def escalations(url: str, **params: Any) -> list[dict[str, Any]]:
    r = httpx.get(url + "/api/escalations", params=params, timeout=10)
    r.raise_for_status()
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_a_breach_alerts_once_across_replicas_and_both_hold_the_run(tmp_path: Path, upstream: FakeUpstream) -> None:
    run = f"run-{uuid.uuid4().hex[:8]}"
    with Receiver() as rx, Replicas(tmp_path, upstream.url, rules(rx.url), workers=2,
                                          INTERLOCK_ESCALATION_SYNC_S="0.2") as rs:
        upstream.script(Reply(tool_calls=[ToolCall("escalate_to_human", {"reason": "refund over my limit"},
                                                   id="call_esc_1")]))
        client(rs.urls[0], run).chat.completions.create(model="gpt-4o", tools=TOOLS,  # type: ignore[arg-type]
                                                        messages=[{"role": "user", "content": "Refund 991"}])
        rx.wait(1, kind="escalation.opened")
        rx.wait(1, kind="escalation.breached", timeout=15)
        time.sleep(1.5)  # both clocks were due; several syncs later still one breach alert
        assert len(rx.of("escalation.breached")) == 1
        assert len(rx.of("escalation.opened")) == 1
        for url in rs.urls:
            with pytest.raises(openai.APIStatusError) as err:
                client(url, run).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            assert err.value.status_code == 423 and err.value.code == "interlock_escalation_hold"
        [row] = escalations(rs.urls[1], run_id=run)
        assert row["ack_breached_at"] and row["hold"] is True


def test_a_loop_escalating_on_both_replicas_opens_one_escalation(tmp_path: Path, upstream: FakeUpstream) -> None:
    run = f"run-{uuid.uuid4().hex[:8]}"
    with Receiver() as rx, Replicas(tmp_path, upstream.url, rules(rx.url), workers=2,
                                          INTERLOCK_ESCALATION_SYNC_S="0.2") as rs:
        for i in range(6):  # the same request again and again, alternating replicas: escalates from the 2nd
            client(rs.urls[i % 2], run, agent="retrier").chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Summarise the incident report."}])
        rx.wait(1, kind="escalation.opened")
        time.sleep(1.0)
        assert len(rx.of("escalation.opened")) == 1, [p.json for p in rx.posts]
        assert len(escalations(rs.urls[0], run_id=run)) == 1
