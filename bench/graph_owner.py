"""The shared graph's owner over real Redis: linking throughput, answer lag, same answers.

    python bench/graph_owner.py                          # generator calls + small calls, redis DB 4
    python bench/graph_owner.py --redis redis://127.0.0.1:6379/4 --runs 120 --rate 3000

    calls ──GraphClient.send──▶ Redis Stream ──GraphOwner (Linker)──▶ reply list ──▶ collector

1. in process: Linker.observe over the calls (the floor: what one process does today)
2. through Redis as fast as the owner goes: calls/s linked end to end (send → answer back)
3. at a fixed rate (default: ns_c16's request rate through one proxy): answer lag p50/p99/max
Every answer is compared with the in-process LinkResult (agent, run, edges): same code, same order.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import pathlib
import statistics
import sys
import time
import uuid
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from proxy.call import Call, Completion, Message  # noqa: E402
from proxy.graph import Linker, LinkResult, MemoryLineageIndex  # noqa: E402
from proxy.graph.bus import RedisGraphBus  # noqa: E402
from proxy.graph.identity import AgentDirectory, Identifier  # noqa: E402
from proxy.graph.runs import RunResolver  # noqa: E402
from proxy.graphowner import GraphClient, GraphOwner  # noqa: E402
from proxy.store.rows import Record  # noqa: E402


def generator_calls(runs: int, seed: int) -> list[Call]:
    path = pathlib.Path(__file__).with_name("graph_accuracy.py")
    spec = importlib.util.spec_from_file_location("graph_accuracy", path)
    assert spec is not None and spec.loader is not None
    ga = importlib.util.module_from_spec(spec)
    sys.modules["graph_accuracy"] = ga
    spec.loader.exec_module(ga)
    calls, _ = ga.generate(runs, seed, template_runs=runs // 4)
    return list(calls)


def small_calls(n: int) -> list[Call]:
    """Like bench/run.py's ns_* requests: one short user message, a short answer."""
    out = []
    now = time.time()
    for i in range(n):
        call = Call(f"s{i:07d}", now + i * 1e-4, "openai", "chat", "openai", "POST", "/v1/chat/completions")
        call.messages = [Message("user", f"Say hello to request {i} of the benchmark, please.")]
        call.completion = Completion(f"Hello, request {i}!")
        call.ended_at, call.outcome, call.status = call.started_at + 1e-3, "ok", 200
        out.append(call)
    return out


def owner_parts() -> tuple[Linker, RunResolver]:
    index = MemoryLineageIndex()
    identifier = Identifier(AgentDirectory(claims=index))
    linker = Linker(index, identifier=identifier)
    return linker, RunResolver(index, identifier, placer=linker)


class Collector:
    """The client's sink: when each answer came back."""

    def __init__(self) -> None:
        self.links: dict[str, LinkResult | None] = {}
        self.at: dict[str, float] = {}
        self.done = asyncio.Event()
        self.expect = 0

    def linked(self, call_id: str, link: LinkResult | None, rows: Record, agg: Record) -> None:
        self.links[call_id], self.at[call_id] = link, time.perf_counter()
        if len(self.links) >= self.expect:
            self.done.set()

    def link_locally(self, call: Call) -> None:
        raise RuntimeError("Redis unreachable during the benchmark")


