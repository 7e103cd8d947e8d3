"""Renaming and merging agents through the API: stored calls follow, new traffic uses the new name."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai

from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer


def _ask(px: ProxyServer, system: str, text: str) -> None:
    client = openai.OpenAI(base_url=px.url + "/v1", api_key="sk-test", max_retries=0)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "system", "content": system},
                                                             {"role": "user", "content": text}])


def _agents_of(px: ProxyServer, n: int) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        calls = px.api("/api/calls", limit=100)["items"]
        if len(calls) >= n or time.monotonic() > deadline:
            return sorted(c["agent"] for c in calls)
        time.sleep(0.02)


def test_rename_rewrites_stored_calls_and_names_new_traffic(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    _ask(proxy, "You are the researcher. Find facts.", "first question")
    assert _agents_of(proxy, 1) == ["researcher"]
    time.sleep(0.3)  # let the agents row land
    r = httpx.post(proxy.url + "/api/agents/researcher/rename", json={"to": "scout"})
    assert r.status_code == 200 and r.json()["now"] == "scout" and r.json()["calls_rewritten"] == 1
    _ask(proxy, "You are the researcher. Find facts.", "second question")
    assert _agents_of(proxy, 2) == ["scout", "scout"]
    names = {a["name"] for a in proxy.api("/api/agents")["items"]}
    assert "scout" in names and "researcher" not in names


def test_merge_folds_one_agent_into_another(proxy: ProxyServer, upstream: FakeUpstream) -> None:
    _ask(proxy, "You are the researcher. Find facts.", "one")
    _ask(proxy, "You are the analyst. Weigh facts.", "two")
    assert _agents_of(proxy, 2) == ["analyst", "researcher"]
    time.sleep(0.3)
    r = httpx.post(proxy.url + "/api/agents/analyst/merge", json={"into": "researcher"})
    assert r.status_code == 200
    _ask(proxy, "You are the analyst. Weigh facts.", "three")
    assert _agents_of(proxy, 3) == ["researcher"] * 3
    agents = {a["name"]: a for a in proxy.api("/api/agents")["items"]}
    assert "analyst" not in agents and agents["researcher"]["calls"] >= 2


def test_rename_to_the_same_name_is_refused(proxy: ProxyServer, tmp_path: Path) -> None:
    r = httpx.post(proxy.url + "/api/agents/x/rename", json={"to": "x"})
    assert r.status_code == 400
