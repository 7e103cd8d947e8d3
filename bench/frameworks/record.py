"""Record the wire traffic of real multi-agent frameworks against a scripted fake model.

    /tmp/fwvenv/bin/python bench/frameworks/record.py --out tests/graph_e2e/fixtures/frameworks \\
        [--only smolagents_toolcalling,...]

    framework (real, from PyPI) ──POST /truth/<run>/<agent>/v1/chat/completions──▶ Recorder
        every agent of every run gets its own base URL, so the recorder learns the true run and
        agent of each request from the path alone; the path is then stripped to /v1/… and the
        request answered by tests/fake_upstream.py (real wire format, JSON or SSE)
    Recorder ──▶ Brain.reply(run, agent, request)   per-scenario script (systems.py): reads the
        request (tools offered, messages so far) and answers as that agent would, with text
        drawn from a per-run seeded RNG so each run's content differs like a real model's
    ──▶ <out>/<framework>_<scenario>.jsonl.gz
        line 1   {"header": {framework, package, version, scenario, python, runs, notes}}
        then     one record per request, in arrival order:
                 {seq, run, agent, t_start, t_end, path, stream, request, reply, response}
                 reply    = what the fake model answered (text, tool_calls with their ids,
                            finish_reason): the assembled final output, streamed or not
                 response = the same as a chat.completion JSON body

Set-up (frameworks conflict, so three venvs outside the repo; versions recorded in each header):
    python3 -m venv /tmp/fwvenv  && /tmp/fwvenv/bin/pip install smolagents 'pydantic-ai-slim[openai]' \
        autogen-agentchat 'autogen-ext[openai]' orjson uvicorn httptools openai
    python3 -m venv /tmp/fwvenv2 && /tmp/fwvenv2/bin/pip install 'ag2[openai]<1' orjson uvicorn httptools
        (ag2 >= 1 is a new API without GroupChat; 0.14 is the `autogen` GroupChat API)
    python3 -m venv /tmp/fwvenv3 && /tmp/fwvenv3/bin/pip install crewai orjson uvicorn httptools
and run this script with each venv's python and --only the scenarios it has (systems.py skips
frameworks that are not importable).

Runs are recorded one after another; the replay (tests/graph_e2e/frameworks.py) interleaves them.
The frameworks are not needed to replay: only this script imports them.
"""

from __future__ import annotations

import argparse
import contextvars
import gzip
import itertools
import os
import pathlib
import platform
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import orjson  # noqa: E402

from tests.fake_upstream import Ctx, FakeUpstream, OpenAIChat, Reply  # noqa: E402

Json = dict[str, Any]
TRUTH = re.compile(r"^/truth/(?P<run>[^/]+)/(?P<agent>[^/]+)(?P<rest>/.*)$")
_ENTRY: contextvars.ContextVar[Json | None] = contextvars.ContextVar("truth_entry", default=None)


@dataclass
class Run:
    """One run of a scenario: its id, task, and the seeded RNG the fake model draws from."""

    id: str
    task: str
    rng: Any
    counts: dict[str, int] = field(default_factory=dict)  # agent → requests answered so far
    state: Json = field(default_factory=dict)  # whatever a brain wants to remember per run

    def turn(self, agent: str) -> int:
        """How many requests this agent made before this one, in this run."""
        n = self.counts.get(agent, 0)
        self.counts[agent] = n + 1
        return n


Brain = Callable[[Run, str, Json], Reply]


