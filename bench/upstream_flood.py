"""Hostile upstreams against a running `interlock serve` (issue 13 #3): the proxy's peak RSS
growth under big bodies and endless streams, and small calls' latency meanwhile.

    python bench/upstream_flood.py                       # this checkout
    python bench/upstream_flood.py --before DIR          # also DIR's `proxy` package, side by side

The upstream is `tests/hostile_upstream.py` in its own process; each proxy is `interlock serve`
in a subprocess (SQLite in a temp dir, no rules).  Floods, one after the other, each on a fresh
proxy after a 16 MiB warm-up stream, each measured as the rise of the proxy's peak RSS (VmHWM, reset through
/proc/PID/clear_refs before the flood) over its RSS before:

    big-body        GET /v1/files/big/content, 300 MiB, Content-Length
    big-bodies-4    four of them at once (1.2 GiB)
    big-json        POST /v1/embeddings, 200 MiB of chunked JSON with usage at the end
    endless-stream  a 200 MiB SSE chat stream (4 KiB events), then usage and [DONE]

During every flood another client (its own process) sends small `GET /v1/models` calls, in
turn through the proxy and direct to the (equally flooded) upstream, 10 ms apart, and reports
both p50/p99 and their difference, the proxy-added p50/p99 (the floods, the upstream and both
clients share the machine's cores with the proxy, so the direct p99 is the machine's floor).
A flood starts once the proxy is idle after its warm-up (the warm-up stream's recording and
graph work would otherwise land in the measured window).  The event loop's time on a CPU and
its time runnable but waiting for one (the kernel's schedstat) tell the proxy's own work from
the machine's contention.  `--repeat N` runs each flood N times,
each on a fresh proxy, and pools the small calls' timings (a p99 needs a few hundred of them):

    python bench/upstream_flood.py --repeat 4 --floods big-bodies-4,endless-stream
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
AUTH = {"authorization": "Bearer sk-bench"}


def proc_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sched_s(pid: int) -> tuple[float, float]:
    """(on-CPU, waiting-to-run) seconds of the process's main thread (its event loop), from schedstat."""
    on, waiting, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    return int(on) / 1e9, int(waiting) / 1e9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_upstream() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.hostile_upstream"], cwd=REPO, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def start_proxy(pythonpath: str | None, tmp: Path, upstream: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "INTERLOCK_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/i.db", "INTERLOCK_PORT": str(port),
           "INTERLOCK_RULES_DIR": str(tmp), "INTERLOCK_SPOOL_DIR": str(tmp / "spool"),
           "INTERLOCK_UPSTREAM_OPENAI": upstream, "INTERLOCK_LOG_LEVEL": "warning"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen([sys.executable, "-m", "proxy.cli", "serve"], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/healthz", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the proxy did not start")


def download(url: str) -> int:
    with httpx.stream("GET", url + "/v1/files/big/content?mb=300", headers=AUTH, timeout=120) as r:
        return sum(len(p) for p in r.iter_raw(MIB))


def big_json(url: str) -> int:
    with httpx.stream("POST", url + "/v1/embeddings", json={"model": "big-200", "input": "x"}, headers=AUTH,
                      timeout=120) as r:
        return sum(len(p) for p in r.iter_raw(MIB))


def endless_stream(url: str, model: str = "flood-200") -> int:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=AUTH, timeout=120) as r:
        return sum(len(p) for p in r.iter_raw(MIB))


def four_downloads(url: str) -> int:
    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(download(url))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(got)


