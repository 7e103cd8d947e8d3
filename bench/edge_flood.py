"""Hostile clients against a running `interlock serve` (issue 13 #2, #4, #5): RSS and CPU of the
proxy, and the latency other clients see meanwhile.

    python bench/edge_flood.py [--pythonpath DIR]   # DIR: another checkout's `proxy` to compare

Starts the proxy in a subprocess (SQLite in a temp dir, no rules, 2 s header/body timeouts when
the server has them, `tests/hostile_upstream.py` as its upstream) and runs, one after the other:

    endless-header  one client writes one header line, 1 KiB at a time, for up to 10 s; then the
                    same on new connections, one after the other, for 6 s
    slowloris       200 connections each send a header byte every 0.5 s for 6 s
    stalled-bodies  20 clients declare a 30 MB body, send 4 MB of it, then stop for 6 s (twice:
                    the second round shows whether the first one's bytes were freed)
    pipelined       one client writes 3,000 pipelined `GET /api/openapi.json` and reads nothing
                    for 6 s

and prints, per probe, what the proxy did (status, bytes it read), its RSS growth and CPU seconds,
and, from another process, small `GET /v1/models` calls through the proxy and direct to the
upstream during the probe (p50/p99 both ways and the proxy-added difference; see
bench/upstream_flood.py, whose probe this is).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from upstream_flood import latency_line, small_calls, start_upstream  # bench/ is on sys.path

PORT = 18765


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(pythonpath: str | None, tmp: Path, upstream: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INTERLOCK_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/i.db", "INTERLOCK_PORT": str(PORT),
           "INTERLOCK_UPSTREAM_OPENAI": upstream,
           "INTERLOCK_RULES_DIR": str(tmp), "INTERLOCK_SPOOL_DIR": str(tmp / "spool"),
           "INTERLOCK_HEADER_TIMEOUT_S": "2", "INTERLOCK_BODY_TIMEOUT_S": "2", "INTERLOCK_LOG_LEVEL": "warning"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve"], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the proxy did not start")


def endless_header() -> str:
    """One never-ending header line; then, for the rest of 6 s, the same again on new connections
    (an attacker's loop: other clients' latency is measured over the whole of it)."""
    first = _endless_header_once()
    started, again = time.monotonic(), 0
    while time.monotonic() - started < 6:
        _endless_header_once()
        again += 1
    return f"{first}; then {again} more"


def _endless_header_once() -> str:
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-endless: ")
        sent, started, answer = 0, time.monotonic(), b""
        s.setblocking(False)
        while time.monotonic() - started < 10 and not answer:
            try:
                s.send(b"a" * 1024)
                sent += 1024
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
            try:
                answer = s.recv(4096)
            except BlockingIOError:
                pass
            except OSError:
                break
    status = answer.split(b"\r\n", 1)[0].decode() or "no answer"
    return f"{status!r} after {sent / 1024:.0f} KiB in {time.monotonic() - started:.2f} s"


def slowloris() -> str:
    conns = [socket.create_connection(("127.0.0.1", PORT), timeout=5) for _ in range(200)]
    for c in conns:
        c.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    started = time.monotonic()
    open_ = len(conns)
    while time.monotonic() - started < 6 and open_:
        time.sleep(0.5)
        open_ = 0
        for c in conns:
            try:
                c.sendall(b"x")
                open_ += 1
            except OSError:
                pass
    alive = time.monotonic() - started
    for c in conns:
        c.close()
    return f"{open_} of 200 still open after {alive:.1f} s"


def stalled_bodies() -> str:
    conns = []
    for _ in range(20):
        c = socket.create_connection(("127.0.0.1", PORT), timeout=5)
        c.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                  b"content-length: 30000000\r\n\r\n" + b" " * (4 * 1024 * 1024))
        conns.append(c)
    time.sleep(6)
    answered = 0
    for c in conns:
        c.settimeout(0.2)
        try:
            answered += c.recv(4096).startswith(b"HTTP/1.1 408")
        except OSError:
            pass
        c.close()
    return f"{answered} of 20 answered 408 within 6 s"


def pipelined() -> str:
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
        s.setblocking(False)
        data = b"GET /api/openapi.json HTTP/1.1\r\nhost: x\r\n\r\n" * 3000
        sent, started = 0, time.monotonic()
        while time.monotonic() - started < 6:
            if sent < len(data):
                try:
                    sent += s.send(data[sent:])
                except BlockingIOError:
                    pass
            time.sleep(0.01)
    return f"{sent / 1024:.0f} of {len(data) / 1024:.0f} KiB taken by the proxy, nothing read"


def probe(pid: int, name: str, fn: Callable[[], str], upstream: str) -> None:
    rss0, cpu0 = rss_mb(pid), cpu_s(pid)
    url = f"http://127.0.0.1:{PORT}"
    side = small_calls([url, upstream])
    outcome = fn()
    lat = json.loads(side.communicate("")[0])
    time.sleep(0.5)
    print(f"{name:15} {outcome:50} RSS {rss0:6.1f} → {rss_mb(pid):6.1f} MB  CPU {cpu_s(pid) - cpu0:5.2f} s\n"
          f"{'':15} {latency_line(lat[url], lat[upstream])}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pythonpath", help="a directory holding another `proxy` package to measure instead")
    args = p.parse_args()
    up, upstream = start_upstream()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start(args.pythonpath, Path(tmp), upstream)
        try:
            for name, fn in (("endless-header", endless_header), ("slowloris", slowloris),
                             ("stalled-bodies", stalled_bodies), ("stalled-again", stalled_bodies),
                             ("pipelined", pipelined)):
                probe(proc.pid, name, fn, upstream)
        finally:
            proc.terminate()
            proc.wait(10)
            up.terminate()
            up.wait(10)


if __name__ == "__main__":
    main()
