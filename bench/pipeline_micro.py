"""Background pipeline micro-benchmark: CPU per call of `Pipeline._process` with the graph linker.

    .venv/bin/python bench/pipeline_micro.py                       # all cases, 300 calls, 5 repeats
    .venv/bin/python bench/pipeline_micro.py --case big --repeat 9
    .venv/bin/python bench/pipeline_micro.py --case big --profile  # cProfile of one pass, top 25
    .venv/bin/python bench/pipeline_micro.py --redact              # redact_text alone, per body

Cases (OpenAI chat bodies, no agent or run headers, one simulated proxy):

    big      the shared loadgen's `big_c4` body: a system message and a ~100k-token user message
             (`make_text(100000)`, 484 KB of JSON), the same every time, 4 clients in flight
    small    the loadgen's default body: a system message and "Say hello.", 4 clients in flight
    growing  one agent resends its history plus one new ~2k-token turn (a ~1.8k-token user
             message, then a ~200-token answer), 50 turns per conversation, conversations in turn

Each call is built as the relay builds it (`orjson.loads` of the body, `parse_request`, token
counting, `RunResolver.resolve_agent`/`resolve_run`, then the fake upstream's answer through
`parse_body` and `note_response`) and handed to `Pipeline._process` in completion order, with the
runtime's graph objects (`Runtime._graph`: one MemoryLineageIndex shared by the Linker and the
RunResolver).  The writer is a stub that drops records.  Only CPU is measured
(`time.thread_time`): per call, `_process` (linking, rows with redaction, aggregates), the
linker's share of it, and the request-path graph work (resolver calls).  Figures are medians
over calls, then medians over `--repeat` passes (each pass a fresh runtime).

`--redact` times `redact_text` alone on what `call_record` hands it (the first 256 kB + 512 of
a body): the big case's body, this repository's Python source and an agent's JSON history with
tool calls and code in tool results (ordinary text with many ':', '=', '_' and '-'), and the
small case's body.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import pathlib
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "bench"))

import orjson  # noqa: E402
from loadgen import make_text  # noqa: E402

from proxy.call import Call, new_id  # noqa: E402
from proxy.graph.identity import AgentDirectory, Identifier  # noqa: E402
from proxy.graph.index import MemoryLineageIndex  # noqa: E402
from proxy.graph.linker import Linker  # noqa: E402
from proxy.graph.model import LinkResult  # noqa: E402
from proxy.graph.runs import RunResolver  # noqa: E402
from proxy.pipeline import Pipeline  # noqa: E402
from proxy.providers.openai import OpenAIChat  # noqa: E402
from proxy.redact import redact_text  # noqa: E402
from proxy.settings import Settings  # noqa: E402
from proxy.tokens import TokenCounter, load_counter  # noqa: E402

SYSTEM = "You are a helpful assistant."
LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
MAX_BYTES = Settings.model_fields["content_max_bytes"].default
IDLE_S = Settings.model_fields["run_idle_s"].default
T0 = 1_700_000_000.0


@dataclass(slots=True)
class Exchange:
    """One request body and the answer the fake upstream gives it."""

    body: bytes
    answer: str
    start: float
    end: float


@dataclass(slots=True)
class Timings:
    process: list[float] = field(default_factory=list)
    link: list[float] = field(default_factory=list)
    request: list[float] = field(default_factory=list)


def chat_body(messages: list[dict[str, str]]) -> bytes:
    return orjson.dumps({"model": "fake", "messages": messages, "max_tokens": 16, "temperature": 0})


def response_body(answer: str) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
    usage = {"prompt_tokens": 100, "completion_tokens": 16, "total_tokens": 116}
    return orjson.dumps({"id": "chatcmpl-fake000000000000000000000001", "model": "fake", "choices": [choice],
                         "usage": usage})


def concurrent(body: bytes, calls: int, clients: int, dt: float = 0.05) -> list[Exchange]:
    """The same body from `clients` closed-loop clients, answered with the fake upstream's 16
    words (max_tokens=16): call i ends while the next ones run."""
    return [Exchange(body, LOREM, T0 + i * dt, T0 + (i + clients - 0.5) * dt) for i in range(calls)]


def big(calls: int) -> list[Exchange]:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": make_text(100_000)}]
    return concurrent(chat_body(msgs), calls, 4)


def small(calls: int) -> list[Exchange]:
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Say hello."}]
    return concurrent(chat_body(msgs), calls, 4)


def growing(calls: int, turns: int = 50) -> list[Exchange]:
    out: list[Exchange] = []
    t = T0
    for conv in range(0, calls, turns):
        msgs = [{"role": "system", "content": SYSTEM}]
        for turn in range(min(turns, calls - conv)):
            msgs.append({"role": "user", "content": make_text(1800, seed=1000 * conv + 2 * turn + 2)})
            answer = make_text(200, seed=1000 * conv + 2 * turn + 3)
            out.append(Exchange(chat_body(msgs), answer, t, t + 1.0))
            msgs.append({"role": "assistant", "content": answer})
            t += 2.0
    return out


CASES: dict[str, Callable[[int], list[Exchange]]] = {"big": big, "small": small, "growing": growing}


class Sink:
    """The writer's `submit`, dropping records."""

    def __init__(self) -> None:
        self.records = 0

    def submit(self, record: Any) -> None:
        self.records += 1