def probe(urls: list[str]) -> None:
    """`--probe URL...`: small calls to each URL in turn until stdin closes; prints their ms as JSON."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    out: dict[str, list[float]] = {url: [] for url in urls}
    with httpx.Client(headers=AUTH, timeout=30) as client:
        while not stop.is_set():
            for url in urls:
                t0 = time.perf_counter()
                client.get(url + "/v1/models")
                out[url].append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
    print(json.dumps(out))


def small_calls(urls: list[str]) -> subprocess.Popen[str]:
    """The small-call client in its own process (not behind this one's GIL and flood threads)."""
    return subprocess.Popen([sys.executable, __file__, "--probe", *urls], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)


def quantile(lat: list[float], p: int) -> float:
    return statistics.quantiles(lat, n=100, method="inclusive")[p - 1]


def latency_line(proxied: list[float], direct: list[float]) -> str:
    """Small calls through the proxy and direct, and what the proxy added (p50, p99 differences)."""
    if len(proxied) < 2 or len(direct) < 2:
        return "small calls: too few"
    via = quantile(proxied, 50), quantile(proxied, 99)
    up = quantile(direct, 50), quantile(direct, 99)
    return (f"small calls through the proxy p50 {via[0]:.1f} p99 {via[1]:.1f} ms (n={len(proxied)}), direct p50 "
            f"{up[0]:.1f} p99 {up[1]:.1f} ms, proxy-added p50 {via[0] - up[0]:+.1f} p99 {via[1] - up[1]:+.1f} ms")


def settle(pid: int, quiet_s: float = 0.25, timeout: float = 15.0) -> None:
    """Wait until the proxy used < 10 % of a core over `quiet_s` (its warm-up recorded and linked)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_s(pid)
        time.sleep(quiet_s)
        if cpu_s(pid) - before < quiet_s / 10:
            return


class Flood:
    """One flood's figures, pooled over its repeats."""

    def __init__(self) -> None:
        self.growth: list[float] = []
        self.proxied: list[float] = []
        self.direct: list[float] = []


def flood(pid: int, url: str, fn: Callable[[str], int], upstream: str, pooled: Flood) -> str:
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    base = proc_mb(pid, "VmRSS")
    side = small_calls([url, upstream])
    t0, cpu0, sched0 = time.monotonic(), cpu_s(pid), sched_s(pid)
    try:
        relayed = fn(url)
    except httpx.HTTPError as exc:
        relayed = -1
        print(f"  ({type(exc).__name__}: {exc})", file=sys.stderr)
    took = time.monotonic() - t0
    on, waiting = (b - a for a, b in zip(sched0, sched_s(pid), strict=True))
    lat: dict[str, list[float]] = json.loads(side.communicate("")[0])
    peak = proc_mb(pid, "VmHWM")
    pooled.growth.append(peak - base)
    pooled.proxied += lat[url]
    pooled.direct += lat[upstream]
    return (f"+{peak - base:6.1f} MB peak ({base:5.1f} → {peak:6.1f}), {relayed / MIB:7.1f} MiB in {took:5.1f} s, "
            f"proxy CPU {cpu_s(pid) - cpu0:4.1f} s (event loop on a CPU {on:4.1f} s, waiting for one {waiting:4.1f} s), "
            f"{latency_line(lat[url], lat[upstream])}")


FLOODS: dict[str, Callable[[str], int]] = {
    "big-body": download,
    "big-bodies-4": four_downloads,
    "big-json": big_json,
    "endless-stream": endless_stream,
}


def run(label: str, pythonpath: str | None, upstream: str, floods: list[str], repeat: int) -> None:
    """Each flood against a fresh proxy (so one flood's freed memory cannot hide the next one's)."""
    pooled = {name: Flood() for name in floods}
    for _ in range(repeat):
        for name in floods:
            with tempfile.TemporaryDirectory() as tmp:
                proc, url = start_proxy(pythonpath, Path(tmp), upstream)
                try:
                    endless_stream(url, "flood-16")  # warm-up: pools, first allocations
                    settle(proc.pid)
                    print(f"{label:7} {name:15} {flood(proc.pid, url, FLOODS[name], upstream, pooled[name])}",
                          flush=True)
                finally:
                    proc.terminate()
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
    if repeat > 1:
        for name, f in pooled.items():
            print(f"{label:7} {name:15} pooled over {repeat}: peak growth max +{max(f.growth):.1f} MB, "
                  f"{latency_line(f.proxied, f.direct)}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", help="a directory holding another `proxy` package, measured first")
    p.add_argument("--floods", default=",".join(FLOODS), help="which floods, comma-separated (default: all)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each flood, small-call timings pooled")
    p.add_argument("--probe", metavar="URL", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    floods = args.floods.split(",")
    if unknown := set(floods) - set(FLOODS):
        p.error(f"unknown flood(s) {', '.join(sorted(unknown))}; known: {', '.join(FLOODS)}")
    if args.probe:
        probe(args.probe)
        return
    up, upstream = start_upstream()
    try:
        if args.before:
            run("before", args.before, upstream, floods, args.repeat)
        run("after", None, upstream, floods, args.repeat)
    finally:
        up.terminate()
        up.wait(10)


if __name__ == "__main__":
    main()
