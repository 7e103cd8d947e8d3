"""The same graph at any replica count: 1 process vs 2 replicas x 2 workers behind HAProxy.

The same traffic, sent one request at a time in one fixed order with the `openai` and
`anthropic` SDKs, goes once through a single `interlock` (no Redis: today's one-process graph)
and once through two `interlock serve --workers 2` replicas behind Debian's haproxy with
deploy/haproxy.cfg (round robin, so a run's calls alternate between the replicas, and land on
either worker of each), sharing PostgreSQL and Redis (tests/topology.py).  The graphs the API then serves must be
identical: every call's agent, the runs (as sets of calls), every call-to-call edge with its
kind and the agent-pair edges.  Traffic: every recorded real-framework fixture, and one run of
every pattern of the graph generator (bench/graph_accuracy.py).
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import anthropic
import httpx2
import openai
import orjson

from tests.fake_upstream import FakeUpstream
from tests.graph.scenarios import Expect, Scenario
from tests.graph_e2e.frameworks import Fixture, Record, Replayed, _Answers, body_for, fixtures
from tests.graph_e2e.graphs import Api, sdk_http
from tests.graph_e2e.replay import Plan, Recovered, recovered, request_key
from tests.proxyserver import ProxyServer
from tests.topology import Topology

BENCH = Path(__file__).resolve().parents[2] / "bench"
REPLICA = "x-interlock-replica"  # set by deploy/haproxy.cfg: the replica that answered
SHARED_ENV = {"INTERLOCK_CONTENT_POLICY": "full", "INTERLOCK_LOG_LEVEL": "info"}


class _Url:
    def __init__(self, url: str) -> None:
        self.url = url


def _bench(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- traffic


def frameworks_in_order(live: int = 3) -> list[tuple[Fixture, Record]]:
    """Every fixture's records in a fixed order: `live` runs at a time, interleaved one request
    each (an odd number, so that round robin sends a run's next call to the other replica)."""
    out = []
    for fx in fixtures():
        runs = list(fx.runs.values())
        for first in range(0, len(runs), live):
            group = runs[first:first + live]
            for i in range(max(len(r) for r in group)):
                out.extend((fx, run[i]) for run in group if i < len(run))
    return out


def send_frameworks(url: str, model: FakeUpstream, traffic: list[tuple[Fixture, Record]]) -> list[str]:
    """Send each record's request (json and sse alternately); the replica that answered each."""
    replayed = {fx.name: Replayed(fx, None) for fx, _ in traffic}
    oai = openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0, timeout=20.0,
                        http_client=sdk_http(20.0))
    went = []
    for n, (fx, record) in enumerate(traffic):
        answers = _Answers(replayed[fx.name])
        answers.expect[record.key] = record
        model.responder = answers.responder
        body = body_for(record, stream=bool(n // 4 % 2))
        extra = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
        raw = oai.chat.completions.with_raw_response.create(
            model=body["model"], messages=body["messages"], stream=bool(body.get("stream")), extra_body=extra or None)
        result = raw.parse()
        if body.get("stream"):
            for _ in result:
                pass
        went.append(raw.headers.get(REPLICA, ""))
        assert not replayed[fx.name].misses, replayed[fx.name].misses
    oai.close()
    return went


def frameworks_graph(url: str, traffic: list[tuple[Fixture, Record]]) -> Recovered:
    """The recovered graph with calls named by record id (request content, then order)."""
    with Api(_Url(url)) as api:  # type: ignore[arg-type]
        graphs = api.settle(calls=len(traffic), timeout=60.0)
        rows = sorted(api.wait_calls(len(traffic)), key=lambda r: (r["started_at"], r["id"]))
        pending: dict[str, list[str]] = {}
        for fx, record in traffic:
            pending.setdefault(record.key, []).append(f"{fx.name}/{record.id}")
        step_of = {}
        for row in rows:  # twins (one first request in two runs) in the order they were sent
            stored = api.get(f"/api/calls/{row['id']}")
            key = request_key("chat", orjson.loads(stored["request_content"]))
            step_of[row["id"]] = pending[key].pop(0)
    return recovered(graphs, step_of)


def generator_plan(seed: int = 5) -> Plan:
    """One run of every generator pattern (but the same-template burst, whose twin requests a
    replay cannot tell apart), runs starting 2 scripted seconds apart."""
    ga = _bench("graph_accuracy")
    gen = ga.Gen(seed)
    scripts = []
    for r, pattern in enumerate(sorted(set(ga.PATTERNS) - {"template"})):
        build, roles = ga.PATTERNS[pattern]
        v = gen.rng.randrange(3)
        if pattern == "broadcast" or pattern.startswith("no_system"):
            v = 0
        run = ga.Run(gen, f"r{r}", f"{pattern}{v}", ga.agents_for(gen, pattern, v, roles))
        build(gen, run, gen.topic())
        scripts.append((run.script(), r * 2.0))
    return Plan.of(Scenario("generator", tuple(scripts), Expect({}, frozenset(), ())), stream=False)


def send_plan(url: str, model: FakeUpstream, plan: Plan) -> list[str]:
    """Every exchange in scripted start order, one at a time (each after the steps it needs)."""
    model.responder = plan.responder
    went: list[str] = []
    hooks = {"response": [lambda r: went.append(r.headers.get(REPLICA, ""))]}
    oai = openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0, timeout=20.0,
                        http_client=httpx2.Client(verify=False, timeout=20.0, event_hooks=hooks))
    ant = anthropic.Anthropic(base_url=url, api_key="sk-ant-test", max_retries=0, timeout=20.0,
                              http_client=httpx2.Client(verify=False, timeout=20.0, event_hooks=hooks))
    done: set[str] = set()
    for ex in plan.exchanges:
        assert set(plan.deps[ex.step]) <= done, f"{ex.step} would be sent before {plan.deps[ex.step]}"
        plan._send(ex, oai, ant)
        done.add(ex.step)
    oai.close()
    ant.close()
    assert not plan.misses, plan.misses
    return went


def plan_graph(url: str, plan: Plan) -> Recovered:
    with Api(_Url(url)) as api:  # type: ignore[arg-type]
        graphs = api.settle(calls=len(plan.exchanges), timeout=60.0)
        return recovered(graphs, plan.identify(api))


def crossings(went: list[str], runs: list[str]) -> float:
    """Share of a run's consecutive calls answered by different replicas."""
    last: dict[str, str] = {}
    pairs = crossed = 0
    for replica, run in zip(went, runs, strict=True):
        if run in last:
            pairs += 1
            crossed += last[run] != replica
        last[run] = replica
    return crossed / max(pairs, 1)


def assert_same(one: Recovered, two: Recovered) -> None:
    assert two.runs == one.runs, "runs differ"
    assert two.agents == one.agents, "agents differ"
    assert two.edges == one.edges, f"edges differ: only 1 process {sorted(one.edges - two.edges)[:5]}, " \
                                   f"only 2 replicas {sorted(two.edges - one.edges)[:5]}"
    assert two.agent_edges == one.agent_edges


# ----------------------------------------------------------------------------- tests


def test_framework_fixtures_give_the_same_graph_on_two_replicas(tmp_path: Path, model: FakeUpstream) -> None:
    traffic = frameworks_in_order()
    runs = [f"{fx.name}/{r.run}" for fx, r in traffic]
    model.reset()
    with ProxyServer(tmp_path / "one", model.url, content_policy="full",
                     encodings_dir=tmp_path / "no-encodings") as px:
        send_frameworks(px.url, model, traffic)
        one = frameworks_graph(px.url, traffic)
    model.reset()
    with Topology(tmp_path / "two", model.url, workers=2, env=SHARED_ENV) as two_px:
        went = send_frameworks(two_px.url, model, traffic)
        two = frameworks_graph(two_px.replicas[1].direct, traffic)
        assert set(went) == {"replica-1", "replica-2"}
        assert crossings(went, runs) > 0.3
    assert len({s for steps in one.agents.values() for s in steps}) == len(traffic)
    assert_same(one, two)


def test_generator_patterns_give_the_same_graph_on_two_replicas(tmp_path: Path, model: FakeUpstream) -> None:
    model.reset()
    with ProxyServer(tmp_path / "one", model.url, content_policy="full",
                     encodings_dir=tmp_path / "no-encodings") as px:
        plan = generator_plan()
        send_plan(px.url, model, plan)
        one = plan_graph(px.url, plan)
    model.reset()
    with Topology(tmp_path / "two", model.url, workers=2, env=SHARED_ENV) as two_px:
        plan = generator_plan()
        went = send_plan(two_px.url, model, plan)
        two = plan_graph(two_px.replicas[0].direct, plan)
    runs = [ex.step.split(".")[0] for ex in plan.exchanges]
    assert Counter(went) == Counter({"replica-1": (len(went) + 1) // 2, "replica-2": len(went) // 2})
    assert crossings(went, runs) > 0.3
    assert_same(one, two)
