"""Recorded real-framework traffic (bench/frameworks/record.py): truth, replay, and graph scores.

    fixtures()                        every tests/graph_e2e/fixtures/frameworks/*.jsonl.gz
    Fixture.truth                     each request's true agent and run (from the per-agent base
                                      URL it was recorded through) and the true agent-pair flow
                                      edges, derived from content (see `flow_truth`)
    link_in_process(fixture)          Calls built from the records ──▶ Linker.observe, runs
                                      interleaved (each run's clock shifted), in ended_at order
    replay(fixture, px.url, model)    the same requests through a live proxy with the `openai`
                                      SDK at plain /v1 (no X-Interlock-* header, no /agents/
                                      path): one thread per run, a run's requests in recorded
                                      order, runs concurrent; the fake model answers each
                                      request with its recorded response
    inferred_from_api(api, replayed)  the proxy's graph (/api/runs/{id}/graph) per record
    score(fixture, inferred)          agents ARI, runs ARI, flow precision / recall / F1

True flow edges (flow_truth): a request's *inputs* are the texts of its non-assistant messages
(system, user, tool; `name`d transcript lines included); a record's *outputs* are its reply text,
the string values of its tool-call arguments, and the string literals of any code it wrote.
Outputs are cut into passages (sentences and lines, bullets stripped, >= 30 characters).  A
passage that two records of a run output without having it in their inputs is boilerplate
("Here is what I found.") and ignored.  For every other passage in the inputs of record N (agent
B), its sender is the latest record M of the run that ended before N started and has it in its
outputs: the original producer, or an agent that relayed it (a manager quoting a worker's figure
in the next worker's task).  When M's agent A != B, the pair (run, A, B) is a true flow edge.
A speaker selector's choice (a reply that is nothing but another agent's name) is too short to
be a passage: it gives a flow edge from the selector to the chosen agent's next request.

True thread steps (thread_truth): record N continues record M when both are the same agent's,
in one run, and M is the latest earlier one whose messages are a proper prefix of N's.  Scored
on the linker's continuation/tool edges: recall over these steps; precision also accepts a
same-agent edge whose target holds the source's output (the passage rule with A == B).
"""

from __future__ import annotations

import ast
import gzip
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import openai
import orjson

from proxy.call import Call
from proxy.graph import Linker, LinkResult, MemoryLineageIndex
from proxy.providers.openai import OpenAIChat
from tests.fake_upstream import FakeUpstream, Reply, ToolCall
from tests.graph.metrics import ari, prf
from tests.graph_e2e.graphs import Api
from tests.graph_e2e.replay import request_key

Json = dict[str, Any]
FIXTURES = Path(__file__).parent / "fixtures" / "frameworks"
FLOW_KINDS = ("handoff", "return")
THREAD_KINDS = ("continuation", "tool")
RUN_SPACING = 0.37  # seconds between the starts of replayed runs (in-process clock)
MIN_PASSAGE = 30


# ----------------------------------------------------------------------------- fixtures
@dataclass(frozen=True)
class Record:
    """One recorded request: who really sent it, what it said, what the model answered."""

    seq: int
    run: str
    agent: str
    t_start: float
    t_end: float
    path: str
    stream: bool
    request: Json
    reply: Json
    response: Json

    @property
    def id(self) -> str:
        return f"{self.run}-{self.seq:03d}"

    @property
    def key(self) -> str:
        return request_key("chat", self.request)

    def as_reply(self, stream: bool | None = None) -> Reply:
        calls = tuple(ToolCall(t["name"], t["arguments"], id=t["id"]) for t in self.reply["tool_calls"])
        return Reply(text=self.reply["text"], tool_calls=calls, finish_reason=self.reply["finish_reason"],
                     stream=stream)