class Recorder(FakeUpstream):
    """The fake upstream, learning each request's true run and agent from its path."""

    def __init__(self) -> None:
        super().__init__(self._respond)
        self.records: list[Json] = []
        self.runs: dict[str, Run] = {}
        self.brain: Brain | None = None
        self.t0 = time.monotonic()
        self._ids = itertools.count(1)
        self._rec_lock = threading.Lock()

    def base(self, run: str, agent: str) -> str:
        """The OpenAI base URL one agent of one run is pointed at."""
        return f"{self.url}/truth/{run}/{agent}/v1"

    async def app(self, scope: Json, receive: Any, send: Any) -> None:
        m = TRUTH.match(scope.get("path", "")) if scope.get("type") == "http" else None
        if m is None:
            return await super().app(scope, receive, send)
        entry: Json = {"run": m["run"], "agent": m["agent"], "t_start": self.clock()}
        token = _ENTRY.set(entry)
        try:
            rest = m["rest"]
            await super().app({**scope, "path": rest, "raw_path": rest.encode()}, receive, send)
        finally:
            entry["t_end"] = self.clock()
            _ENTRY.reset(token)

    def clock(self) -> float:
        return round(time.monotonic() - self.t0, 6)

    def _respond(self, req: Json, path: str) -> Reply:
        entry = _ENTRY.get()
        if entry is None or self.brain is None:
            return Reply(status=500, error="recorder: request outside a /truth/ base URL")
        run = self.runs[entry["run"]]
        try:
            reply = self.brain(run, entry["agent"], req)
        except Exception as exc:  # a script bug: make the framework fail loudly, keep the trace
            print(f"  brain failed for {entry['run']}/{entry['agent']}: {exc!r}", file=sys.stderr)
            reply = Reply(status=500, error=f"recorder brain failed: {exc!r}")
        body = OpenAIChat.body(Ctx.build(req, reply, self._ids))
        entry.update(path=path, stream=bool(req.get("stream")), request=req, reply=reply_json(reply),
                     response=body)
        with self._rec_lock:
            entry["seq"] = len(self.records)
            self.records.append(entry)
        return reply


def reply_json(reply: Reply) -> Json:
    return {
        "status": reply.status,
        "text": reply.text,
        "tool_calls": [{"id": t.id, "name": t.name, "arguments": t.arguments_json} for t in reply.tool_calls],
        "finish_reason": reply.finish_reason,
    }


@dataclass(frozen=True)
class Scenario:
    """One fixture: a framework system run once per task."""

    framework: str  # fixture prefix (smolagents, pydantic_ai, autogen, ag2, crewai)
    name: str
    package: str  # the PyPI distribution whose version goes into the header
    tasks: tuple[str, ...]
    brain: Brain
    drive: Callable[[Recorder, Run], None]  # runs the framework once for this run
    notes: str = ""

    @property
    def key(self) -> str:
        return f"{self.framework}_{self.name}"


def record(scenario: Scenario, out: pathlib.Path, seed: int) -> pathlib.Path:
    import importlib.metadata
    import random

    with Recorder() as rec:
        rec.brain = scenario.brain
        runs = []
        for i, task in enumerate(scenario.tasks):
            run = Run(f"r{i + 1}", task, random.Random(f"{seed}:{scenario.key}:{i}"))
            rec.runs[run.id] = run
            runs.append(run)
            t = time.monotonic()
            scenario.drive(rec, run)
            got = sum(1 for r in rec.records if r["run"] == run.id)
            print(f"  {scenario.key} {run.id}: {got} requests, {time.monotonic() - t:.1f}s", file=sys.stderr)
        records = sorted(rec.records, key=lambda r: r["seq"])
    failed = [r for r in records if r["reply"]["status"] != 200]
    if failed:
        raise RuntimeError(f"{scenario.key}: {len(failed)} requests were not scripted")
    header = {
        "framework": scenario.framework,
        "scenario": scenario.name,
        "package": scenario.package,
        "version": importlib.metadata.version(scenario.package),
        "python": platform.python_version(),
        "seed": seed,
        "runs": [{"id": r.id, "task": r.task} for r in runs],
        "agents": sorted({r["agent"] for r in records}),
        "requests": len(records),
        "notes": scenario.notes,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{scenario.key}.jsonl.gz"
    lines = [orjson.dumps({"header": header})] + [orjson.dumps(r) for r in records]
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n", compresslevel=9, mtime=0))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "tests/graph_e2e/fixtures/frameworks")
    parser.add_argument("--only", default="", help="comma-separated scenario keys (default: all importable)")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args(argv)
    for var, value in {"OPENAI_API_KEY": "sk-fake", "OTEL_SDK_DISABLED": "true", "CREWAI_DISABLE_TELEMETRY": "true",
                       "CREWAI_TRACING_ENABLED": "false", "ANONYMIZED_TELEMETRY": "False",
                       "AUTOGEN_DISABLE_RUNTIME_TRACING": "true", "HF_HUB_OFFLINE": "1"}.items():
        os.environ.setdefault(var, value)
    import systems

    only = {s for s in args.only.split(",") if s}
    for scenario in systems.available():
        if only and scenario.key not in only:
            continue
        print(f"recording {scenario.key}", file=sys.stderr)
        path = record(scenario, args.out, args.seed)
        print(f"  → {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
              f"({path.stat().st_size // 1024} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
