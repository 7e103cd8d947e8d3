"""Upstream-client micro-benchmark: CPU per request of each Forwarder, in one client process.

    .venv/bin/python bench/forward_micro.py [--requests 20000] [--concurrency 16] [--rounds 3]
                                            [--loop uvloop|asyncio] [--no-pin]

Starts `../shared/bench/fake_upstream.py` as a subprocess (pinned to CPU 0; this process to CPU 1
unless --no-pin), then sends `--requests` non-streaming chat completions at `--concurrency`
through each forwarder in turn (aiohttp, raw, aiohttp, raw, ...), exactly as the relay drives
one: `send`, iterate `aiter_raw()`, `aclose()`.  Each phase is preceded by a 500-request warm-up
on the same forwarder.  Reported per round and as the median: client CPU µs per request
(`time.process_time` delta / requests: everything this process spent, the event loop included)
and requests per second.  Only the client's share is measured; the upstream's CPU is not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from proxy.forward import AiohttpForwarder, Forwarder, RawForwarder
from proxy.settings import Settings, load_settings

HERE = Path(__file__).resolve().parent
SHARED_UPSTREAM = HERE.parent.parent / "shared" / "bench" / "fake_upstream.py"
WARMUP = 500
BODY = orjson.dumps({
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Summarise the plot of Hamlet in two sentences, please."},
    ],
    "max_tokens": 16,
    "temperature": 0.2,
})
HEADERS = [  # what the relay sends: the client's headers minus hop-by-hop, plus accept-encoding
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer sk-proj-BENCHabcdefghijklmnopqrstuvwxyz0123456789"),
    (b"user-agent", b"OpenAI/Python 1.50.0"),
    (b"x-stainless-lang", b"python"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"identity"),
]
FORWARDERS: dict[str, Callable[[Settings], Forwarder]] = {"aiohttp": AiohttpForwarder, "raw": RawForwarder}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_upstream(port: int, pin: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(SHARED_UPSTREAM), "--port", str(port)]
    if pin and hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"fake upstream did not start on port {port}")


async def one(fwd: Forwarder, url: str) -> int:
    resp = await fwd.send("POST", url, HEADERS, BODY)
    try:
        size = 0
        async for chunk in resp.aiter_raw():
            size += len(chunk)
    finally:
        await resp.aclose()
    if resp.status != 200 or not size:
        raise RuntimeError(f"bad response: {resp.status}, {size} bytes")
    return size


async def drive(fwd: Forwarder, url: str, requests: int, concurrency: int) -> None:
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one(fwd, url)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def phase(name: str, url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU µs per request, requests per second) of one forwarder, after a warm-up."""
    fwd = FORWARDERS[name](load_settings(upstream_max_connections=512))
    try:
        await drive(fwd, url, WARMUP, concurrency)
        cpu, wall = time.process_time(), time.perf_counter()
        await drive(fwd, url, requests, concurrency)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        await fwd.aclose()
    return cpu / requests * 1e6, requests / wall


async def run(args: argparse.Namespace, url: str) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in FORWARDERS}
    for rnd in range(1, args.rounds + 1):
        for name in FORWARDERS:
            cpu_us, rps = await phase(name, url, args.requests, args.concurrency)
            results[name].append((cpu_us, rps))
            print(f"round {rnd}  {name:8s} {cpu_us:7.1f} µs CPU/req  {rps:8.0f} req/s", flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin upstream/client to CPUs 0/1")
    args = p.parse_args()
    port = free_port()
    upstream = start_upstream(port, args.pin)
    if args.pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        if args.loop == "uvloop":
            import uvloop

            results = uvloop.run(run(args, url))
        else:
            results = asyncio.run(run(args, url))
    finally:
        upstream.terminate()
        upstream.wait(5)
    print(f"\nmedian of {args.rounds} rounds, {args.requests} requests at C={args.concurrency}, {args.loop}:")
    for name, rows in results.items():
        cpu = statistics.median(r[0] for r in rows)
        rps = statistics.median(r[1] for r in rows)
        print(f"  {name:8s} {cpu:7.1f} µs CPU/req  {rps:8.0f} req/s")
    base, raw = (statistics.median(r[0] for r in results[n]) for n in ("aiohttp", "raw"))
    print(f"  raw saves {base - raw:.1f} µs CPU per request ({(base - raw) / base:.0%} of aiohttp's)")


if __name__ == "__main__":
    main()
