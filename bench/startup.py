#!/usr/bin/env python3
"""Start-up time to ready and RSS per process at ready, for one or more `interlock` builds, in one run.

    startup.py [--runs 5] [--target NAME=PATH/TO/interlock ...] [--workers 1 --workers 2]
      each round, each target and worker count, alternating:
        fresh folder ─▶ `interlock serve --port P --workers W` ─▶ poll /healthz every 10 ms
        ─▶ ready = spawn → first 200; CPU seconds used by then (utime+stime, the slowest worker);
         RSS of the supervisor and of each worker (/proc) ─▶ SIGTERM
      report: median and min ready seconds and CPU seconds, RSS per worker (MiB)

One worker uses SQLite in the folder (the default start); more than one uses --pg (a database
created once) and --redis, as `--workers` requires.  Default targets: this checkout's .venv, and
/work/main's when it exists (before/after in one run on the same noisy machine).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def cpu_s(pid: int) -> float:
    """utime + stime of `pid` (seconds): start-up work, unlike wall time, barely moves when other
    processes compete for the cores."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def one(interlock: str, workers: int, args: argparse.Namespace) -> tuple[float, float, list[float], float]:
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        port = free_port()
        env = {**os.environ, "INTERLOCK_RULES_DIR": str(REPO / "rules"), "INTERLOCK_LOG_LEVEL": "warning",
               "INTERLOCK_SPOOL_DIR": f"{tmp}/spool"}
        if workers > 1:
            env.update(INTERLOCK_DATABASE_URL=args.pg, INTERLOCK_REDIS_URL=args.redis)
        else:
            env["INTERLOCK_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp}/interlock.db"
        cmd = [interlock, "serve", "--port", str(port)] + (["--workers", str(workers)] if workers > 1 else [])
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not ready(f"http://127.0.0.1:{port}/healthz"):
                if proc.poll() is not None or time.perf_counter() - t0 > 120:
                    raise SystemExit(f"{cmd}: did not become ready (exit {proc.returncode})")
                time.sleep(0.01)
            took = time.perf_counter() - t0
            kids = children(proc.pid) if workers > 1 else []
            cpu = max([cpu_s(k) for k in kids] or [cpu_s(proc.pid)])  # the slowest worker's
            return took, rss_mib(proc.pid), [rss_mib(k) for k in kids] or [rss_mib(proc.pid)], cpu
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--target", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--workers", action="append", type=int, default=[])
    p.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/workers")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/3")
    args = p.parse_args()
    targets = {k: str(Path(v).resolve()) for k, v in (t.split("=", 1) for t in args.target)} or {"this": str(REPO / ".venv/bin/interlock")}
    if not args.target and Path("/work/main/.venv/bin/interlock").exists():
        targets["main"] = "/work/main/.venv/bin/interlock"
    counts = args.workers or [1]
    if max(counts) > 1:
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", args.pg.rsplit("/", 1)[1]],
                       capture_output=True, check=False)
    results: dict[tuple[str, int], list[tuple[float, float, list[float], float]]] = {}
    for r in range(args.runs):
        for name, path in targets.items():
            for w in counts:
                res = one(path, w, args)
                results.setdefault((name, w), []).append(res)
                print(f"run {r + 1} {name} workers={w}: ready {res[0]:.2f} s ({res[3]:.2f} CPU s), "
                      f"RSS per worker {', '.join(f'{x:.0f}' for x in res[2])} MiB", flush=True)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| build | workers | ready s median (min) | CPU s to ready, median (min) | RSS per worker at ready MiB "
          "(median) | supervisor MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for (name, w), runs in results.items():
        ready_s = [x[0] for x in runs]
        per_worker = statistics.median(v for x in runs for v in x[2])
        sup = statistics.median(x[1] for x in runs) if w > 1 else float("nan")
        cpu = [x[3] for x in runs]
        print(f"| {name} | {w} | {statistics.median(ready_s):.2f} ({min(ready_s):.2f}) | "
              f"{statistics.median(cpu):.2f} ({min(cpu):.2f}) | {per_worker:.0f} | {sup:.0f} |")


if __name__ == "__main__":
    main()
