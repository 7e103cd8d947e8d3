"""Run and call ids in the API: the full id or any unique prefix (proxy/api/ids.py)."""

from __future__ import annotations

import httpx
import openai

from tests.proxyserver import ProxyServer


def _call(px: ProxyServer, run: str) -> None:
    client = openai.OpenAI(base_url=px.url + "/v1", api_key="sk-test", max_retries=0,
                           default_headers={"X-Interlock-Run": run})
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"hello {run}"}])


def test_a_unique_prefix_names_a_run_and_a_call(proxy: ProxyServer) -> None:
    _call(proxy, "abc123-first")
    _call(proxy, "abc999-second")
    calls = proxy.wait_calls(2)
    call_id = next(c["id"] for c in calls if c["run_id"] == "abc123-first")

    graph = proxy.api("/api/runs/abc1/graph")
    assert graph["run"]["id"] == "abc123-first" and len(graph["nodes"]) == 1
    assert proxy.api("/api/runs/abc9")["id"] == "abc999-second"
    assert proxy.api(f"/api/calls/{call_id[:-6]}")["id"] == call_id
    assert [c["run_id"] for c in proxy.api("/api/calls", run_id="abc1")["items"]] == ["abc123-first"]


def test_an_ambiguous_prefix_is_a_400_listing_the_candidates(proxy: ProxyServer) -> None:
    _call(proxy, "abc123-first")
    _call(proxy, "abc999-second")
    proxy.wait_calls(2)

    ambiguous = httpx.get(proxy.url + "/api/runs/abc/graph")
    missing = httpx.get(proxy.url + "/api/runs/zzz")

    assert ambiguous.status_code == 400 and "abc123-first" in ambiguous.json()["detail"]
    assert missing.status_code == 404 and "no run with id 'zzz'" in missing.json()["detail"]
