"""A real Prometheus server (Debian's `prometheus` binary) for tests, scraping given targets.

    with PrometheusServer(tmp, ["127.0.0.1:8123"]) as prom:   # scrape every second
        prom.wait_for("interlock_calls_total")
        prom.query("sum(rate(interlock_calls_total[15s]))")   → result list

Missing binary: skip with the reason on a laptop, fail when CI=true (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: interlock
    metrics_path: /metrics
    static_configs:
      - targets: [{targets}]
"""


def prometheus_binary() -> str:
    """Path of the prometheus binary; skips (or fails in CI) when it is not installed."""
    found = shutil.which("prometheus")
    if found:
        return found
    msg = "the prometheus binary is not on PATH (apt-get install prometheus)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{msg}, and CI=true makes it mandatory")
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrometheusServer:
    """Prometheus on a free loopback port with its own config and storage under `tmp`."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        self.tmp = tmp
        self.config = tmp / "prometheus.yml"
        self.config.write_text(CONFIG.format(targets=", ".join(f'"{t}"' for t in targets)))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        cmd = [prometheus_binary(), f"--config.file={self.config}", f"--storage.tsdb.path={self.tmp / 'data'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        log = (self.tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(self.tmp / 'prometheus.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("prometheus did not become ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query at now; raises with Prometheus's error text on a bad expression."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        if body.get("status") != "success":
            raise AssertionError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        return list(body["data"]["result"])

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's `label_values(match, label)` variable query lists."""
        r = httpx.get(f"{self.url}/api/v1/label/{label}/values", params={"match[]": match}, timeout=10)
        r.raise_for_status()
        return list(r.json()["data"])

    def scrapes(self) -> float:
        """How many successful scrapes of the proxy so far (0 before the first)."""
        result = self.query('count_over_time(up{job="interlock"}[1h])')
        return float(result[0]["value"][1]) if result else 0.0

    def wait_scrapes(self, n: int, timeout: float = 20.0) -> None:
        """Wait until `n` more scrapes have completed."""
        target = self.scrapes() + n
        deadline = time.monotonic() + timeout
        while self.scrapes() < target:
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not scrape {n} more times in {timeout}s")
            time.sleep(0.2)
