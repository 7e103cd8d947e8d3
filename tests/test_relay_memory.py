"""The proxy's own memory under upstream floods (issue 13 #3): `interlock serve` runs in a
subprocess so its RSS is measured alone; the peak is the kernel's high-water mark (VmHWM, reset
through /proc/PID/clear_refs just before the flood).  Not timing tests: only bytes are asserted."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hostile_upstream import MIB, HostileUpstream

LIMIT_MB = 64


class ServedProxy:
    """`interlock serve` in a subprocess on a free loopback port."""

    def __init__(self, tmp: Path, upstream: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "INTERLOCK_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/i.db", "INTERLOCK_PORT": str(port),
               "INTERLOCK_RULES_DIR": str(tmp), "INTERLOCK_SPOOL_DIR": str(tmp / "spool"),
               "INTERLOCK_UPSTREAM_OPENAI": upstream, "INTERLOCK_LOG_LEVEL": "warning"}
        self.proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve"], env=env, cwd=tmp,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    raise RuntimeError("interlock serve did not start") from None
                time.sleep(0.1)

    def status(self, field: str) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(field)

    def reset_peak(self) -> float:
        """Reset the high-water mark to the current RSS; returns that RSS in MiB."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.status("VmRSS")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServedProxy, HostileUpstream]]:
    with HostileUpstream() as up:
        proxy = ServedProxy(tmp_path, up.url)
        try:
            yield proxy, up
        finally:
            proxy.close()


def download(url: str) -> int:
    with httpx.stream("GET", url, headers={"authorization": "Bearer sk-test"}, timeout=60) as r:
        assert r.status_code == 200
        return sum(len(piece) for piece in r.iter_raw(MIB))


def stream(url: str, model: str) -> bytes:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    tail = b""
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers={"authorization": "Bearer sk-test"},
                      timeout=60) as r:
        assert r.status_code == 200
        for piece in r.iter_raw(MIB):
            tail = (tail + piece)[-64:]
    return tail


def test_a_300_mb_download_grows_the_proxy_by_less_than_64_mb(served: tuple[ServedProxy, HostileUpstream]) -> None:
    proxy, _ = served
    assert download(proxy.url + "/v1/files/big/content?mb=16") == 16 * MIB  # warm-up: pools, first allocations
    base = proxy.reset_peak()
    assert download(proxy.url + "/v1/files/big/content?mb=300") == 300 * MIB
    assert proxy.status("VmHWM") - base < LIMIT_MB


def test_a_200_mb_stream_grows_the_proxy_by_less_than_64_mb(served: tuple[ServedProxy, HostileUpstream]) -> None:
    proxy, _ = served
    stream(proxy.url, "flood-16")
    base = proxy.reset_peak()
    assert stream(proxy.url, "flood-200").endswith(b"data: [DONE]\n\n")
    assert proxy.status("VmHWM") - base < LIMIT_MB
