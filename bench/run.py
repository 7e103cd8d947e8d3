#!/usr/bin/env python3
"""Interlock overhead benchmark: the same load direct to a fake upstream and through Interlock, in one run.

    run.py
      ├─ upstream  ../shared/bench/fake_upstream.py (else tests/fake_upstream.py)      pinned to CPU 0
      ├─ proxy     `interlock serve`, recording on (SQLite in the run folder)          pinned to CPU 1
      ├─ warm-up   every scenario against both targets (not measured)
      ├─ rounds    for each round, each scenario: direct, then interlock  → medians over rounds
      ├─ soak      --soak requests through the proxy in 5 steps, proxy RSS after each step
      └─ report    summary.md + summary.json in --out, with the issue's targets checked

The load generator is ../shared/bench/loadgen.py (closed loop, aiohttp), run as a subprocess pinned
with the upstream, so figures are comparable with ../shared/bench/RESULTS.md.  Proxy CPU per request is
utime+stime of the proxy's process tree over each measured phase (/proc/PID/stat).

    bench/run.sh                                  # = .venv/bin/python bench/run.py, defaults below
    bench/run.sh --rounds 1 --scale 0.2 --soak 5000   # ~1-minute smoke run
    bench/run.sh --proxy-cmd '{python} {shared}/passthrough_proxy.py --port {port} --upstream {upstream}'
    bench/run.sh --rules-dir rules --soak 0 \
      --proxy 'uvicorn={python} {repo}/bench/edge_servers.py uvicorn --port {port}' \
      --proxy 'granian={python} {repo}/bench/edge_servers.py granian --port {port}' \
      --proxy 'thin={python} {shared}/passthrough_proxy.py --port {port} --upstream {upstream}'
                                                  # several proxies, interleaved per scenario and round
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "bench"
INTERLOCK_CMD = "{interlock} serve --host 127.0.0.1 --port {port}"
DIRECT = "direct"


@dataclass(frozen=True)
class Scenario:
    """One load shape; names and numbers match ../shared/bench/compare.py so figures line up."""

    api: str
    stream: bool
    c: int
    n: int
    prompt: int = 0
    max_tokens: int = 16
    include_usage: bool = True
    desc: str = ""


SCENARIOS = {
    "ns_c1": Scenario("openai", False, 1, 300, desc="non-stream, small, C=1"),
    "ns_c16": Scenario("openai", False, 16, 800, desc="non-stream, small, C=16"),
    "ns_c64": Scenario("openai", False, 64, 1000, desc="non-stream, small, C=64"),
    "stream_c1": Scenario("openai", True, 1, 100, max_tokens=50, desc="stream 50 chunks, C=1"),
    "stream_c16": Scenario("openai", True, 16, 250, max_tokens=50, desc="stream 50 chunks, C=16"),
    "stream_c16_nousage": Scenario("openai", True, 16, 250, max_tokens=50, include_usage=False,
                                   desc="stream 50 chunks, C=16, client did not ask for usage"),
    "big_c4": Scenario("openai", False, 4, 150, prompt=100_000, desc="~100k-token body (484 KB), C=4"),
    "anth_ns_c16": Scenario("anthropic", False, 16, 800, desc="anthropic non-stream, C=16"),
    "anth_stream_c16": Scenario("anthropic", True, 16, 250, max_tokens=50, desc="anthropic stream 50, C=16"),
}
DEFAULT_SCENARIOS = "ns_c1,ns_c16,ns_c64,stream_c16,big_c4"
MODELS = {"openai": "fake", "anthropic": "claude-fake"}


def log(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes
class Proc:
    """A child in its own process group, optionally pinned; stop() ends the whole group."""

    def __init__(self, name: str, argv: Sequence[str], out: Path, *, cpus: str | None = None,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.logpath = out / f"{name}.log"
        self._log = open(self.logpath, "wb")  # noqa: SIM115 - closed in stop()
        argv = ["taskset", "-c", cpus, *argv] if cpus is not None else list(argv)
        self.p = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  start_new_session=True)
        self.pid = self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.p.wait(5)
        self._log.close()

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bool:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(proc: Proc, url: str, timeout: float) -> float:
    """Seconds until a real chat completion through `url` answers 200."""
    body = json.dumps({"model": "fake", "max_tokens": 4, "messages": [{"role": "user", "content": "ping"}]})
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not proc.alive():
            raise SystemExit(f"{proc.name} exited with {proc.p.returncode}; see {proc.logpath}")
        if http_ok(url + "/v1/chat/completions", body.encode(), headers):
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"{proc.name} not ready on {url} after {timeout:.0f}s; see {proc.logpath}")


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the run
@dataclass
class Bench:
    """Everything one run needs: options, started processes, and the results so far."""

    args: argparse.Namespace
    out: Path
    loadgen: ModuleType
    client_cpus: str | None
    proxy_cpus: str | None
    urls: dict[str, str] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    sent_to_proxy: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def proxies(self) -> dict[str, str]:
        """Proxy name → command: every --proxy, else `interlock` = --proxy-cmd."""
        named = dict(item.partition("=")[::2] for item in self.args.proxy)
        return named or {"interlock": self.args.proxy_cmd}

    @property
    def targets(self) -> list[str]:
        return [DIRECT, *self.proxies]

    # ---------------------------------------------------------------- processes
    def start_upstream(self) -> None:
        script = self.args.shared / "fake_upstream.py"
        if self.args.upstream == "ours" or not script.exists():
            script = REPO / "tests" / "fake_upstream.py"
        port = free_port()
        argv = [self.args.python, str(script), "--port", str(port), "--latency-ms", str(self.args.latency_ms),
                "--chunk-delay-ms", str(self.args.chunk_delay_ms)]
        proc = self._spawn("upstream", argv, self.client_cpus)
        self.urls["direct"] = f"http://127.0.0.1:{port}"
        self.pids["upstream"] = proc.pid
        self.meta["upstream_script"] = str(script)
        wait_ready(proc, self.urls["direct"], 30)

    def start_proxies(self) -> None:
        self.meta["proxies"] = {}
        for name, template in self.proxies.items():
            self.start_proxy(name, template)
        self.meta["proxy"] = self.meta["proxies"][next(iter(self.proxies))]

    def start_proxy(self, name: str, template: str) -> None:
        port, upstream = free_port(), self.urls["direct"]
        env = {**os.environ, **self._proxy_env(name, upstream)}
        cmd = template.format(interlock=self.args.interlock, port=port, upstream=upstream,
                              python=self.args.python, shared=self.args.shared, repo=REPO)
        if "{interlock}" in template or "edge_servers.py" in template:
            self._db_upgrade(env)
        proc = self._spawn(f"proxy-{name}" if self.args.proxy else "proxy", shlex.split(cmd), self.proxy_cpus,
                           env=env)
        self.urls[name] = f"http://127.0.0.1:{port}"
        self.pids[name] = proc.pid
        ready = wait_ready(proc, self.urls[name], self.args.ready_timeout)
        self.meta["proxies"][name] = {"cmd": cmd, "ready_s": ready, "rss_mib_at_ready": self.rss(name)}
        log(f"proxy {name} ready in {ready:.1f}s pid={proc.pid} rss={self.rss(name):.0f}MiB: {cmd}")

    def _proxy_env(self, name: str, upstream: str) -> dict[str, str]:
        env = {
            "INTERLOCK_UPSTREAM_OPENAI": upstream, "INTERLOCK_UPSTREAM_ANTHROPIC": upstream,
            "INTERLOCK_DATABASE_URL": f"sqlite+aiosqlite:///{self.db_path(name)}",
            "INTERLOCK_SPOOL_DIR": str(self.out / f"spool-{name}"), "INTERLOCK_LOG_LEVEL": "warning",
            "INTERLOCK_RULES_DIR": str(self.args.rules_dir or self.out / "rules-empty"),
        }
        (self.out / "rules-empty").mkdir(exist_ok=True)
        for item in self.args.proxy_env:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"--proxy-env {item!r}: expected KEY=VALUE")
            env[key] = value
        self.meta["proxy_env"] = env
        return env

    def _db_upgrade(self, env: dict[str, str]) -> None:
        done = subprocess.run([self.args.interlock, "db", "upgrade"], env=env, capture_output=True, text=True,
                              timeout=120, cwd=REPO)
        if done.returncode != 0:
            log(f"warning: `interlock db upgrade` failed ({done.stderr.strip()[-300:]}); serving anyway")

    def _spawn(self, name: str, argv: Sequence[str], cpus: str | None, env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, self.out, cpus=cpus, env=env, cwd=REPO)
        self.procs.append(proc)
        return proc

    def drain(self, name: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the proxy's pipeline has nothing queued and nothing lagging (graph linking
        catches up after saturation); report how long it took and the lane's counters."""
        url, t0, state = self.urls.get(name), time.monotonic(), {}
        while url and time.monotonic() - t0 < timeout:
            try:
                with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
                    text = resp.read().decode()
            except (urllib.error.URLError, OSError):
                break
            state = {m.group(1): float(m.group(2)) for m in
                     re.finditer(r'^interlock_pipeline_state\S*\{[^}]*state="(\w+)"[^}]*\} ([0-9.e+]+)', text, re.M)}
            depth = re.search(r"^interlock_pipeline_queue_depth\S* ([0-9.e+]+)", text, re.M)
            if state.get("lagging", 0) == 0 and (depth is None or float(depth.group(1)) == 0):
                break
            time.sleep(0.5)
        return {"drain_s": round(time.monotonic() - t0, 1), **state}

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def db_path(self, name: str) -> Path:
        return self.out / ("bench.db" if name == "interlock" else f"bench-{name}.db")

    def rss(self, name: str | None = None) -> float:
        return float(self.loadgen.tree_rss_mib(self.pids[name or next(iter(self.proxies))]))

    # ---------------------------------------------------------------- load
    def run_load(self, target: str, name: str, n: int, min_s: float, dest: str,
                 warmup: int | None = None) -> dict[str, Any] | None:
        sc = SCENARIOS[name]
        argv = [self.args.python, str(self.args.shared / "loadgen.py"), "--url", self.urls[target],
                "--api", sc.api, "-n", str(n), "-c", str(sc.c), "--min-seconds", str(min_s),
                "--prompt-tokens", str(sc.prompt), "--max-tokens", str(sc.max_tokens),
                "--model", MODELS[sc.api], "--json", str(self.out / "raw" / dest), "--quiet",
                "--cpu-pid", f"upstream={self.pids['upstream']}"]
        argv += ["--stream"] if sc.stream else []
        argv += [] if sc.include_usage else ["--no-include-usage"]
        argv += ["--warmup", str(warmup)] if warmup is not None else []
        argv += ["--cpu-pid", f"proxy={self.pids[target]}"] if target != DIRECT else []
        if self.client_cpus is not None:
            argv = ["taskset", "-c", self.client_cpus, *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            log(f"  loadgen failed ({target}/{name}) rc={done.returncode}: {done.stderr.strip()[-400:]}")
            return None
        result: dict[str, Any] = json.loads((self.out / "raw" / dest).read_text())
        if target != DIRECT:
            self.sent_to_proxy += result["n"] + (warmup if warmup is not None else max(2 * sc.c, 10))
        return result

    def warm_up(self, names: list[str]) -> None:
        for name in names:
            count = max(10, int(self.args.warmup_n * (0.3 if SCENARIOS[name].prompt else 1)))
            for target in self.targets:
                self.run_load(target, name, count, 0, f"warmup_{name}_{target}.json")
        for proxy in self.proxies:
            self.meta["proxies"][proxy]["rss_mib_after_warmup"] = self.rss(proxy)

    def rounds(self, names: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        results: dict[str, dict[str, list[dict[str, Any]]]] = {n: {t: [] for t in self.targets} for n in names}
        for rnd in range(1, self.args.rounds + 1):
            for name in names:
                sc = SCENARIOS[name]
                for target in self.targets:
                    n, min_s = max(1, int(sc.n * self.args.scale)), 2.0 * self.args.scale
                    res = self.run_load(target, name, n, min_s, f"r{rnd}_{name}_{target}.json")
                    if res:
                        results[name][target].append(res)
                        lat = res["latency_ms"] or {}
                        log(f"r{rnd} {name:<18} {target:<9} rps={res['rps']:8.1f} p50={lat.get('p50', 0):7.2f} "
                            f"p99={lat.get('p99', 0):7.2f} err={res['errors']}")
        return results

    def soak(self) -> dict[str, Any]:
        """Same small request at C=16, in 5 steps; RSS after each shows whether memory stays flat."""
        steps, total = 5, self.args.soak
        rss = [self.rss()]
        runs = []
        for i in range(steps):
            res = self.run_load(next(iter(self.proxies)), "ns_c16", total // steps, 0, f"soak_{i}.json", warmup=0)
            rss.append(self.rss())
            if res:
                runs.append(res)
            log(f"soak step {i + 1}/{steps}: rss={rss[-1]:.1f}MiB" + (f" rps={res['rps']:.0f}" if res else ""))
        requests = sum(r["n"] for r in runs)
        cpu = sum(r["cpu"]["proxy"]["cpu_s"] for r in runs)
        return {"requests": requests, "errors": sum(r["errors"] for r in runs), "rss_mib": rss,
                "rss_change_pct": 100.0 * (rss[-1] - rss[0]) / rss[0] if rss[0] else None,
                "rps": statistics.median(r["rps"] for r in runs) if runs else None,
                "proxy_cpu_ms_per_req": 1000.0 * cpu / requests if requests else None}


# --------------------------------------------------------------------------- summary
def median(values: list[float | None]) -> float | None:
    clean = [v for v in values if v is not None and v == v]
    return statistics.median(clean) if clean else None


def row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(get: Callable[[dict[str, Any]], float | None]) -> float | None:
        return median([get(r) for r in runs])

    return {
        "rounds": len(runs), "requests": sum(r["n"] for r in runs), "errors": sum(r["errors"] for r in runs),
        "rps": med(lambda r: r["rps"]),
        "p50": med(lambda r: r["latency_ms"].get("p50")), "p99": med(lambda r: r["latency_ms"].get("p99")),
        "ttfb_p50": med(lambda r: (r.get("ttfb_ms") or {}).get("p50")),
        "ttfb_p99": med(lambda r: (r.get("ttfb_ms") or {}).get("p99")),
        "events_per_stream": med(lambda r: r.get("events_per_stream")),
        "proxy_cpu_ms_per_req": med(lambda r: r["cpu"].get("proxy", {}).get("cpu_ms_per_req")),
        "upstream_cpu_ms_per_req": med(lambda r: r["cpu"].get("upstream", {}).get("cpu_ms_per_req")),
        "p50_all_rounds": [r["latency_ms"].get("p50") for r in runs],
        "rps_all_rounds": [r["rps"] for r in runs],
    }


def summarize(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, by_target in results.items():
        direct = row(by_target[DIRECT])
        summary[name] = {DIRECT: direct}
        for target, runs in by_target.items():
            if target == DIRECT:
                continue
            proxy = row(runs)

            def added(key: str, p: dict[str, Any] = proxy, d: dict[str, Any] = direct) -> float | None:
                return p[key] - d[key] if p[key] is not None and d[key] is not None else None

            proxy.update(added_p50=added("p50"), added_p99=added("p99"), added_ttfb_p50=added("ttfb_p50"),
                         added_ttfb_p99=added("ttfb_p99"),
                         rps_ratio=proxy["rps"] / direct["rps"] if proxy["rps"] and direct["rps"] else None)
            summary[name][target] = proxy
    return summary


def checks(summary: dict[str, Any], soak: dict[str, Any]) -> list[tuple[str, float | None, float, bool]]:
    """The issue's targets: (what, measured, limit, ok)."""
    out: list[tuple[str, float | None, float, bool]] = []

    def add(what: str, value: float | None, limit: float, absolute: bool = False) -> None:
        measured = abs(value) if absolute and value is not None else value
        out.append((what, value, limit, measured is not None and measured <= limit))

    first = next((t for pair in summary.values() for t in pair if t != DIRECT), "interlock")
    if "ns_c16" in summary:
        add(f"{first} ns_c16 added p50 ms", summary["ns_c16"][first]["added_p50"], 1.0)
        add(f"{first} ns_c16 added p99 ms", summary["ns_c16"][first]["added_p99"], 5.0)
    if "stream_c16" in summary:
        add(f"{first} stream_c16 added TTFB p50 ms", summary["stream_c16"][first]["added_ttfb_p50"], 2.0)
    if soak:
        add("RSS change over soak %", soak["rss_change_pct"], 5.0, absolute=True)
    return out


def fmt(value: float | None, digits: int = 2, sign: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:{sign}.0f}" if abs(value) >= 100 else f"{value:{sign}.{digits}f}"


def delta(value: float | None) -> str:
    return fmt(value, sign="+")


def render(meta: dict[str, Any], summary: dict[str, Any], soak: dict[str, Any],
           verdicts: list[tuple[str, float | None, float, bool]]) -> str:
    lines = [
        f"# Interlock overhead ({meta['started']})", "",
        f"Machine: {meta['machine']}. " + (f"Pinned: loadgen+upstream CPU {meta['client_cpus']}, proxy CPU "
                                            f"{meta['proxy_cpus']}." if meta["client_cpus"] else "Not pinned."),
        f"Rounds {meta['rounds']} (direct and interlock alternate per scenario; medians over rounds), "
        f"scale {meta['scale']}, upstream latency {meta['latency_ms']} ms, chunk delay {meta['chunk_delay_ms']} ms.",
        *(f"Proxy {name}: `{p['cmd']}` ready in {p['ready_s']:.1f} s, RSS {p['rss_mib_at_ready']:.0f} MiB at "
          f"ready, {p.get('rss_mib_after_warmup', 0):.0f} MiB after warm-up." for name, p in meta["proxies"].items()),
        f"Recording: {meta.get('recorded_rows', '?')} rows in `calls` for ~{meta['sent_to_proxy']} requests sent "
        f"through the proxy; {fmt(meta.get('linked_share'))} % of conversation calls linked into a run after the "
        f"drain (linking: {meta.get('linking', {})}).", "",
        "| scenario | proxy | direct p50 / p99 ms | proxied p50 / p99 ms | **added p50 / p99 ms** | added TTFB "
        "p50 / p99 | req/s direct → proxied (ratio) | **proxy CPU ms/req** | errors d/p |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, pair in summary.items():
        d = pair[DIRECT]
        for target, p in pair.items():
            if target == DIRECT:
                continue
            ttfb = f"{delta(p['added_ttfb_p50'])} / {delta(p['added_ttfb_p99'])}" if p["ttfb_p50"] is not None else ""
            lines.append(
                f"| {name} | {target} | {fmt(d['p50'])} / {fmt(d['p99'])} | {fmt(p['p50'])} / {fmt(p['p99'])} | "
                f"**{delta(p['added_p50'])} / {delta(p['added_p99'])}** | {ttfb} | {fmt(d['rps'], 1)} → "
                f"{fmt(p['rps'], 1)} ({fmt(p['rps_ratio'], 3)}) | **{fmt(p['proxy_cpu_ms_per_req'], 3)}** | "
                f"{d['errors']}/{p['errors']} |")
    if soak:
        rss = " → ".join(f"{v:.1f}" for v in soak["rss_mib"])
        lines += ["", f"Soak: {soak['requests']} requests (ns_c16) through the proxy, {soak['errors']} errors, "
                      f"{fmt(soak['rps'], 0)} req/s, {fmt(soak['proxy_cpu_ms_per_req'], 3)} CPU ms/req; "
                      f"RSS MiB {rss} ({fmt(soak['rss_change_pct'])} %)."]
    lines += ["", "| target | measured | limit | ok |", "|---|---:|---:|---|"]
    lines += [f"| {what} | {fmt(value)} | {limit:g} | {'yes' if ok else 'NO'} |" for what, value, limit, ok in verdicts]
    streams = [f"{n}/{t}={pair[t]['events_per_stream']:.1f}" for n, pair in summary.items() for t in pair
               if pair[t]["events_per_stream"]]
    if streams:
        lines += ["", "Stream sanity (mean SSE data events per stream): " + ", ".join(streams)]
    return "\n".join(lines) + "\n"


def recorded_rows(db: Path) -> int | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("select count(*) from calls").fetchone()[0])
    except sqlite3.Error:
        return None


def linked_share(db: Path) -> float | None:
    """Percent of recorded conversation calls (chat, responses, messages) the graph placed in a run."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db) as conn:
            total, linked = conn.execute(
                "select count(*), count(run_id) from calls where operation in ('chat', 'responses', 'messages')"
            ).fetchone()
    except sqlite3.Error:
        return None
    return round(100.0 * linked / total, 2) if total else None


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    return f"{cpu}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"


# --------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", type=Path, help="results folder (default /tmp/interlock-bench/<timestamp>)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--scenarios", default=DEFAULT_SCENARIOS, help=f"from {','.join(SCENARIOS)} or 'all'")
    p.add_argument("--scale", type=float, default=1.0, help="multiply request counts and minimum seconds")
    p.add_argument("--warmup-n", type=int, default=100, help="warm-up requests per target and scenario")
    p.add_argument("--soak", type=int, default=50_000, help="requests of the RSS soak (0 = skip)")
    p.add_argument("--python", default=sys.executable, help="python with aiohttp, uvloop, orjson")
    p.add_argument("--shared", type=Path, default=SHARED, help="folder of the shared harness (loadgen.py)")
    p.add_argument("--upstream", choices=("shared", "ours"), default="shared",
                   help="fake upstream: shared/bench/fake_upstream.py or tests/fake_upstream.py")
    p.add_argument("--interlock", default=str(REPO / ".venv" / "bin" / "interlock"))
    p.add_argument("--proxy-cmd", default=INTERLOCK_CMD,
                   help="command starting the proxy; placeholders {interlock} {port} {upstream} {python} "
                        "{shared} {repo}; INTERLOCK_* env is set either way")
    p.add_argument("--proxy", action="append", default=[], metavar="NAME=CMD",
                   help="a proxy to measure (repeatable: all interleaved in one run); replaces --proxy-cmd")
    p.add_argument("--proxy-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the proxy, e.g. INTERLOCK_CONTENT_POLICY=full")
    p.add_argument("--rules-dir", type=Path, help="rules for the proxy (default: none, an empty folder)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--chunk-delay-ms", type=float, default=0.0)
    p.add_argument("--ready-timeout", type=float, default=60.0)
    p.add_argument("--no-pin", dest="pin", action="store_false", help="let the kernel place processes")
    p.add_argument("--client-cpus", default="0")
    p.add_argument("--proxy-cpus", default="1")
    args = p.parse_args(argv)
    if args.scenarios == "all":
        args.scenarios = ",".join(SCENARIOS)
    unknown = [s for s in args.scenarios.split(",") if s not in SCENARIOS]
    if unknown:
        p.error(f"--scenarios: unknown {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    if not (args.shared / "loadgen.py").exists():
        p.error(f"--shared {args.shared}: no loadgen.py there (the shared harness is expected beside the repo)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out or Path(tempfile.gettempdir()) / "interlock-bench" / time.strftime("%Y%m%d-%H%M%S")
    (out / "raw").mkdir(parents=True, exist_ok=True)
    pin = args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    bench = Bench(args, out, load_module(args.shared / "loadgen.py"),
                  args.client_cpus if pin else None, args.proxy_cpus if pin else None)
    bench.meta.update(started=time.strftime("%Y-%m-%d %H:%M:%S"), argv=sys.argv, machine=machine(),
                      client_cpus=bench.client_cpus, proxy_cpus=bench.proxy_cpus, rounds=args.rounds,
                      scale=args.scale, latency_ms=args.latency_ms, chunk_delay_ms=args.chunk_delay_ms)
    names = args.scenarios.split(",")

    def terminate(*_: object) -> None:
        bench.stop()
        sys.exit(143)

    signal.signal(signal.SIGTERM, terminate)
    try:
        bench.start_upstream()
        bench.start_proxies()
        bench.warm_up(names)
        log("warm-up done")
        results = bench.rounds(names)
        soak = bench.soak() if args.soak else {}
        bench.meta["linking"] = {name: bench.drain(name) for name in bench.proxies}
    finally:
        bench.stop()
    first = next(iter(bench.proxies))
    bench.meta.update(sent_to_proxy=bench.sent_to_proxy, recorded_rows=recorded_rows(bench.db_path(first)),
                      linked_share=linked_share(bench.db_path(first)))
    summary = summarize(results)
    verdicts = checks(summary, soak)
    (out / "summary.json").write_text(json.dumps({
        "meta": bench.meta, "summary": summary, "soak": soak,
        "checks": [dict(zip(("what", "measured", "limit", "ok"), v, strict=True)) for v in verdicts],
        "scenarios": {n: asdict(SCENARIOS[n]) for n in names}}, indent=1, default=str))
    report = render(bench.meta, summary, soak, verdicts)
    (out / "summary.md").write_text(report)
    print(report)
    log(f"results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
