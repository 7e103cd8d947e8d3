"""/api/runs filters the console uses: run-id prefix and flag (proxy/api/graph_api.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer

LOOP_RULE = """\
rules:
  - {name: retry-storm, kind: loop, detect: retry, scope: agent_run, window: 5m, max_repeats: 1, action: flag}
"""


def _call(px: ProxyServer, run: str, text: str | None = None) -> None:
    client = openai.OpenAI(base_url=px.url + "/v1", api_key="sk-test", max_retries=0,
                           default_headers={"X-Interlock-Run": run})
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text or f"hello {run}"}])


def _runs(px: ProxyServer, expected: int, **params: str) -> list[str]:
    """Run ids matching `params` once all `expected` runs are written (totals follow the calls)."""
    for _ in range(250):
        if len(px.api("/api/runs")["items"]) == expected:
            return sorted(r["id"] for r in px.api("/api/runs", **params)["items"])
        time.sleep(0.02)
    raise AssertionError(f"expected {expected} runs")


def test_runs_filter_by_id_prefix_literally(proxy: ProxyServer) -> None:
    for run in ("abc123-first", "abc999-second", "a%c-third"):
        _call(proxy, run)

    assert _runs(proxy, 3, id_prefix="abc") == ["abc123-first", "abc999-second"]
    assert _runs(proxy, 3, id_prefix="abc9") == ["abc999-second"]
    assert _runs(proxy, 3, id_prefix="a%") == ["a%c-third"]


@pytest.fixture
def looping(tmp_path: Path, upstream: FakeUpstream) -> Iterator[ProxyServer]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "loop.yaml").write_text(LOOP_RULE)
    with ProxyServer(tmp_path, upstream.url, rules_dir=rules) as px:
        yield px


def test_runs_filter_by_flag(looping: ProxyServer) -> None:
    _call(looping, "calm")
    for _ in range(3):
        _call(looping, "stormy", "the same request")

    for _ in range(250):
        if "retry-storm" in (looping.api("/api/runs/stormy").get("flags") or []):
            break
        time.sleep(0.02)

    assert _runs(looping, 2, flag="retry-storm") == ["stormy"]
    assert _runs(looping, 2, flag="retry-") == _runs(looping, 2, flag="storm") == []  # whole flags only