class TimedLinker:
    """The linker, its `observe` timed (the pipeline calls it inside `_process`)."""

    def __init__(self, linker: Linker, times: list[float]) -> None:
        self.linker, self.times = linker, times

    def observe(self, call: Call) -> LinkResult:
        t = time.thread_time()
        link = self.linker.observe(call)
        self.times.append(time.thread_time() - t)
        return link

    def close_idle(self) -> list[str]:
        return self.linker.close_idle()


class Proxy:
    """The runtime's graph objects, a token counter and a pipeline, driven like the relay drives them."""

    def __init__(self, tokens: TokenCounter, timings: Timings) -> None:
        self.now = T0
        index = MemoryLineageIndex()
        identifier = Identifier(AgentDirectory(claims=index))
        linker = Linker(index, run_idle_s=IDLE_S, identifier=identifier, clock=lambda: self.now)
        self.resolver = RunResolver(index, identifier, run_idle_s=IDLE_S, clock=lambda: self.now)
        self.pipeline = Pipeline(Sink(), policy="redacted", max_bytes=MAX_BYTES,
                                 linker=TimedLinker(linker, timings.link))
        self.tokens, self.timings, self.provider = tokens, timings, OpenAIChat()

    def request(self, ex: Exchange) -> Call:
        self.now = ex.start
        call = Call(new_id(), ex.start, "openai", "chat", "openai", "POST", "/v1/chat/completions")
        call.request_bytes = ex.body
        call.request = orjson.loads(ex.body)
        self.provider.parse_request(call, call.request)
        call.input_tokens_counted = self.tokens.count_call(call)
        t = time.thread_time()
        call.agent, call.agent_source = self.resolver.resolve_agent(call), "inferred"
        call.run_id = self.resolver.resolve_run(call)
        self.timings.request.append(time.thread_time() - t)
        return call

    def response(self, ex: Exchange, call: Call) -> None:
        self.now = ex.end
        call.response_bytes = response_body(ex.answer)
        call.status, call.outcome, call.ended_at = 200, "ok", ex.end
        self.provider.parse_body(call, call.response_bytes)
        t = time.thread_time()
        self.resolver.note_response(call)
        self.timings.request[-1] += time.thread_time() - t  # its request's entry (calls overlap: near enough)
        t = time.thread_time()
        self.pipeline._process(call)
        self.timings.process.append(time.thread_time() - t)


