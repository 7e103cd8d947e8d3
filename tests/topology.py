"""K real `interlock serve --workers W` replicas behind Debian's HAProxy, on loopback.

    client (real SDK) ──▶ haproxy  (deploy/haproxy.cfg, the file docker-compose.yml mounts)
                            │ round-robin, /healthz checks every 500 ms
                 ┌──────────┴──────────┐
            replica 0 (supervisor)   replica 1 ...       each: `python -m proxy.cli serve --workers W`
             ├ worker 0  ├ worker 1                      in its own process group and spool dir
                 └──────────┬──────────┘
           one PostgreSQL database (fresh, dropped after) + one Redis, shared by every process

Use (the `topology` fixture in tests/conftest.py builds the default 2 × 2 against the `upstream`
fake; build your own for other shapes or settings):

    with Topology(tmp_path, upstream.url, replicas=2, workers=2,
                  env={"INTERLOCK_RULES_DIR": str(rules)}) as topo:
        client = openai.OpenAI(base_url=topo.url + "/v1", api_key="sk-test")
        ...
        topo.replicas[0].kill()          # SIGKILL to the whole replica (supervisor and workers)
        topo.replicas[0].start()         # same port and spool: its WAL is replayed
        topo.wait_recorded(n)            # rows in PostgreSQL (`topo.calls()`, `topo.sql(...)`)
        topo.replicas[1].direct          # a replica's own URL, bypassing HAProxy

`env` adds INTERLOCK_* settings to every replica (later `start(env=...)` overrides per replica).
Needs the `haproxy` binary (apt: haproxy), PostgreSQL and Redis: skips when one is absent, fails
under CI=true (tests/services.py).  Every process is torn down on exit, also when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.proxyserver import create_test_database, drop_test_database
from tests.services import redis_url

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def haproxy_binary() -> str:
    """Path of Debian's haproxy; skips (fails under CI=true) when it is not installed."""
    found = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.path.exists(p)), None)
    if found:
        return found
    msg = "haproxy is not installed (apt-get install haproxy)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{msg}, and CI=true makes it mandatory")
    pytest.skip(f"{msg}; install it to run the replica tests")


def _wait_http(url: str, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: exited with {proc.returncode} before it was ready:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url}: not ready in {timeout:g} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


class Replica:
    """One `interlock serve --workers W` in its own process group; `direct` is its own URL."""

    def __init__(self, index: int, root: Path, workers: int, env: dict[str, str]) -> None:
        self.index, self.workers, self.env = index, workers, env
        self.dir = root / f"replica-{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.direct = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str] | None = None, *, wait: bool = True) -> None:
        full = {**self.env, "INTERLOCK_SPOOL_DIR": str(self.dir / "spool"), **(env or {})}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "proxy.cli", "serve", "--workers", str(self.workers), "--port", str(self.port)],
                cwd=self.dir, env={**os.environ, **full}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        _wait_http(self.direct + "/healthz", self.proc, self.log)

    def kill(self) -> None:
        """SIGKILL to the supervisor and every worker at once (a host or container dying)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._reap_group()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (graceful drain); SIGKILL past `timeout`.  The supervisor's exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc is not None else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            self._reap_group()

    def worker_pids(self) -> list[int]:
        """The supervisor's live children (its workers), from /proc."""
        if self.proc is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        found.append(int(entry.name))
        return sorted(found)

    def _reap_group(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


class Topology:
    """`replicas` × `workers` behind HAProxy on one fresh PostgreSQL database and Redis."""

    def __init__(self, tmp: Path, upstream: str, *, replicas: int = 2, workers: int = 2,
                 env: Mapping[str, str] | None = None, database_url: str | None = None,
                 redis: str | None = None) -> None:
        if replicas != 2:
            raise ValueError("deploy/haproxy.cfg names two replicas (INTERLOCK_REPLICA_1/_2)")
        self.haproxy_bin = haproxy_binary()
        self.tmp = tmp
        self._own_db = database_url is None
        self.database_url = database_url or create_test_database()
        rules = tmp / "rules-empty"
        rules.mkdir(parents=True, exist_ok=True)
        self.env = {"INTERLOCK_DATABASE_URL": self.database_url, "INTERLOCK_REDIS_URL": redis or redis_url(),
                    "INTERLOCK_UPSTREAM_OPENAI": upstream, "INTERLOCK_UPSTREAM_ANTHROPIC": upstream,
                    "INTERLOCK_RULES_DIR": str(rules), "INTERLOCK_WRITER_FLUSH_INTERVAL_S": "0.02",
                    "INTERLOCK_LOG_LEVEL": "warning",
                    # the shared graph's log and lease, apart from other tests' on the same Redis
                    "INTERLOCK_GRAPH_PREFIX": f"interlock-test:{uuid.uuid4().hex[:10]}", **(env or {})}
        self.replicas = [Replica(i, tmp, workers, self.env) for i in range(replicas)]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.haproxy_log = tmp / "haproxy.log"

    def __enter__(self) -> Topology:
        try:
            for r in self.replicas:
                r.start(wait=False)
            for r in self.replicas:
                r.wait_ready()
            self._start_haproxy()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start_haproxy(self) -> None:
        env = {**os.environ, "HAPROXY_BIND": f"127.0.0.1:{self.port}",
               "HAPROXY_STATS_BIND": f"127.0.0.1:{free_port()}",
               **{f"INTERLOCK_REPLICA_{i + 1}": f"127.0.0.1:{r.port}" for i, r in enumerate(self.replicas)}}
        with self.haproxy_log.open("ab") as out:
            self.haproxy = subprocess.Popen([self.haproxy_bin, "-db", "-f", str(HAPROXY_CFG)], env=env,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_http(self.url + "/healthz", self.haproxy, self.haproxy_log, timeout=20)

    def __exit__(self, *_: object) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
        for r in self.replicas:
            r.stop()
        if self._own_db:
            drop_test_database(self.database_url)

    # -- what the database holds --------------------------------------------------------------

    def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        """Rows of `query` on the shared database (asyncpg, $1-style parameters)."""
        return asyncio.run(_fetch(self.database_url, query, *args))

    def calls(self) -> list[dict[str, Any]]:
        return self.sql("SELECT id, agent, run_id, status, model_requested FROM calls ORDER BY started_at")

    def wait_recorded(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until at least `n` calls are stored; the calls."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = self.calls()
            if len(rows) >= n:
                return rows
            time.sleep(0.1)
        raise AssertionError(f"expected {n} recorded calls in PostgreSQL, found {len(rows)}")


async def _fetch(url: str, query: str, *args: Any) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return [dict(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()
