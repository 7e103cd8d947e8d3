"""Guard evaluation micro-benchmark: what the guard chain adds to one call.

    .venv/bin/python bench/guards_micro.py [--calls 3000] [--chunks 50] [--redis URL] [--turns] [--loops]
                                           [--shared-loops REDIS_URL]

Builds a chain from 50 active rules (20 budgets in tokens and USD over every scope and
window, 20 loop rules covering all five detectors, 10 context rules) with the in-memory
counter store, then times, per call, `on_request` + `on_response` (a 12-message chat with
tool calls, a 600-character answer), and separately one `on_chunk`.  Two layouts:

  all-match   every rule matches every call (worst case)
  scoped      rules scoped to 10 agents by `match:`, so ~5 apply to a call (typical)
  default     the shipped rules/default.yaml (6 flag-only rules)
  resend      rules/default.yaml on the request bench/run.sh's load generator sends: one short
              chat resent by one agent outside any run, the same answer each time (a retry
              storm: every call from the 4th on is flagged)

The 50 rules make 70 guards: a context rule builds three (fit, truncated output, dropped
history).  The chain runs consecutive budget rules as one batch (one counter-store call per
hook for all of them), and consecutive context guards as another.  Each call has a
conversation of its own (topic i), so the fingerprints remembered across calls (a resent
history is not hashed again) barely help here: the worst case for them.  `--turns` adds the
all-match rules over 50 conversations resent turn after turn (1 to 20 steps, 4 to 61
messages), with and without those fingerprints.

`--loops` measures what the meaning-level loop rules of rules/default.yaml (revisit,
redelegation, stall) add: the shipped rules with and without them, alternated over 5 rounds,
CPU per call (median of the rounds' medians) on both workloads (`default` and `resend`).

`--shared-loops URL` measures what keeping loop state in Redis (shared by replicas) adds: the
loop rules of rules/default.yaml on the in-memory store and on Redis, alternated over 5 rounds,
CPU per call of this process (median of the rounds' medians; Redis's own CPU is not counted).

Run with the garbage collector set as `interlock serve` sets it (`proxy.cli.tune_gc`).
Target: p50 <= 0.2 ms per call with 50 rules.  `--redis` adds a run against Redis
(informational: the budget rules share one round trip per hook, each loop rule still makes
its own, started concurrently).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.call import Call, Chunk, Completion, Message, ToolCall, Usage
from proxy.cli import tune_gc
from proxy.guards import FingerprintHandoffs, GuardChain, build_chain, make_deps
from proxy.guards.counters import CounterStore, MemoryCounterStore, RedisCounterStore
from proxy.guards.facts import FactsCache, Fingerprints
from proxy.rules import RuleSet, load_rules, parse_rule

DEFAULTS = Path(__file__).resolve().parent.parent / "rules"
SCOPES = ("run", "agent", "agent_run", "api_key", "model", "global")
WINDOWS = ("run", "1m", "1h", "1d")
DETECTS = ("retry", "tool_repeat", "no_progress", "ping_pong", "ceiling")


def _budget(i: int) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": f"budget-{i}",
        "kind": "budget",
        "scope": SCOPES[i % 6],
        "window": WINDOWS[i % 4],
    }
    rule.update({"limit_usd": 1e6} if i % 3 == 0 else {"limit_tokens": 10**12})
    rule.update({"action": "deny", "cutoff": i % 2 == 0, "warn_at": 0.9})
    return rule


def _loop(i: int) -> dict[str, Any]:
    detect = DETECTS[i % 5]
    rule: dict[str, Any] = {"name": f"loop-{i}", "kind": "loop", "detect": detect, "action": "flag"}
    if detect == "ceiling":
        rule.update({"max_steps": 10**9, "max_duration": "1d", "max_tokens_per_min": 10**12})
    return rule


def _context(i: int) -> dict[str, Any]:
    return {"name": f"context-{i}", "kind": "context", "action": "deny", "margin_tokens": i}


def rules(scoped: bool) -> list[Any]:
    raw = [_budget(i) for i in range(20)] + [_loop(i) for i in range(20)] + [_context(i) for i in range(10)]
    if scoped:
        for i, rule in enumerate(raw):
            rule["match"] = {"agent": f"agent-{i % 10}*"}
    return [parse_rule(r) for r in raw]


def conversation(i: int) -> list[Message]:
    msgs = [Message("system", "You are a careful research agent. Use the tools; cite sources.")]
    for t in range(5):
        tc = ToolCall(f"tc-{i}-{t}", "search", f'{{"q": "topic {i} part {t}", "limit": 5}}')
        msgs.append(
            Message("user", f"Step {t}: look into topic {i}, aspect {t}, and summarise what you find.")
        )
        msgs.append(Message("assistant", "", [tc]))
    msgs.append(Message("tool", f"result {i}: " + "lorem ipsum dolor sit amet " * 20, [], f"tc-{i}-4"))
    return msgs


def resent(i: int) -> list[Message]:
    """Conversation i % 50 (its agent and run are call i's) at turn (i // 50) % 20: what the
    previous turn sent plus one more step, as agents resend their whole history."""
    c, turns = i % 50, (i // 50) % 20 + 1
    msgs = [Message("system", "You are a careful research agent. Use the tools; cite sources.")]
    for t in range(turns):
        tc = ToolCall(f"tc-{c}-{t}", "search", f'{{"q": "topic {c} part {t}", "limit": 5}}')
        msgs.append(Message("user", f"Step {t}: look into topic {c}, aspect {t}, and summarise."))
        msgs.append(Message("assistant", "", [tc]))
        msgs.append(Message("tool", f"result {c}.{t}: " + "lorem ipsum dolor sit amet " * 20, [], tc.id))
    return msgs


def _call(i: int, **fields: Any) -> Call:
    return Call(
        id=f"bench-{i}",
        started_at=time.time(),
        provider="openai",
        operation="chat",
        upstream="openai",
        method="POST",
        path="/v1/chat/completions",
        api_key_hash="k1",
        **fields,
    )


def loadgen(i: int) -> Call:
    """What ../shared/bench/loadgen.py sends, as the relay hands it to the guards (agent named
    from its system prompt, no run yet: a first turn is placed in a run later, by lineage)."""
    return _call(
        i,
        agent="assistant",
        model_requested="gpt-4o-mini",
        max_tokens=16,
        input_tokens_counted=40,
        messages=[Message("system", "You are a helpful assistant."), Message("user", "hello " * 30)],
    )


def make_call(i: int, history: Callable[[int], list[Message]] = conversation) -> Call:
    return _call(
        i,
        agent=f"agent-{i % 10}",
        run_id=f"run-{i % 50}",
        model_requested="gpt-4o",
        max_tokens=1024,
        input_tokens_counted=1800,
        stream=True,
        messages=history(i),
    )


def finish(call: Call, i: int) -> None:
    call.outcome, call.status, call.first_byte_at, call.finish_reason = "ok", 200, time.time(), "stop"
    if call.agent == "assistant":  # loadgen(i): the fake upstream's answer, the same every time
        call.completion = Completion(text="lorem ipsum dolor sit amet consectetur adipiscing elit " * 2)
        call.usage = Usage(input_tokens=40, output_tokens=16)
        return
    call.completion = Completion(text=f"Answer {i}: " + "the findings show a steady improvement " * 15)
    call.usage = Usage(input_tokens=1800, output_tokens=300)


def loadgen_history(i: int) -> list[Message]:
    """Marker for `measure`: build calls with `loadgen` instead of `make_call`."""
    return loadgen(i).messages


async def measure(
    chain: GuardChain, calls: int, chunks: int, history: Callable[[int], list[Message]] = conversation
) -> tuple[list[float], list[float], list[float]]:
    """Per call: wall and CPU seconds of on_request + on_response; per chunk: wall seconds.
    CPU time (this thread) is what other processes on a shared machine cannot inflate."""
    per_call, per_cpu, per_chunk = [], [], []
    chunk = Chunk(raw=b"data: {}\n\n", text_delta="x")
    for i in range(calls):
        call = loadgen(i) if history is loadgen_history else make_call(i, history)
        c0, t0 = time.thread_time(), time.perf_counter()
        await chain.on_request(call)
        t1, c1 = time.perf_counter(), time.thread_time()
        for n in range(chunks):
            chunk.output_tokens_so_far = n * 6
            chain.on_chunk(call, chunk)
        t2 = time.perf_counter()
        finish(call, i)
        c2, t2b = time.thread_time(), time.perf_counter()
        await chain.on_response(call)
        t3, c3 = time.perf_counter(), time.thread_time()
        per_call.append((t1 - t0) + (t3 - t2b))
        per_cpu.append((c1 - c0) + (c3 - c2))
        per_chunk.append((t2 - t1) / max(chunks, 1))
    return per_call, per_cpu, per_chunk


def report(
    label: str, per_call: list[float], per_cpu: list[float], per_chunk: list[float], guards: int
) -> None:
    q = statistics.quantiles(per_call, n=100)
    print(
        f"{label:<22} guards={guards:<3} per call p50={statistics.median(per_call) * 1e3:.3f} ms "
        f"(cpu {statistics.median(per_cpu) * 1e3:.3f} ms) p90={q[89] * 1e3:.3f} ms p99={q[98] * 1e3:.3f} ms"
        f" | per chunk p50={statistics.median(per_chunk) * 1e6:.2f} us"
    )


async def run(
    label: str,
    store: CounterStore,
    scoped: bool | None,
    calls: int,
    chunks: int,
    history: Callable[[int], list[Message]] = conversation,
) -> None:
    ruleset = load_rules(DEFAULTS) if scoped is None else RuleSet(tuple(rules(scoped)))
    chain = build_chain(ruleset, make_deps(store))
    await measure(chain, min(300, calls), chunks, history)  # warm-up
    report(label, *await measure(chain, calls, chunks, history), guards=len(chain))


async def run_turns(label: str, calls: int, chunks: int, *, remember: bool) -> None:
    """All-match over conversations resent turn after turn; `remember=False` hashes every
    message of every turn again (what the fingerprints remembered across calls save)."""
    store, facts = MemoryCounterStore(), FactsCache(known=None if remember else Fingerprints(max_chars=0))
    deps = dataclasses.replace(make_deps(store), facts=facts, handoffs=FingerprintHandoffs(store, facts))
    chain = build_chain(RuleSet(tuple(rules(False))), deps)
    await measure(chain, min(300, calls), chunks, resent)  # warm-up
    report(label, *await measure(chain, calls, chunks, resent), guards=len(chain))


MEANING = frozenset({"revisit", "redelegation", "stall"})  # detect values of the loops-in-meaning rules


async def cpu_per_call(ruleset: RuleSet, calls: int, history: Callable[[int], list[Message]]) -> float:
    chain = build_chain(ruleset, make_deps(MemoryCounterStore()))
    await measure(chain, min(300, calls), 0, history)  # warm-up
    _, per_cpu, _ = await measure(chain, calls, 0, history)
    return statistics.median(per_cpu)


async def run_loops(calls: int, rounds: int = 5) -> None:
    """The shipped rules with and without the meaning-level loop rules, alternated."""
    shipped = load_rules(DEFAULTS)
    without = RuleSet(tuple(r for r in shipped.rules if getattr(r, "detect", None) not in MEANING))
    for label, history in (("12-message chat", conversation), ("small call (resend)", loadgen_history)):
        base, full = [], []
        for _ in range(rounds):
            base.append(await cpu_per_call(without, calls, history))
            full.append(await cpu_per_call(shipped, calls, history))
        b, f = statistics.median(base), statistics.median(full)
        print(
            f"loops-in-meaning rules, {label:<20} cpu per call: without {b * 1e3:.3f} ms, with {f * 1e3:.3f} ms,"
            f" added {(f - b) * 1e3:.3f} ms"
        )


async def run_shared_loops(url: str, calls: int, rounds: int = 5) -> None:
    """The shipped loop rules, in-memory store against Redis, alternated."""
    loops = RuleSet(tuple(r for r in load_rules(DEFAULTS).rules if r.kind == "loop"))
    for label, history in (("12-message chat", conversation), ("small call (resend)", loadgen_history)):
        memory, redis, wall = [], [], []
        for _ in range(rounds):
            memory.append(await cpu_per_call(loops, calls, history))
            prefix = f"interlock-bench:{time.time_ns()}:"
            store = RedisCounterStore.from_url(url, prefix=prefix)
            try:
                chain = build_chain(loops, make_deps(store))
                await measure(chain, min(100, calls), 0, history)  # warm-up
                per_wall, per_cpu, _ = await measure(chain, calls, 0, history)
                redis.append(statistics.median(per_cpu))
                wall.append(statistics.median(per_wall))
            finally:
                await drop_keys(store, prefix)
                await store.aclose()
        m, r = statistics.median(memory), statistics.median(redis)
        print(
            f"loop rules of rules/default.yaml ({len(loops.rules)}), {label:<20} cpu per call: memory {m * 1e3:.3f} ms,"
            f" redis {r * 1e3:.3f} ms, added {(r - m) * 1e3:.3f} ms (redis wall p50 {statistics.median(wall) * 1e3:.3f} ms)"
        )


async def drop_keys(store: RedisCounterStore, prefix: str) -> None:
    client = store._r
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    for i in range(0, len(keys), 1000):
        await client.delete(*keys[i : i + 1000])


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--chunks", type=int, default=50)
    ap.add_argument("--redis", help="also run against this Redis URL (keys under interlock-bench:)")
    ap.add_argument("--turns", action="store_true", help="also all-match over resent conversations")
    ap.add_argument("--loops", action="store_true", help="only: what the loops-in-meaning rules add")
    ap.add_argument("--shared-loops", metavar="REDIS_URL",
                    help="only: CPU the loop rules add with their state in Redis instead of memory")
    args = ap.parse_args()
    tune_gc()
    if args.shared_loops:
        await run_shared_loops(args.shared_loops, min(args.calls, 1000))
        return
    if args.loops:
        await run_loops(args.calls)
        return
    await run("memory all-match", MemoryCounterStore(), False, args.calls, args.chunks)
    await run("memory scoped", MemoryCounterStore(), True, args.calls, args.chunks)
    await run("memory rules/default", MemoryCounterStore(), None, args.calls, args.chunks)
    await run("memory resend/default", MemoryCounterStore(), None, args.calls, 0, loadgen_history)
    if args.turns:
        await run_turns("memory turns", args.calls, args.chunks, remember=True)
        await run_turns("memory turns, no memo", args.calls, args.chunks, remember=False)
    if args.redis:
        prefix = f"interlock-bench:{time.time_ns()}:"
        store = RedisCounterStore.from_url(args.redis, prefix=prefix)
        try:
            await run("redis all-match", store, False, min(args.calls, 500), args.chunks)
            await run("redis rules/default", store, None, min(args.calls, 500), args.chunks)
        finally:
            await drop_keys(store, prefix)
            await store.aclose()


if __name__ == "__main__":
    asyncio.run(main())