def events(exchanges: list[Exchange]) -> Iterator[tuple[int, Exchange]]:
    """(0, exchange) when a request arrives, (1, exchange) when its answer is complete, in time order."""
    heap = [(ex.start, 0, i) for i, ex in enumerate(exchanges)] + [(ex.end, 1, i) for i, ex in enumerate(exchanges)]
    heapq.heapify(heap)
    while heap:
        _, kind, i = heapq.heappop(heap)
        yield kind, exchanges[i]


def one_pass(exchanges: list[Exchange], tokens: TokenCounter) -> Timings:
    timings = Timings()
    proxy = Proxy(tokens, timings)
    open_calls: dict[int, Call] = {}
    for kind, ex in events(exchanges):
        if kind == 0:
            open_calls[id(ex)] = proxy.request(ex)
        else:
            proxy.response(ex, open_calls.pop(id(ex)))
    return timings


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000.0


def run_case(name: str, calls: int, repeat: int, tokens: TokenCounter) -> dict[str, float]:
    exchanges = CASES[name](calls)
    gc.collect()
    passes = [one_pass(exchanges, tokens) for _ in range(repeat)]
    return {
        "process_ms": statistics.median(ms(p.process) for p in passes),
        "process_mean_ms": statistics.median(statistics.mean(p.process) * 1000 for p in passes),
        "link_ms": statistics.median(ms(p.link) for p in passes),
        "request_ms": statistics.median(ms(p.request) for p in passes),
    }


def redaction_bodies() -> dict[str, str]:
    cap = MAX_BYTES + 512
    source = "".join(p.read_text() for p in sorted((ROOT / "proxy").rglob("*.py")))[:cap]
    history: list[dict[str, Any]] = []
    for i in range(400):
        history.append({"role": "user", "content": make_text(200, seed=i)})
        args = orjson.dumps({"path": f"proxy/file_{i}.py", "max_lines": 200}).decode()
        call = {"id": f"call_{i:08d}", "type": "function", "function": {"name": "read_file", "arguments": args}}
        history.append({"role": "assistant", "content": None, "tool_calls": [call]})
        history.append({"role": "tool", "tool_call_id": f"call_{i:08d}", "content": source[i * 600 : i * 600 + 2000]})
    return {
        "big body": big(1)[0].body.decode()[:cap],
        "python source": source,
        "agent history": orjson.dumps({"model": "fake", "messages": history}).decode()[:cap],
        "small body": small(1)[0].body.decode(),
    }


def redaction(repeat: int) -> None:
    for name, text in redaction_bodies().items():
        runs = []
        for _ in range(repeat):
            t = time.thread_time()
            for _ in range(20):
                redact_text(text)
            runs.append((time.thread_time() - t) / 20)
        print(f"redact {name:14} {len(text) / 1024:6.1f} KB  {ms(runs):7.3f} ms  [CPU, median of {repeat} x 20]")


def profile(name: str, calls: int, tokens: TokenCounter) -> None:
    exchanges = CASES[name](calls)
    prof = cProfile.Profile()
    prof.runcall(one_pass, exchanges, tokens)
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--case", choices=[*CASES, "all"], default="all")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile one pass instead of timing")
    ap.add_argument("--redact", action="store_true", help="time redact_text alone")
    args = ap.parse_args(argv)
    if args.redact:
        redaction(args.repeat)
        return 0
    tokens = load_counter(None, lambda msg: print(msg, file=sys.stderr))
    names = list(CASES) if args.case == "all" else [args.case]
    for name in names:
        if args.profile:
            profile(name, args.calls, tokens)
            continue
        r = run_case(name, args.calls, args.repeat, tokens)
        print(f"{name:8} _process {r['process_ms']:7.3f} ms/call (mean {r['process_mean_ms']:7.3f})  "
              f"linker {r['link_ms']:7.3f}  request-path resolver {r['request_ms']:7.3f}  "
              f"[CPU, median of {args.repeat} x {args.calls} calls]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
