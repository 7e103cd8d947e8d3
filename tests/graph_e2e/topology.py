"""A minimal replica topology for tests: K `interlock serve` processes behind Debian's haproxy.

    client ──▶ haproxy (round robin, one request at a time per server connection) ──▶ replica 1..K
                                                                                        │ share
                                                              PostgreSQL (one fresh database), Redis

`Replicas(tmp, upstream, k=2)` starts them (the first alone, so it migrates the database before
the others start), `url` is haproxy's; each answer carries `x-interlock-replica: r<i>` (set by
haproxy) so a test can see where a request went.  Skips without haproxy, PostgreSQL or Redis
(fails under CI=true).  Kept small on purpose: a shared topology fixture may replace it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.proxyserver import create_test_database, drop_test_database
from tests.services import redis_url

HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def require_haproxy() -> str:
    if HAPROXY is None:
        msg = "haproxy is not installed (apt-get install haproxy)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{msg}, and CI=true makes it mandatory")
        pytest.skip(msg)
    return HAPROXY


class Replicas:
    def __init__(self, tmp: Path, upstream: str, *, k: int = 2, **env: str) -> None:
        self.haproxy = require_haproxy()
        self.redis = redis_url()
        self.database = create_test_database()
        self.prefix = f"interlock-test:{uuid.uuid4().hex[:10]}"
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports = [free_port() for _ in range(k)]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "INTERLOCK_DATABASE_URL": self.database,
            "INTERLOCK_REDIS_URL": self.redis,
            "INTERLOCK_GRAPH_PREFIX": self.prefix,
            "INTERLOCK_UPSTREAM_OPENAI": upstream,
            "INTERLOCK_UPSTREAM_ANTHROPIC": upstream,
            "INTERLOCK_CONTENT_POLICY": "full",
            "INTERLOCK_WRITER_FLUSH_INTERVAL_S": "0.02",
            **env,
        }

    def replica_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def __enter__(self) -> Replicas:
        try:
            for i, port in enumerate(self.ports):
                self._serve(i, port)
                self._wait(self.replica_url(i) + "/healthz")
            self._balance()
            self._wait(self.url + "/healthz")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _serve(self, i: int, port: int) -> None:
        home = self.tmp / f"replica{i}"
        (home / "rules").mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "INTERLOCK_SPOOL_DIR": str(home / "spool")}
        cmd = [sys.executable, "-m", "proxy.cli", "serve", "--port", str(port), "--rules-dir", str(home / "rules")]
        log = (home / "serve.log").open("wb")
        self.procs.append(subprocess.Popen(cmd, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT))

    def _balance(self) -> None:
        servers = "\n".join(
            f"    server r{i} 127.0.0.1:{p}" for i, p in enumerate(self.ports)
        )
        cfg = self.tmp / "haproxy.cfg"
        cfg.write_text(f"""global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-server-close
frontend interlock
    bind 127.0.0.1:{self.port}
    default_backend replicas
backend replicas
    balance roundrobin
    http-response set-header x-interlock-replica %s
{servers}
""")
        log = (self.tmp / "haproxy.log").open("wb")
        self.procs.append(subprocess.Popen([self.haproxy, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT))

    def _wait(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a replica or haproxy exited: see {self.tmp}/*/serve.log, haproxy.log")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{url} not ready within {timeout} s")

    def get(self, path: str, **params: Any) -> Any:
        r = httpx.get(self.replica_url(0) + path, params=params, timeout=10.0)
        r.raise_for_status()
        return r.json()

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()
        drop_test_database(self.database)
        import redis

        client = redis.Redis.from_url(self.redis)
        keys = list(client.scan_iter(match=f"{self.prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