async def through_redis(url: str, calls: list[Call], rate: float | None) -> dict[str, Any]:
    prefix = f"bench:graph:{uuid.uuid4().hex[:8]}"
    bus = RedisGraphBus.from_url(url, prefix=prefix, max_len=len(calls) + 1000)
    linker, resolver = owner_parts()
    owner = GraphOwner(bus, me="owner", linker=linker, resolver=resolver, submit=lambda r: None, batch=256)
    client = GraphClient(bus, me="client")
    sink = Collector()
    sink.expect = len(calls)
    client.sink = sink
    await client.start()
    await owner.start()
    sent: dict[str, float] = {}
    t0 = time.perf_counter()
    for i, call in enumerate(calls):
        if rate:
            pause = t0 + i / rate - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
        sent[call.id] = time.perf_counter()
        client.send(call)
        if not rate and i % 512 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(sink.done.wait(), 600)
    took = time.perf_counter() - t0
    lags = sorted(sink.at[c] - sent[c] for c in sent)
    await client.aclose()
    await owner.aclose()
    keys = [k async for k in bus.client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await bus.client.delete(*keys)
    await bus.aclose()
    return {"calls_per_s": len(calls) / took, "links": sink.links,
            "lag_ms": {"p50": 1000 * statistics.median(lags), "p99": 1000 * lags[int(0.99 * (len(lags) - 1))],
                       "max": 1000 * lags[-1]}}


async def cpu_per_call(url: str, calls: list[Call]) -> dict[str, float]:
    """One request at a time, as ns_c1 does: place, then send the answered call and wait for its
    link; CPU (this process: client and owner both) per call, and the in-process floor."""
    prefix = f"bench:graph:{uuid.uuid4().hex[:8]}"
    bus = RedisGraphBus.from_url(url, prefix=prefix, max_len=len(calls) + 1000)
    linker, resolver = owner_parts()
    owner = GraphOwner(bus, me="owner", linker=linker, resolver=resolver, submit=lambda r: None)
    client = GraphClient(bus, me="client", place_timeout_s=1.0)
    sink = Collector()
    client.sink = sink
    await client.start()
    await owner.start()
    while not owner.leading:  # noqa: ASYNC110 (polls the owner task's flag)
        await asyncio.sleep(0.01)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i, call in enumerate(calls):
        answer = await client.place(call)
        assert answer is not None, "the owner did not answer a placement within 1 s"
        sink.expect = i + 1
        sink.done.clear()
        client.send(call)
        await sink.done.wait()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await client.aclose()
    await owner.aclose()
    keys = [k async for k in bus.client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await bus.client.delete(*keys)
    await bus.aclose()
    return {"cpu_ms": 1000 * cpu / len(calls), "wall_ms": 1000 * wall / len(calls)}


def in_process(calls: list[Call]) -> tuple[dict[str, LinkResult], float]:
    linker, resolver = owner_parts()
    t0 = time.perf_counter()
    out = {}
    for c in calls:
        resolver.note_response(c)
        out[c.id] = linker.observe(c)
    return out, len(calls) / (time.perf_counter() - t0)


def same(a: LinkResult | None, b: LinkResult) -> bool:
    return a is not None and (a.agent, a.run_id, [(e.source, e.target, e.kind) for e in a.edges]) == (
        b.agent, b.run_id, [(e.source, e.target, e.kind) for e in b.edges])


def _hiredis() -> bool:
    return importlib.util.find_spec("hiredis") is not None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", default="redis://127.0.0.1:6379/4")
    p.add_argument("--runs", type=int, default=120, help="generator runs (each pattern in turn)")
    p.add_argument("--small", type=int, default=20_000, help="small ns-like calls")
    p.add_argument("--rate", type=float, default=6000.0, help="calls/s for the lag measurement (ns_c16's rate)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cpu", type=int, default=2000, help="small calls for the sequential CPU measurement")
    args = p.parse_args()
    if args.cpu:
        got = asyncio.run(cpu_per_call(args.redis, small_calls(args.cpu)))
        floor_cpu = time.process_time()
        in_process(small_calls(args.cpu))
        floor = 1000 * (time.process_time() - floor_cpu) / args.cpu
        print(f"sequential small calls: {got['cpu_ms']:.3f} ms CPU per call through Redis (client + owner in one "
              f"process; wall {got['wall_ms']:.2f} ms) vs {floor:.3f} ms resolving and linking in process; "
              f"Redis client: {'hiredis' if _hiredis() else 'pure-Python parser'}")
    for name, make in (("generator", lambda: generator_calls(args.runs, args.seed)),
                       ("small", lambda: small_calls(args.small))):
        calls = make()
        if not calls:
            continue
        local, local_rate = in_process(calls)
        fast = asyncio.run(through_redis(args.redis, make(), None))
        paced = asyncio.run(through_redis(args.redis, make(), min(args.rate, 0.8 * fast["calls_per_s"])
                                          if name == "generator" else args.rate))
        agree = sum(same(fast["links"].get(c.id), local[c.id]) for c in calls)
        print(f"{name}: {len(calls)} calls; in process {local_rate:,.0f} calls/s; owner via Redis "
              f"{fast['calls_per_s']:,.0f} calls/s (answers back; same as in process: {agree}/{len(calls)}); "
              f"lag at {paced['calls_per_s']:,.0f} calls/s offered: p50 {paced['lag_ms']['p50']:.1f} ms, "
              f"p99 {paced['lag_ms']['p99']:.1f} ms, max {paced['lag_ms']['max']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