@dataclass
class Fixture:
    name: str
    header: Json
    records: list[Record]

    @classmethod
    def load(cls, path: Path) -> Fixture:
        lines = gzip.decompress(path.read_bytes()).splitlines() if path.suffix == ".gz" else path.read_bytes().splitlines()
        header = orjson.loads(lines[0])["header"]
        records = [Record(**{k: v for k, v in orjson.loads(line).items() if k in Record.__dataclass_fields__})
                   for line in lines[1:] if line.strip()]
        return cls(path.name.split(".")[0], header, sorted(records, key=lambda r: r.seq))

    @property
    def runs(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {}
        for r in self.records:
            out.setdefault(r.run, []).append(r)
        return out

    @cached_property
    def truth(self) -> Truth:
        return Truth({r.id: r.agent for r in self.records}, {r.id: r.run for r in self.records},
                     *flow_truth(self.records), thread_truth(self.records))

    def __repr__(self) -> str:
        return f"Fixture({self.name}: {len(self.records)} requests, {len(self.runs)} runs)"


def fixtures(folder: Path = FIXTURES) -> list[Fixture]:
    return [Fixture.load(p) for p in sorted(folder.glob("*.jsonl*"))]


# ----------------------------------------------------------------------------- truth
@dataclass(frozen=True)
class Truth:
    agent: dict[str, str]  # record id → true agent
    run: dict[str, str]  # record id → true run
    calls: dict[tuple[str, str], int]  # (producer record, consumer record) → passages carried
    same_agent: set[tuple[str, str]]  # (sender, consumer) of one agent: its own output fed back as input
    threads: set[tuple[str, str]]  # (record, the record of the same agent that continues its conversation)

    @property
    def pairs(self) -> set[tuple[str, str, str]]:
        """(run, source agent, target agent): the true agent-pair flow edges."""
        return {(self.run[b], self.agent[a], self.agent[b]) for a, b in self.calls}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return ""


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


_LITERAL = re.compile(r"""('(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")
_SPLIT = re.compile(r"(?<=[.!?:])\s+|\n+")
_BULLET = re.compile(r"^[\s\-*•>#\d.)]+")


def normalize(text: str) -> str:
    return " ".join(text.split()).lower()


def passages(text: str) -> set[str]:
    out = set()
    for part in _SPLIT.split(text):
        p = normalize(_BULLET.sub("", part))
        if len(p) >= MIN_PASSAGE:
            out.add(p)
    return out


def outputs(record: Record) -> str:
    texts = [record.reply.get("text") or ""]
    for t in record.reply["tool_calls"]:
        try:
            texts.extend(_strings(orjson.loads(t["arguments"])))
        except orjson.JSONDecodeError:
            texts.append(t["arguments"])
    for literal in _LITERAL.findall(texts[0]):  # code the agent wrote: its string literals
        try:
            texts.append(str(ast.literal_eval(literal)))
        except (ValueError, SyntaxError):
            pass
    return "\n".join(texts)


def inputs(record: Record) -> str:
    msgs = record.request.get("messages") or []
    return normalize("\n".join(_text(m.get("content")) for m in msgs if m.get("role") != "assistant"))


def flow_truth(records: list[Record]) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]]]:
    """(sender, consumer) record pairs of different agents in one run (see the module doc) →
    passages carried; and the same pairs where sender and consumer are one agent."""
    carried: Counter[tuple[str, str]] = Counter()
    same_agent: set[tuple[str, str]] = set()
    by_run: dict[str, list[Record]] = {}
    for r in records:
        by_run.setdefault(r.run, []).append(r)
    for run in by_run.values():
        seen = {r.id: inputs(r) for r in run}
        said = {r.id: passages(outputs(r)) for r in run}
        origins: Counter[str] = Counter(p for r in run for p in said[r.id] if p not in seen[r.id])
        for n in run:
            for p in (p for p, k in origins.items() if k == 1 and p in seen[n.id]):
                senders = [m for m in run if m.t_end <= n.t_start and p in said[m.id]]
                if senders and senders[-1].agent != n.agent:
                    carried[(senders[-1].id, n.id)] += 1
                elif senders:
                    same_agent.add((senders[-1].id, n.id))
        for m, n in selections(run):
            carried[(m.id, n.id)] += 1
    return dict(carried), same_agent


def selections(run: list[Record]) -> Iterable[tuple[Record, Record]]:
    """(selector call, the chosen speaker's next call): a reply that is nothing but the name of
    another agent of the run picks the next speaker."""
    agents = {r.agent for r in run}
    for m in run:
        name = (m.reply.get("text") or "").strip()
        if name in agents and name != m.agent and not m.reply["tool_calls"]:
            n = next((r for r in run if r.agent == name and r.t_start >= m.t_end), None)
            if n is not None:
                yield m, n


def thread_truth(records: list[Record]) -> set[tuple[str, str]]:
    """(M, N): N is the same agent's next request in M's conversation, i.e. M is the latest
    earlier record of that agent in the run whose messages are a proper prefix of N's (however
    the framework serialises the turns in between: tool messages or "Observation:" text)."""
    out = set()
    for n in records:
        msgs = n.request.get("messages") or []
        for m in reversed([m for m in records if m.run == n.run and m.agent == n.agent and m.t_end <= n.t_start]):
            head = m.request.get("messages") or []
            if len(head) < len(msgs) and msgs[: len(head)] == head:
                out.add((m.id, n.id))
                break
    return out


# ----------------------------------------------------------------------------- inferred
@dataclass
class Inferred:
    """What the linker (or the proxy's API) said about each record."""

    agent: dict[str, str] = field(default_factory=dict)  # record id → inferred agent name
    run: dict[str, str] = field(default_factory=dict)  # record id → inferred run
    edges: set[tuple[str, str, str]] = field(default_factory=set)  # (source record, target record, kind)


def call_of(record: Record, started_at: float, ended_at: float) -> Call:
    """The Call the relay would record for this request (call id = record id)."""
    provider = OpenAIChat()
    call = Call(record.id, started_at, provider.name, "chat", provider.name, "POST", record.path)
    provider.parse_request(call, record.request)
    provider.parse_body(call, orjson.dumps(record.response))
    call.status, call.outcome, call.ended_at = 200, "ok", ended_at
    return call


def interleaved_calls(fixture: Fixture, spacing: float = RUN_SPACING, offset: float = 0.0,
                      prefix: str = "") -> list[Call]:
    """Every run's calls with its clock shifted so the runs overlap as if live at once
    (`prefix` before each call id when several fixtures share one linker)."""
    calls = []
    for i, run in enumerate(fixture.runs.values()):
        t0 = run[0].t_start
        start = 1_700_000_000 + offset + i * spacing - t0
        for r in run:
            call = call_of(r, start + r.t_start, start + r.t_end)
            call.id = prefix + call.id
            calls.append(call)
    return sorted(calls, key=lambda c: (c.ended_at or 0.0, c.id))


def link_in_process(fixture: Fixture, linker: Linker | None = None) -> Inferred:
    linker = linker or Linker(MemoryLineageIndex(), run_idle_s=900.0)
    results = {c.id: linker.observe(c) for c in interleaved_calls(fixture)}
    return inferred_from_results(results)


def link_together(fxs: list[Fixture], linker: Linker | None = None) -> dict[str, Inferred]:
    """All fixtures through one linker at once, as one proxy serving every system would see
    them.  Call ids are `<fixture>/<record id>`; per fixture, an edge from another fixture's call
    keeps that foreign id (a spurious pair in `score`)."""
    linker = linker or Linker(MemoryLineageIndex(), run_idle_s=900.0)
    calls = [c for k, f in enumerate(fxs) for c in interleaved_calls(f, offset=k * 0.05, prefix=f"{f.name}/")]
    calls.sort(key=lambda c: (c.ended_at or 0.0, c.id))
    everything = inferred_from_results({c.id: linker.observe(c) for c in calls})
    out = {}
    for f in fxs:
        mine = f"{f.name}/"

        def local(cid: str, mine: str = mine) -> str:
            return cid.removeprefix(mine)

        part = Inferred()
        part.agent = {local(k): v for k, v in everything.agent.items() if k.startswith(mine)}
        part.run = {local(k): v for k, v in everything.run.items() if k.startswith(mine)}
        part.edges = {(local(a), local(b), kind) for a, b, kind in everything.edges if b.startswith(mine)}
        out[f.name] = part
    return out


def inferred_from_results(results: dict[str, LinkResult]) -> Inferred:
    alias = {m: r.run_id for r in results.values() if r.run_id for m in r.merged_runs}

    def root(run: str) -> str:
        while run in alias:
            run = alias[run]
        return run

    out = Inferred()
    for cid, r in results.items():
        out.agent[cid] = r.agent
        out.run[cid] = root(str(r.run_id))
        out.edges |= {(e.source, e.target, e.kind) for e in r.edges}
    for r in results.values():  # a later call named an earlier one's speaker (what the store applies)
        out.agent.update((cid, name) for cid, name in r.renamed.items() if cid in out.agent)
    return out


# ----------------------------------------------------------------------------- live replay
@dataclass
class Replayed:
    """A replay through the proxy: which record each upstream request answered, and failures."""

    fixture: Fixture
    stream: bool | None
    sent: dict[str, Json] = field(default_factory=dict)  # record id → JSON body the client sent
    wire: list[bytes] = field(default_factory=list)  # the bytes the SDK put on the wire, per request
    window: dict[str, tuple[float, float]] = field(default_factory=dict)  # record id → epoch sent, answered
    answered: list[tuple[str, bytes]] = field(default_factory=list)  # (record id, upstream raw body)
    misses: list[str] = field(default_factory=list)
    errors: dict[str, BaseException] = field(default_factory=dict)


class _Answers:
    """The fake model's side: each request answered with the recorded response of the record
    its replay thread is sending.  Requests with the same content (two runs that start with the
    same task) are never in flight at once, so the content identifies the record."""

    def __init__(self, replayed: Replayed) -> None:
        self.replayed = replayed
        self.expect: dict[str, Record] = {}
        self.lock = threading.Lock()
        self.key_locks: dict[str, threading.Lock] = {}

    def key_lock(self, key: str) -> threading.Lock:
        with self.lock:
            return self.key_locks.setdefault(key, threading.Lock())

    def responder(self, req: Json, path: str) -> Reply:
        with self.lock:
            record = self.expect.get(request_key("chat", req))
        if record is None:
            self.replayed.misses.append(orjson.dumps(req)[:300].decode(errors="replace"))
            return Reply(status=500, error="frameworks replay: no recorded request has this content")
        return record.as_reply()


def body_for(record: Record, stream: bool | None) -> Json:
    body = dict(record.request)
    if stream is None:
        return body
    body["stream"] = stream
    if not stream:
        body.pop("stream_options", None)
    return body


def replay(fixture: Fixture, proxy_url: str, model: FakeUpstream, *, stream: bool | None = None,
           timeout: float = 20.0) -> Replayed:
    """Send every record's request through the proxy (see the module doc); raises on failures."""
    replayed = Replayed(fixture, stream)
    answers = _Answers(replayed)
    model.responder = answers.responder
    upstream_before = len(model.requests)
    oai = openai.OpenAI(base_url=proxy_url + "/v1", api_key="sk-test", max_retries=0, timeout=timeout,
                        http_client=_recording_http(timeout, replayed.wire))

    def send(record: Record) -> None:
        body = body_for(record, stream)
        with answers.key_lock(record.key):
            with answers.lock:
                answers.expect[record.key] = record
            sent_at = time.time()
            known = {"model", "messages", "stream"}
            extra = {k: v for k, v in body.items() if k not in known}
            result = oai.chat.completions.create(model=body["model"], messages=body["messages"],
                                                 stream=bool(body.get("stream")), extra_body=extra or None)
            if body.get("stream"):
                with result as events:
                    for _ in events:
                        pass
            with answers.lock:
                answers.expect.pop(record.key, None)
            replayed.window[record.id] = (sent_at, time.time())
        replayed.sent[record.id] = body

    def run(records: list[Record]) -> None:
        for r in records:
            try:
                send(r)
            except BaseException as exc:  # reported by the caller with the record's id
                replayed.errors[r.id] = exc
                return

    threads = [threading.Thread(target=run, args=(rs,), name=f"replay-{rid}") for rid, rs in fixture.runs.items()]
    for i, t in enumerate(threads):
        t.start()
        if i < len(threads) - 1:
            time.sleep(0.01)
    for t in threads:
        t.join(timeout * 4)
    oai.close()
    by_key: dict[str, list[Record]] = {}
    for r in fixture.records:
        by_key.setdefault(r.key, []).append(r)
    for got in model.requests[upstream_before:]:
        if isinstance(got.json, dict) and got.path.endswith("/chat/completions"):
            candidates = by_key.get(request_key("chat", got.json), [])
            replayed.answered.append((candidates[0].id if len(candidates) == 1 else "", got.body))
    return replayed


def _recording_http(timeout: float, wire: list[bytes]) -> Any:
    """The SDK's HTTP client (see graphs.sdk_http), noting each request body it sends."""
    try:
        import httpx2 as hx
    except ImportError:
        import httpx as hx  # type: ignore[no-redef]
    return hx.Client(verify=False, timeout=timeout, event_hooks={"request": [lambda req: wire.append(req.content)]})


def unfaithful(replayed: Replayed) -> list[str]:
    """Requests the fake model got that the client did not send: byte for byte, except the one
    documented rewrite (a chat stream that asks for no usage is sent upstream with
    `stream_options.include_usage`, proxy/providers/openai.py) whose JSON must then be the
    client's plus that option."""
    wire = Counter(replayed.wire)
    sent = Counter(_canonical(b) for b in replayed.sent.values())
    wrong = []
    for _, body in replayed.answered:
        if wire[body] > 0:
            wire[body] -= 1
            sent[_canonical(orjson.loads(body))] -= 1
            continue
        got = _canonical(_unmetered(orjson.loads(body)))
        if sent[got] > 0:
            sent[got] -= 1
        else:
            wrong.append(f"upstream got a body the client never sent: {body[:200]!r}")
    return wrong


def _canonical(body: Json) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _unmetered(body: Json) -> Json:
    """The body without the usage option the proxy adds to chat streams."""
    opts = body.get("stream_options")
    if body.get("stream") and isinstance(opts, dict) and opts.get("include_usage") is True:
        rest = {k: v for k, v in opts.items() if k != "include_usage"}
        body = {k: v for k, v in body.items() if k != "stream_options"}
        if rest:
            body["stream_options"] = rest
    return body


def inferred_from_api(api: Api, replayed: Replayed, *, timeout: float = 15.0) -> Inferred:
    """The proxy's graph per record, once every call is recorded and linked.  A stored call is
    mapped to its record by request content; twins (the same first request in two runs with
    the same task) by the time the replay sent each (never at once: see _Answers)."""
    fixture = replayed.fixture
    n = len(fixture.records)
    graphs = api.settle(calls=n, timeout=timeout)
    by_key: dict[str, list[Record]] = {}
    for r in fixture.records:
        by_key.setdefault(r.key, []).append(r)
    record_of: dict[str, str] = {}
    for row in api.wait_calls(n, timeout=timeout):
        stored = api.get(f"/api/calls/{row['id']}")
        candidates = by_key.get(request_key("chat", orjson.loads(stored["request_content"])), [])
        if len(candidates) > 1:
            started = _epoch(stored.get("started_at"))
            candidates = sorted(candidates, key=lambda r: _distance(replayed.window.get(r.id), started))
        if candidates:
            record_of[row["id"]] = candidates[0].id
    out = Inferred()
    for run_id, graph in graphs.items():
        for node in graph["nodes"]:
            rid = record_of.get(node["id"])
            if rid is not None:
                out.agent[rid], out.run[rid] = node["agent"], run_id
        for e in graph["edges"]:
            source, target = record_of.get(e["source"], e["source"]), record_of.get(e["target"], e["target"])
            out.edges.add((source, target, e["kind"]))
    return out


def _epoch(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return 0.0


def _distance(window: tuple[float, float] | None, t: float) -> float:
    if window is None:
        return float("inf")
    lo, hi = window
    return 0.0 if lo <= t <= hi else min(abs(t - lo), abs(t - hi))


# ----------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class Score:
    fixture: str
    calls: int
    linked: int  # records the inferred graph placed
    agents_ari: float
    runs_ari: float
    flow: tuple[float, float, float]  # precision, recall, F1 over (run, source agent, target agent)
    thread: tuple[float, float, float]  # the same over (record, record) continuation/tool edges
    true_agents: dict[str, dict[str, int]]  # true agent → {inferred name: calls}
    runs: tuple[int, int]  # true, inferred
    missed: frozenset[tuple[str, str, str]]
    spurious: frozenset[tuple[str, str, str]]

    def row(self) -> Json:
        return {
            "fixture": self.fixture, "calls": self.calls, "linked": self.linked,
            "agents_ari": round(self.agents_ari, 3), "runs_ari": round(self.runs_ari, 3),
            "flow_precision": round(self.flow[0], 3), "flow_recall": round(self.flow[1], 3),
            "flow_f1": round(self.flow[2], 3), "thread_precision": round(self.thread[0], 3),
            "thread_recall": round(self.thread[1], 3), "thread_f1": round(self.thread[2], 3), "runs_true": self.runs[0], "runs_inferred": self.runs[1],
            "agents": self.true_agents,
            "missed": sorted(self.missed), "spurious": sorted(self.spurious),
        }


def found_pairs(inferred: Inferred, truth: Truth) -> set[tuple[str, str, str]]:
    """Inferred handoff/return edges between records, as (true run, true source, true target);
    an edge across true runs keeps both runs ("r1>r3") and can only be wrong."""
    out = set()
    for source, target, kind in inferred.edges:
        if kind not in FLOW_KINDS or target not in truth.agent:
            continue
        if source not in truth.agent:  # another fixture's call (link_together)
            out.add((f"foreign>{truth.run[target]}", source.split("/")[0], truth.agent[target]))
            continue
        run_s, run_t = truth.run[source], truth.run[target]
        run = run_t if run_s == run_t else f"{run_s}>{run_t}"
        out.add((run, truth.agent[source], truth.agent[target]))
    return out


def thread_prf(found: set[tuple[str, str]], truth: Truth) -> tuple[float, float, float]:
    """Recall over the true thread steps; precision also accepts a continuation between two
    conversations of one agent when the later one holds the earlier one's output (a CrewAI
    manager's next task gets its last answer as context)."""
    p = len(found & (truth.threads | truth.same_agent)) / len(found) if found else 1.0
    r = len(found & truth.threads) / len(truth.threads) if truth.threads else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def found_threads(inferred: Inferred, truth: Truth) -> set[tuple[str, str]]:
    return {(s, t) for s, t, kind in inferred.edges if kind in THREAD_KINDS and s in truth.agent and t in truth.agent}


def score(fixture: Fixture, inferred: Inferred) -> Score:
    truth = fixture.truth
    ids = [r.id for r in fixture.records]
    agents = [inferred.agent.get(i, f"unlinked:{i}") for i in ids]
    runs = [inferred.run.get(i, f"unlinked:{i}") for i in ids]
    found, true = found_pairs(inferred, truth), truth.pairs
    names: dict[str, Counter[str]] = {}
    for i, name in zip(ids, agents, strict=True):
        names.setdefault(truth.agent[i], Counter())[name] += 1
    return Score(
        fixture.name, len(ids), sum(1 for i in ids if i in inferred.run),
        ari([truth.agent[i] for i in ids], agents), ari([truth.run[i] for i in ids], runs),
        prf(found, true), thread_prf(found_threads(inferred, truth), truth),
        {a: dict(c.most_common()) for a, c in sorted(names.items())},
        (len(set(truth.run.values())), len(set(runs))), frozenset(true - found), frozenset(found - true),
    )


def assert_graph(fixture: Fixture, min_agents_ari: float = 1.0, min_runs_ari: float = 1.0,
                 min_flow_f1: float = 1.0, *, inferred: Inferred | None = None) -> Score:
    """The graph recovered for a fixture is at least this good (1.0 everywhere: exact).
    `inferred` defaults to the in-process linker's answer; pass `inferred_from_api(...)` for the
    live proxy's."""
    s = score(fixture, inferred if inferred is not None else link_in_process(fixture))
    assert s.agents_ari >= min_agents_ari, f"{fixture.name}: agents ARI {s.agents_ari:.3f}: {s.true_agents}"
    assert s.runs_ari >= min_runs_ari, f"{fixture.name}: runs ARI {s.runs_ari:.3f} ({s.runs[1]} runs for {s.runs[0]})"
    assert s.flow[2] >= min_flow_f1, (
        f"{fixture.name}: flow F1 {s.flow[2]:.3f}; missed {sorted(s.missed)}; spurious {sorted(s.spurious)}")
    return s
