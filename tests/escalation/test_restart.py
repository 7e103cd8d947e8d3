"""SLA clocks survive a restart of the proxy, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.escalation.harness import escalations, post, server, wait_escalations
from tests.escalation.receiver import Receiver
from tests.escalation.test_escalation_e2e import ask_for_human, client
from tests.fake_upstream import FakeUpstream
from tests.proxyserver import _admin_sql
from tests.services import postgres_url

RULES = """
routes:
  oncall: {{webhook: "{hook}", backoff: 20ms}}
rules:
  - {{name: human-review, kind: escalation, tools: ["escalate_*"], ack_within: 3s, on_breach: hold, notify: [oncall]}}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/restart.db"
        return
    base = postgres_url()
    name = f"interlock_esc_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_sql(base, f'CREATE DATABASE "{name}"'))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_admin_sql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_an_open_clock_breaches_after_a_restart_and_an_acked_one_does_not(
        tmp_path: Path, upstream: FakeUpstream, database_url: str) -> None:
    with Receiver() as rx:
        rules = RULES.format(hook=rx.url)
        with server(tmp_path / "first", upstream.url, rules, database_url=database_url) as px:
            started = time.monotonic()
            ask_for_human(client(px, run="run-open"), upstream, "call_open")
            ask_for_human(client(px, run="run-acked"), upstream, "call_acked")
            acked = wait_escalations(px, 1, run_id="run-acked")[0]
            post(px, f"/api/escalations/{acked['id']}/ack")
            wait_escalations(px, 1, run_id="run-open")
        assert time.monotonic() - started < 3 and rx.of("escalation.breached") == [], "stopped before the SLA ran out"
        with server(tmp_path / "second", upstream.url, rules, database_url=database_url) as px:
            [breach] = rx.wait(1, kind="escalation.breached", timeout=10)
            assert breach.json["run_id"] == "run-open"
            with pytest.raises(openai.APIStatusError) as err:
                client(px, run="run-open").chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "anyone?"}])
            assert err.value.code == "interlock_escalation_hold"
            client(px, run="run-acked").chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "thanks"}])
            time.sleep(0.2)
            assert len(rx.of("escalation.breached")) == 1
            states = {e["run_id"]: (e["status"], e["breached"]) for e in escalations(px)}
            assert states == {"run-open": ("open", True), "run-acked": ("acknowledged", False)}
