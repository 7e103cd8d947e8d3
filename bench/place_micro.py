"""Request-path cost of placing a call in its run before it is forwarded (issue: every call in its
run before forwarding), on one core, side by side with the rest of the request path's graph work.

    python bench/place_micro.py            # small (~300-token) and 100k-token requests

    index ◀── linked history of 300 generated runs (bench/graph_accuracy.py)
    per request: RunResolver.resolve_run   a follow-up turn (hash chain) or a new conversation
                                           (Linker.place: shingles its input, one index lookup)
                 RunResolver.note_response after the answer: the output posted for the next agent

Reported: microseconds of CPU per call (best of 5 passes), for a worker's first call (placed by
content), a follow-up turn, and `note_response`.
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import graph_accuracy  # noqa: E402

from proxy.call import Call, Completion, Message  # noqa: E402
from proxy.graph import Identifier, Linker, MemoryLineageIndex, RunResolver  # noqa: E402


def setup() -> tuple[Linker, RunResolver]:
    calls, _ = graph_accuracy.generate(300, 7, 0)
    index, identifier = MemoryLineageIndex(), Identifier()
    linker = Linker(index, identifier=identifier, clock=lambda: calls[-1].ended_at or 0.0)
    for call in calls:
        linker.observe(call)
    return linker, RunResolver(index, identifier, placer=linker, clock=lambda: calls[-1].ended_at or 0.0)


def chat(cid: str, system: str, user: str, output: str, at: float) -> Call:
    call = Call(cid, at, "openai", "chat", "openai", "POST", "/v1/chat/completions")
    call.system, call.messages = system, [Message("system", system), Message("user", user)]
    call.completion, call.ended_at, call.outcome, call.status = Completion(output), at + 1.0, "ok", 200
    return call


def cpu_us(fn: object, calls: list[Call], passes: int = 5, before: object = None) -> float:
    best = float("inf")
    for _ in range(passes):
        if before is not None:
            before()  # type: ignore[operator]
        t0 = time.process_time()
        for call in calls:
            fn(call)  # type: ignore[operator]
        best = min(best, time.process_time() - t0)
    return best / len(calls) * 1e6


def main() -> None:
    linker, resolver = setup()
    words = graph_accuracy.Words(graph_accuracy.random.Random(3))
    at = 2e9
    for label, size in (("small (~300 tokens)", 220), ("100k tokens", 75_000)):
        plans = [words.paragraph(words.content(6), 120) for _ in range(20)]
        planners = [chat(f"p{label}{i}", "You are the planner.", "go", plan, at) for i, plan in enumerate(plans)]
        for p in planners:
            resolver.note_response(p)
        filler = words.paragraph(words.content(6), size) if size > 300 else ""
        workers = [
            chat(f"w{label}{i}", "You are the writer.", f"{filler}\n\nWrite this up:\n{plan}", "", at + 2)
            for i, plan in enumerate(plans)
        ]
        # each pass places them anew (an identical request within 2 s would reuse its answer)
        place = cpu_us(resolver.resolve_run, workers, before=linker._placed.clear)
        placed = sum(resolver.resolve_run(w) == p.id for w, p in zip(workers, planners, strict=True))
        note = cpu_us(resolver.note_response, planners)
        print(f"{label:>20}: place a worker's first call {place:8.1f} us  ({placed}/{len(workers)} placed "
              f"in the planner's run)   note_response {note:6.1f} us")


if __name__ == "__main__":
    main()
