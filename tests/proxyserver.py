"""A real Interlock server on a loopback socket, in a background thread (for SDK-driven tests)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from proxy.app import InterlockApp, create_app
from proxy.serving import ThreadedServer, limits_from
from proxy.settings import Settings, load_settings


class ProxyServer:
    """`with ProxyServer(tmp_path, upstream_url) as px:` — px.url, px.app, px.runtime, px.calls()."""

    def __init__(self, tmp: Path, upstream: str, *, database_url: str | None = None,
                 rules_dir: Path | None = None, **overrides: Any) -> None:
        rules = rules_dir if rules_dir is not None else tmp / "rules-empty"
        rules.mkdir(parents=True, exist_ok=True)
        self._dropdb: str | None = None
        if database_url is None and os.environ.get("INTERLOCK_TEST_DATABASE") == "postgres":
            database_url = self._fresh_postgres()
        self.settings: Settings = load_settings(
            database_url=database_url or f"sqlite+aiosqlite:///{tmp}/interlock.db",
            upstream_openai=upstream,
            upstream_anthropic=upstream,
            spool_dir=tmp / "spool",
            rules_dir=rules,
            writer_flush_interval_s=0.02,
            **overrides,
        )
        self.app: InterlockApp = create_app(self.settings)
        self.served = ThreadedServer(self.app, graceful_timeout_s=5, limits=limits_from(self.settings))
        self.url = self.served.url

    def _fresh_postgres(self) -> str:
        """A throwaway database on the test PostgreSQL (INTERLOCK_TEST_DATABASE=postgres)."""
        url = create_test_database()
        self._dropdb = url.rsplit("/", 1)[1]
        return url

    @property
    def runtime(self) -> Any:
        return self.app.runtime

    def __enter__(self) -> ProxyServer:
        self.served.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.served.__exit__()
        if self._dropdb is not None:
            from tests.services import postgres_url

            asyncio.run(_admin_sql(postgres_url(), f'DROP DATABASE IF EXISTS "{self._dropdb}" WITH (FORCE)'))

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run a coroutine function on the server's loop (to poke the runtime safely)."""
        assert self.served.loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self.served.loop).result(timeout=30)

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.url + path, params=params, timeout=10)
        r.raise_for_status()
        return r.json()

    def wait_calls(self, n: int, timeout: float = 10.0, **params: Any) -> list[dict[str, Any]]:
        """Poll /api/calls until at least n calls are stored (recording is asynchronous)."""
        deadline = time.monotonic() + timeout
        items: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            items = self.api("/api/calls", limit=1000, **params)["items"]
            if len(items) >= n:
                return items
            time.sleep(0.02)
        raise AssertionError(f"expected {n} recorded calls, found {len(items)}: {items}")


def create_test_database() -> str:
    """A fresh, empty database on the test PostgreSQL; skips or fails (CI) when it is absent."""
    from tests.services import postgres_url

    base = postgres_url()
    name = f"interlock_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_sql(base, f'CREATE DATABASE "{name}"'))
    return base.rsplit("/", 1)[0] + "/" + name


def drop_test_database(url: str) -> None:
    from tests.services import postgres_url

    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin_sql(postgres_url(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _admin_sql(url: str, sql: str) -> None:
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
