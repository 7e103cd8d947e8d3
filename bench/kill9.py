#!/usr/bin/env python3
"""kill -9 under load: how many calls Interlock answered are in the database after a restart.

    kill9.py [--db sqlite|postgres] [--seconds 4] [--clients 2] [--connections 16] [--wal on|off|both]
      ├─ upstream  tests/fake_upstream.py (one for the whole run)
      ├─ proxy     `python -m proxy.cli serve`, fresh SQLite file (or PostgreSQL, rows told apart
      │            by a per-run marker), no rules, WAL on or off
      ├─ load      --clients processes × --connections keep-alive sockets (raw HTTP/1.1, uvloop),
      │            small non-streamed chat completions, each tagged `X-Interlock-Run: <marker>-<n>`;
      │            every 200 is kept with the client's clock when its last byte arrived
      ├─ pinning   (--pin, the default on ≥ 2 CPUs with taskset) the proxy on the last CPU, the upstream
      │            and the load generators on CPU 0, as bench/run.sh does: the proxy's core is not
      │            shared with the load it is measured under
      ├─ kill -9   the proxy after --seconds of load
      ├─ restart   same settings; wait until the recorded count has been stable for 2 s (replay done)
      └─ report    answered, recorded, missing (answered > 0.2 s before the kill / in the last 0.2 s),
                   rate, proxy CPU per answered request (utime+stime of the proxy over the load)

With --wal both the same load runs with the WAL on, then off, in one run: the loss without it and
the CPU the WAL costs, side by side.  `kill9.py client ...` is the load-generator subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
GRACE_S = 0.2  # answered this close to the kill may be lost (the WAL's group-commit window)
BODY = json.dumps({"model": "gpt-4o-mini", "max_tokens": 8,
                   "messages": [{"role": "user", "content": "Say hi."}]}).encode()


@dataclass
class Outcome:
    """One kill -9 scenario."""

    db: str
    wal: bool
    answered: int = 0
    recorded: int = 0  # answered calls found in the database after the restart
    missing_old: int = 0  # answered more than GRACE_S before the kill, not recorded
    missing_recent: int = 0  # answered in the last GRACE_S, not recorded
    extra: int = 0  # recorded, but the client never saw the answer (killed mid-flight)
    duplicates: int = 0
    load_s: float = 0.0
    rate: float = 0.0  # answered per second
    cpu_ms_per_req: float = 0.0  # proxy utime+stime over the load / answered
    replay_s: float = 0.0  # restart until the recorded count was stable
    missing_examples: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout}s")


def cpu_s(pid: int) -> float:
    """utime+stime of one process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Harness:
    """An upstream for the whole run; each scenario starts, kills and restarts its own proxy."""

    def __init__(self, work: Path, *, python: str = sys.executable, pin: bool = False) -> None:
        self.work, self.python = work, python
        cpus = os.cpu_count() or 1
        self.load_cpus, self.proxy_cpus = ("0", str(cpus - 1)) if pin else (None, None)
        self.work.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        port = free_port()
        self.upstream = f"http://127.0.0.1:{port}"
        up = self._spawn("upstream", self._pinned([python, str(REPO / "tests" / "fake_upstream.py"), "--port", str(port)],
                                                  self.load_cpus))
        wait_http(self.upstream + "/v1/models", 30, up)

    @staticmethod
    def _pinned(argv: list[str], cpus: str | None) -> list[str]:
        return ["taskset", "-c", cpus, *argv] if cpus is not None else argv

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.work / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def proxy(self, name: str, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
        argv = self._pinned([self.python, "-m", "proxy.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            self.proxy_cpus)
        proc = self._spawn(name, argv, env)
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc)
        return proc

    def _setup(self, db: str, wal: bool) -> tuple[str, str, str, dict[str, str]]:
        marker = f"k9{uuid.uuid4().hex[:8]}"
        name = f"{db}-wal-{'on' if wal else 'off'}-{marker}"
        db_url = PG_URL if db == "postgres" else f"sqlite+aiosqlite:///{self.work / name}.db"
        (self.work / "rules-empty").mkdir(exist_ok=True)
        env = {**os.environ, "INTERLOCK_DATABASE_URL": db_url, "INTERLOCK_UPSTREAM_OPENAI": self.upstream,
               "INTERLOCK_SPOOL_DIR": str(self.work / f"{name}-spool"), "INTERLOCK_WAL": str(wal).lower(),
               "INTERLOCK_RULES_DIR": str(self.work / "rules-empty"), "INTERLOCK_LOG_LEVEL": "warning"}
        return marker, name, db_url, env

    def cost(self, *, db: str, wal: bool, seconds: float, clients: int, connections: int) -> dict[str, Any]:
        """Proxy CPU per request with everything recorded: the same load for `seconds`, then wait
        until every answered call is in the database; CPU from the first request to that point.
        (Under a kill, CPU/req flatters the WAL-off proxy: the recording it deferred never runs.)"""
        marker, name, db_url, env = self._setup(db, wal)
        port = free_port()
        proxy = self.proxy(f"{name}-cost", env, port)
        cpu0, t0 = cpu_s(proxy.pid), time.time()
        answered = self._clients(port, marker, clients, connections, seconds)
        load_s = max(answered.values(), default=t0) - t0
        tags = wait_recorded(db_url, marker)
        cpu = cpu_s(proxy.pid) - cpu0
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(30)
        return {"db": db, "wal": wal, "answered": len(answered), "recorded": len(set(tags) & set(answered)),
                "rate": round(len(answered) / load_s, 1) if load_s else 0.0,
                "cpu_ms_per_req": round(cpu * 1000 / max(1, len(answered)), 3)}

    def _clients(self, port: int, marker: str, clients: int, connections: int, max_s: float) -> dict[str, float]:
        """Run the load generators until they stop by themselves (`max_s`); their answers."""
        files = [self.work / f"{marker}-client{i}.json" for i in range(clients)]
        workers = [subprocess.Popen(self._pinned([self.python, __file__, "client", "--port", str(port), "--prefix",
                                     f"{marker}-{i}", "--connections", str(connections), "--out", str(f),
                                     "--max-seconds", str(max_s)], self.load_cpus), cwd=REPO) for i, f in enumerate(files)]
        answered: dict[str, float] = {}
        for worker, f in zip(workers, files, strict=True):
            worker.wait(max_s + 60)
            answered.update(json.loads(f.read_text()))
        return answered

    def scenario(self, *, db: str, wal: bool, seconds: float, clients: int, connections: int) -> Outcome:
        marker, name, db_url, env = self._setup(db, wal)
        port = free_port()
        proxy = self.proxy(f"{name}-1", env, port)
        out = Outcome(db=db, wal=wal)
        answered, t_kill, window, in_window, cpu = self._load_and_kill(
            proxy, port, marker, seconds, clients, connections)
        out.load_s, out.answered = round(window, 2), len(answered)
        out.rate = round(in_window / window, 1)
        out.cpu_ms_per_req = round(cpu * 1000 / max(1, in_window), 3)
        t0 = time.monotonic()
        restarted = self.proxy(f"{name}-2", env, port)
        tags = wait_recorded(db_url, marker)
        out.replay_s = round(time.monotonic() - t0, 1)
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
        recorded = set(tags)
        out.duplicates = len(tags) - len(recorded)
        out.recorded = sum(1 for tag in answered if tag in recorded)
        out.extra = len(recorded - set(answered))
        for tag, at in answered.items():
            if tag not in recorded:
                if at < t_kill - GRACE_S:
                    out.missing_old += 1
                    out.missing_examples = (out.missing_examples + [f"{tag}@{t_kill - at:.3f}s"])[:5]
                else:
                    out.missing_recent += 1
        return out

    def _load_and_kill(self, proxy: subprocess.Popen[bytes], port: int, marker: str, seconds: float,
                       clients: int, connections: int) -> tuple[dict[str, float], float, float, int, float]:
        files = [self.work / f"{marker}-client{i}.json" for i in range(clients)]
        workers = [subprocess.Popen(self._pinned([self.python, __file__, "client", "--port", str(port), "--prefix",
                                     f"{marker}-{i}", "--connections", str(connections), "--out", str(f),
                                     "--max-seconds", str(seconds + 30)], self.load_cpus), cwd=REPO)
                   for i, f in enumerate(files)]
        time.sleep(0.5)  # connections open, load steady
        t_start, cpu0 = time.time(), cpu_s(proxy.pid)
        time.sleep(seconds)
        cpu1 = cpu_s(proxy.pid)
        t_kill = time.time()  # every answer the clients saw arrived before this instant
        proxy.send_signal(signal.SIGKILL)
        proxy.wait()
        answered: dict[str, float] = {}
        for worker, f in zip(workers, files, strict=True):
            worker.wait(60)
            answered.update(json.loads(f.read_text()))
        window = t_kill - t_start  # measured: connections were open and busy before t_start
        in_window = sum(1 for at in answered.values() if at >= t_start)
        return answered, t_kill, window, in_window, cpu1 - cpu0


def wait_recorded(db_url: str, marker: str, *, stable_s: float = 2.0, timeout: float = 120.0) -> list[str]:
    """Run hints of the marker's calls once their count has not moved for `stable_s`."""
    deadline, last, since = time.monotonic() + timeout, -1, time.monotonic()
    tags: list[str] = []
    while time.monotonic() < deadline:
        tags = recorded_tags(db_url, marker)
        if len(tags) != last:
            last, since = len(tags), time.monotonic()
        elif time.monotonic() - since >= stable_s:
            break
        time.sleep(0.25)
    return tags


def recorded_tags(db_url: str, marker: str) -> list[str]:
    like = f"{marker}-%"
    if db_url.startswith("sqlite"):
        path = db_url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
            try:
                return [r[0] for r in conn.execute("SELECT run_hint FROM calls WHERE run_hint LIKE ?", (like,))]
            except sqlite3.OperationalError:  # not migrated yet
                return []
    return asyncio.run(_pg_tags(db_url, like))


async def _pg_tags(db_url: str, like: str) -> list[str]:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch("SELECT run_hint FROM calls WHERE run_hint LIKE $1", like)
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()
    return [r[0] for r in rows]


# ------------------------------------------------------------------------------ the load generator
async def _connection(port: int, prefix: str, answered: dict[str, float], deadline: float) -> None:
    """One keep-alive connection sending requests back to back until the proxy dies."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer sk-kill9\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n")
    n = 0
    try:
        while time.time() < deadline:
            tag = f"{prefix}-{n}"
            n += 1
            writer.write(head + b"X-Interlock-Run: " + tag.encode() + b"\r\n\r\n" + BODY)
            status = await _response(reader)
            if status == 200:
                answered[tag] = time.time()
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return  # the proxy was killed
    finally:
        writer.close()


async def _response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status
    i = lower.find(b"content-length:")
    if i < 0:
        raise ValueError("no content-length")
    length = int(lower[i + 15: lower.index(b"\r\n", i)])
    await reader.readexactly(length)
    return status


async def _client(port: int, prefix: str, connections: int, max_s: float) -> dict[str, float]:
    answered: dict[str, float] = {}
    deadline = time.time() + max_s
    await asyncio.gather(*(_connection(port, f"{prefix}-{c}", answered, deadline) for c in range(connections)))
    return answered


def client_main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    answered = asyncio.run(_client(args.port, args.prefix, args.connections, args.max_seconds))
    Path(args.out).write_text(json.dumps(answered))


# ------------------------------------------------------------------------------ report
def report(outcomes: list[Outcome]) -> str:
    lines = ["| db | WAL | answered | rate (req/s) | recorded | missing > 0.2 s before kill | missing in last 0.2 s "
             "| proxy CPU/req (ms) | replay (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.db} | {'on' if o.wal else 'off'} | {o.answered} | {o.rate:.0f} | {o.recorded} | "
                     f"{o.missing_old} | {o.missing_recent} | {o.cpu_ms_per_req:.3f} | {o.replay_s} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="cmd")
    client = sub.add_parser("client", help="(internal) the load-generator subprocess")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--prefix", required=True)
    client.add_argument("--connections", type=int, default=16)
    client.add_argument("--max-seconds", type=float, default=60.0)
    client.add_argument("--out", required=True)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--wal", choices=["on", "off", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=4.0, help="load before the kill")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=16, help="connections per client process")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cost", action="store_true", help="also measure CPU/req with everything recorded (no kill)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temp dir)")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="proxy on the last CPU, upstream and load on CPU 0 (needs taskset and 2 CPUs)")
    args = parser.parse_args(argv)
    if args.cmd == "client":
        client_main(args)
        return
    work = args.out or Path(tempfile.mkdtemp(prefix="kill9-"))
    pin = args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    if args.pin and not pin:
        print("not pinned: needs taskset and 2 CPUs", file=sys.stderr)
    harness = Harness(work, pin=pin)
    outcomes: list[Outcome] = []
    costs: list[dict[str, Any]] = []
    load = {"db": args.db, "seconds": args.seconds, "clients": args.clients, "connections": args.connections}
    try:
        for _ in range(args.rounds):
            for wal in {"on": [True], "off": [False], "both": [True, False]}[args.wal]:
                outcomes.append(harness.scenario(wal=wal, **load))
                print(json.dumps(asdict(outcomes[-1])), flush=True)
                if args.cost:
                    costs.append(harness.cost(wal=wal, **load))
                    print(json.dumps(costs[-1]), flush=True)
    finally:
        harness.close()
    print(report(outcomes))
    if costs:
        print("\nCPU with everything recorded (no kill; load, then wait until all answered calls are stored):\n")
        print("| db | WAL | answered | rate (req/s) | recorded | proxy CPU/req (ms) |\n|---|---|---|---|---|---|")
        for c in costs:
            print(f"| {c['db']} | {'on' if c['wal'] else 'off'} | {c['answered']} | {c['rate']:.0f} | "
                  f"{c['recorded']} | {c['cpu_ms_per_req']:.3f} |")
    (work / "kill9.json").write_text(json.dumps({"kill": [asdict(o) for o in outcomes], "cost": costs}, indent=1))
    print(f"work folder: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
