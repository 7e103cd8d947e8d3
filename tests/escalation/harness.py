"""Helpers for end-to-end escalation tests: a proxy with a rules file, API polling."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.proxyserver import ProxyServer

SYNC_S = 0.5


def rules_dir(tmp: Path, text: str, name: str = "rules") -> Path:
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "rules.yaml").write_text(text)
    return d


def server(tmp: Path, upstream_url: str, rules: str, **kwargs: Any) -> ProxyServer:
    kwargs.setdefault("escalation_sync_s", SYNC_S)
    return ProxyServer(tmp, upstream_url, rules_dir=rules_dir(tmp, rules), rules_reload_s=0.1, **kwargs)


def escalations(px: ProxyServer, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = px.api("/api/escalations", **params)["items"]
    return items


def wait_escalations(px: ProxyServer, n: int = 1, timeout: float = 10.0, **params: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        items = escalations(px, **params)
        if len(items) >= n:
            return items
        time.sleep(0.02)
    raise AssertionError(f"expected {n} escalations ({params}), found {items}")


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def post(px: ProxyServer, path: str, body: dict[str, Any] | None = None) -> Any:
    r = httpx.post(px.url + path, json=body, timeout=10)
    r.raise_for_status()
    return r.json()
