"""The graph Interlock recovers from real multi-agent frameworks' traffic, scored against the truth.

    python bench/frameworks_accuracy.py                       # in-process: Linker.observe (fast)
    python bench/frameworks_accuracy.py --live                # through a live proxy, openai SDK
    python bench/frameworks_accuracy.py --together            # every fixture in one linker at once
    python bench/frameworks_accuracy.py --only smolagents_code --detail --calls --json out.json

Fixtures: tests/graph_e2e/fixtures/frameworks/*.jsonl.gz, recorded once from the real frameworks
by bench/frameworks/record.py (which says how; the truth is each agent's own base URL).
Scores (tests/graph_e2e/frameworks.py): agents ARI and runs ARI over calls, flow precision /
recall / F1 over (run, source agent, target agent) handoff/return pairs, thread F1 over the
call pairs (continuation or tool edges) where an agent's request extends its own earlier one.  In-process, a
fixture's runs are interleaved by shifting each run's clock by 0.37 s; live, they run at once.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from tests.graph_e2e.frameworks import (  # noqa: E402
    FIXTURES,
    Fixture,
    Inferred,
    Score,
    fixtures,
    inferred_from_api,
    link_in_process,
    link_together,
    replay,
    score,
)


def live(fixture: Fixture, stream: bool | None) -> Inferred:
    from tests.fake_upstream import FakeUpstream
    from tests.graph_e2e.graphs import Api
    from tests.proxyserver import ProxyServer

    with tempfile.TemporaryDirectory() as tmp, FakeUpstream() as model:
        path = pathlib.Path(tmp)
        with ProxyServer(path, model.url, content_policy="full", encodings_dir=path / "none") as px:
            replayed = replay(fixture, px.url, model, stream=stream)
            if replayed.errors or replayed.misses:
                raise RuntimeError(f"{fixture.name}: replay failed: {replayed.errors} {replayed.misses[:2]}")
            with Api(px) as api:
                return inferred_from_api(api, replayed)


def table(scores: list[Score], detail: bool) -> str:
    head = (f"{'fixture':<28}{'calls':>6}{'runs t/i':>10}{'agents ARI':>12}{'runs ARI':>10}{'flow P':>8}{'R':>7}"
            f"{'F1':>7}{'thread F1':>11}")
    lines = [head, "-" * len(head)]
    for s in scores:
        lines.append(f"{s.fixture:<28}{s.calls:>6}{f'{s.runs[0]}/{s.runs[1]}':>10}{s.agents_ari:>12.3f}"
                     f"{s.runs_ari:>10.3f}{s.flow[0]:>8.2f}{s.flow[1]:>7.2f}{s.flow[2]:>7.2f}{s.thread[2]:>11.2f}")
        names = "; ".join(f"{a} → {', '.join(f'{n} ×{c}' for n, c in got.items())}" for a, got in s.true_agents.items())
        lines.append(f"    agents: {names}")
        if detail:
            lines.append(f"    missed:   {sorted(s.missed)}")
            lines.append(f"    spurious: {sorted(s.spurious)}")
    n = len(scores) or 1
    lines.append("-" * len(head))
    lines.append(f"{'mean':<28}{sum(s.calls for s in scores):>6}{'':>10}{sum(s.agents_ari for s in scores) / n:>12.3f}"
                 f"{sum(s.runs_ari for s in scores) / n:>10.3f}{sum(s.flow[0] for s in scores) / n:>8.2f}"
                 f"{sum(s.flow[1] for s in scores) / n:>7.2f}{sum(s.flow[2] for s in scores) / n:>7.2f}"
                 f"{sum(s.thread[2] for s in scores) / n:>11.2f}")
    return "\n".join(lines)


def cross_fixture_runs(shared: dict[str, Inferred]) -> int:
    owners: dict[str, set[str]] = {}
    for name, inferred in shared.items():
        for run in inferred.run.values():
            owners.setdefault(run, set()).add(name)
    return sum(1 for names in owners.values() if len(names) > 1)


def calls_view(fixture: Fixture, inferred: Inferred) -> str:
    """One line per call: true run/agent, inferred agent and run, inferred and true edges in."""
    found: dict[str, list[str]] = {}
    for source, target, kind in sorted(inferred.edges):
        found.setdefault(target, []).append(f"{kind}<{source}")
    true: dict[str, list[str]] = {}
    for source, target in sorted(fixture.truth.calls):
        true.setdefault(target, []).append(source)
    for source, target in sorted(fixture.truth.threads):
        true.setdefault(target, []).append(f"thread<{source}")
    runs = {run: f"R{i}" for i, run in enumerate(dict.fromkeys(inferred.run[r.id] for r in fixture.records
                                                                 if r.id in inferred.run))}
    lines = [f"{fixture.name}: call  true agent → inferred agent  inferred run  | inferred edges in | true flow in"]
    for r in fixture.records:
        got = inferred.agent.get(r.id, "-")
        lines.append(f"  {r.id} {r.agent:>13} → {got:<22} {runs.get(inferred.run.get(r.id, ''), '-'):>4}"
                     f"  | {' '.join(found.get(r.id, []))} | {' '.join(true.get(r.id, []))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=pathlib.Path, default=FIXTURES)
    parser.add_argument("--only", default="", help="comma-separated fixture names")
    parser.add_argument("--live", action="store_true", help="replay through a live proxy instead of in-process")
    parser.add_argument("--stream", choices=("recorded", "on", "off"), default="recorded")
    parser.add_argument("--detail", action="store_true", help="print missed and spurious flow pairs")
    parser.add_argument("--together", action="store_true",
                        help="all fixtures through one in-process linker at once (cross-system merges show)")
    parser.add_argument("--calls", action="store_true", help="print every call: true vs inferred, edges in")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    stream = {"recorded": None, "on": True, "off": False}[args.stream]
    scores = []
    chosen = [f for f in fixtures(args.fixtures) if not only or f.name in only]
    shared = link_together(chosen) if args.together else {}
    for fixture in chosen:
        if args.together:
            inferred = shared[fixture.name]
        else:
            inferred = live(fixture, stream) if args.live else link_in_process(fixture)
        scores.append(score(fixture, inferred))
        if args.calls:
            print(calls_view(fixture, inferred))
    mode = "live proxy" if args.live else "in-process Linker.observe"
    print(f"mode: {mode}{', all fixtures in one linker' if args.together else ''}")
    if args.together:
        print(f"runs shared by two fixtures: {cross_fixture_runs(shared)}")
    print(table(scores, args.detail))
    if args.json:
        report: dict[str, Any] = {"mode": "live" if args.live else "in-process", "fixtures": [s.row() for s in scores]}
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
