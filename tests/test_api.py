"""The admin surface's auth: token (any case of `Bearer`), docs and /metrics guarded too."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import HTTPException
from starlette.requests import Request

from proxy.api import admin_guard, build_api, metrics_guard
from proxy.labelcap import LabelCap
from proxy.settings import load_settings
from proxy.telemetry import Metrics
from tests.fake_upstream import FakeUpstream
from tests.proxyserver import ProxyServer

TOKEN = "s3cret-admin"


def request(host: str, authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return Request({"type": "http", "method": "GET", "path": "/metrics", "headers": headers,
                    "client": (host, 40000), "query_string": b""})


def runtime(**settings: Any) -> Any:
    return SimpleNamespace(settings=load_settings(**settings))


def status(check: Any, req: Request) -> int:
    try:
        check(req)
    except HTTPException as exc:
        return exc.status_code
    return 200


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    tmp = tmp_path_factory.mktemp("locked")
    with FakeUpstream() as upstream, ProxyServer(tmp, upstream.url, admin_token=TOKEN, metrics_public="false") as px:
        yield px


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(locked: ProxyServer, scheme: str) -> None:
    r = httpx.get(locked.url + "/api/calls", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert r.status_code == 200


@pytest.mark.parametrize("value", [TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", ""])
def test_anything_but_the_bearer_token_is_refused(locked: ProxyServer, value: str) -> None:
    r = httpx.get(locked.url + "/api/calls", headers={"Authorization": value})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path", ["/api/docs", "/api/openapi.json", "/metrics"])
def test_docs_schema_and_metrics_need_the_token_when_it_is_set(locked: ProxyServer, path: str) -> None:
    assert httpx.get(locked.url + path).status_code == 401
    assert httpx.get(locked.url + path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_the_schema_still_lists_the_api(locked: ProxyServer) -> None:
    schema = httpx.get(locked.url + "/api/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert "/api/calls" in schema["paths"]


def test_healthz_stays_open(locked: ProxyServer) -> None:
    assert httpx.get(locked.url + "/healthz").json()["status"] == "ok"


def test_metrics_open_to_a_loopback_scraper_by_default_and_guarded_for_others() -> None:
    check = metrics_guard(runtime(admin_token=TOKEN))
    assert status(check, request("127.0.0.1")) == 200
    assert status(check, request("::1")) == 200
    assert status(check, request("10.0.0.7")) == 401
    assert status(check, request("10.0.0.7", f"Bearer {TOKEN}")) == 200


def test_metrics_public_true_opens_it_to_everyone_and_false_to_nobody_without_the_token() -> None:
    assert status(metrics_guard(runtime(admin_token=TOKEN, metrics_public="true")), request("10.0.0.7")) == 200
    closed = metrics_guard(runtime(admin_token=TOKEN, metrics_public=False))  # a YAML boolean works too
    assert status(closed, request("127.0.0.1")) == 401


def test_without_a_token_the_admin_surface_is_loopback_only() -> None:
    assert status(admin_guard(runtime()), request("127.0.0.1")) == 200
    assert status(admin_guard(runtime()), request("10.0.0.7")) == 403
    assert status(metrics_guard(runtime()), request("10.0.0.7")) == 403


def test_metrics_stay_readable_on_loopback_with_a_token_set(tmp_path: Path, upstream: FakeUpstream) -> None:
    with ProxyServer(tmp_path, upstream.url, admin_token=TOKEN) as px:
        assert httpx.get(px.url + "/metrics").status_code == 200
        assert httpx.get(px.url + "/api/openapi.json").status_code == 401


class SlowMetrics(Metrics):
    """Metrics whose render takes 0.5 s and notes the thread it ran on."""

    def __init__(self) -> None:
        super().__init__(SimpleNamespace(rules=None, escalations=None, tracer=None, writer=None, pipeline=None),
                         LabelCap(10))
        self.threads: list[int] = []
        self.started = threading.Event()

    def render(self) -> bytes:
        self.threads.append(threading.get_ident())
        self.started.set()
        time.sleep(0.5)
        return super().render()


@asynccontextmanager
async def no_lifespan(_: Any) -> AsyncIterator[None]:
    yield


async def test_a_slow_metrics_render_runs_off_the_event_loop_and_concurrent_scrapes_share_it() -> None:
    metrics = SlowMetrics()
    rt = SimpleNamespace(settings=load_settings(metrics_public="true"), metrics=metrics, writer=None, relay=None,
                         scrape_metrics=metrics.scrape)  # one process: Runtime.scrape_metrics is its own scrape
    transport = httpx.ASGITransport(build_api(rt, no_lifespan))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://interlock") as client:
        scrapes = [asyncio.create_task(client.get("/metrics")) for _ in range(3)]
        assert await asyncio.to_thread(metrics.started.wait, 5)
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert not any(s.done() for s in scrapes)  # answered while the render still runs
        bodies = [(await s).text for s in scrapes]
    assert metrics.threads != [threading.get_ident()] and len(metrics.threads) == 1
    assert bodies[0] == bodies[1] == bodies[2] and "interlock_requests_in_flight" in bodies[0]


def test_basic_credentials_with_the_token_as_password_are_accepted(locked: ProxyServer) -> None:
    encoded = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert httpx.get(locked.url + "/api/calls", headers={"Authorization": f"Basic {encoded}"}).status_code == 200


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}])
def test_a_cross_site_browser_post_is_refused(proxy: ProxyServer, headers: dict[str, str]) -> None:
    r = httpx.post(proxy.url + "/api/escalations/x/ack", headers=headers)
    assert r.status_code == 403 and "cross-origin" in r.json()["detail"]


def test_a_same_origin_post_goes_through(proxy: ProxyServer) -> None:
    r = httpx.post(proxy.url + "/api/escalations", json={"reason": "x"},
                   headers={"Origin": proxy.url, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code != 403
