"""Runtime start-up against a database that is down: served, and no secret in any log line."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import httpx
import pytest

from proxy.providers import Router
from proxy.runtime import Runtime
from proxy.settings import load_settings
from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer

PASSWORD = "hunter2-Secret"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def down_url() -> str:
    return f"postgresql://interlock:{PASSWORD}@127.0.0.1:{closed_port()}/interlock"


async def test_a_database_down_at_start_is_logged_once_with_its_password_masked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(database_url=down_url(), spool_dir=tmp_path / "spool")
    runtime = Runtime(settings, Router(settings.all_upstreams()))
    with caplog.at_level(logging.INFO):
        for _ in range(5):  # start-up, then the retry loop's attempts
            assert not await runtime._upgrade()
    [line] = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage() or "database" in r.getMessage()]
    assert "interlock:***@127.0.0.1" in line and "serving anyway" in line
    assert PASSWORD not in caplog.text


def test_no_log_line_shows_the_database_password_while_it_is_down(
    tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG), ProxyServer(tmp_path, upstream.url, database_url=down_url(),
                                                      writer_timeout_s=0.2) as px:
        r = httpx.post(px.url + "/v1/chat/completions",
                       json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        time.sleep(1.0)  # the writer and the escalation clock fail meanwhile
    assert "***@127.0.0.1" in caplog.text
    assert PASSWORD not in caplog.text
