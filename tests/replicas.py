"""Several `interlock serve` processes sharing one Redis and one PostgreSQL database: replicas
as a load balancer sees them, for tests that need the same answers at any replica count.

    with Replicas(tmp, upstream.url, rules_yaml) as rs:   rs.urls[i]; rs.log(i); rs.metrics(i)
        Replicas(..., count=1)                            the single-process baseline
        Replicas(..., workers=2)                          each replica `interlock serve --workers 2`
        Replicas(..., redis_url="redis://127.0.0.1:1/0")  Redis unreachable from the start

The first process migrates the database before the others start (two fresh processes would race
on the migration).  The tests round-robin between `urls` themselves: which process serves a
call is then known (which replica; either of its workers), not left to a balancer: the HAProxy
topology, with the compose file's haproxy.cfg, is tests/topology.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.proxyserver import create_test_database, drop_test_database
from tests.services import redis_url as shared_redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replicas:
    def __init__(self, tmp: Path, upstream: str, rules: str, *, count: int = 2, workers: int = 1,
                 redis_url: str | None = None, **env: str) -> None:
        self.tmp, self.upstream, self.count, self.workers = tmp, upstream, count, workers
        self.rules_dir = tmp / "rules"
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        (self.rules_dir / "rules.yaml").write_text(rules)
        self.redis_url = redis_url if redis_url is not None else shared_redis()
        self.extra = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.database_url = ""

    def __enter__(self) -> Replicas:
        self.database_url = create_test_database()
        try:
            for i in range(self.count):
                self._start(i)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, i: int) -> None:
        home = self.tmp / f"replica-{i}"
        home.mkdir(exist_ok=True)
        port = free_port()
        env = {**os.environ, "INTERLOCK_DATABASE_URL": self.database_url, "INTERLOCK_REDIS_URL": self.redis_url,
               "INTERLOCK_PORT": str(port), "INTERLOCK_RULES_DIR": str(self.rules_dir),
               "INTERLOCK_SPOOL_DIR": str(home / "spool"), "INTERLOCK_UPSTREAM_OPENAI": self.upstream,
               "INTERLOCK_UPSTREAM_ANTHROPIC": self.upstream, "INTERLOCK_WRITER_FLUSH_INTERVAL_S": "0.02",
               **self.extra}
        with (home / "stderr.log").open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve", "--workers", str(self.workers)],
                                    env=env, cwd=home,
                                    stdout=subprocess.DEVNULL, stderr=err)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"replica {i} did not start:\n{self.log(i)[-3000:]}")
            time.sleep(0.1)
        self.urls.append(url)

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.database_url:
            drop_test_database(self.database_url)

    def log(self, i: int) -> str:
        return (self.tmp / f"replica-{i}" / "stderr.log").read_text(errors="replace")

    def metrics(self, i: int) -> str:
        return httpx.get(self.urls[i] + "/metrics", timeout=10).text

    def api(self, i: int, path: str, **params: Any) -> Any:
        r = httpx.get(self.urls[i] + path, params=params, timeout=10)
        r.raise_for_status()
        return r.json()
