"""Replaying a scripted scenario (tests/graph/scenarios.py) through a live proxy with the real SDKs.

    plan = Plan.of(scenario, stream=True)
    up.responder = plan.responder            the fake model answers each request with the
                                             output its step scripts (matched by content)
    ids = plan.drive(px.url)                 one thread per step; a step starts when the
                                             steps it follows have ended (and not before its
                                             scripted start), sends its rendered request with
                                             the `openai` SDK (chat.completions / responses)
                                             or the `anthropic` SDK (messages), streaming or not
    steps = plan.identify(Api(px))           proxy call id → step id, from the stored request

No `X-Interlock-*` header is sent: agents, threads, handoffs and runs must be recovered from the
traffic alone.  The only change to a rendered request is `previous_response_id`, which names the
response id the fake model really returned for the step the script refers to.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anthropic
import openai
import orjson

from proxy.graph.script import Exchange, Script, Step, render
from tests.fake_upstream import Reply, ToolCall
from tests.graph.scenarios import HUMAN, Scenario
from tests.graph_e2e.graphs import Api, sdk_http

Json = dict[str, Any]
TIME_SCALE = 0.02  # wall seconds per unit of scripted time: keeps concurrent runs interleaved
LENGTH_REASON = {"chat": "length", "responses": "max_output_tokens", "messages": "max_tokens"}
API_OF_PATH = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/messages": "messages"}


def request_key(api: str, body: Json) -> str:
    """What identifies one step's request on the wire: its conversation, not its transport
    options (stream, stream_options) nor previous_response_id (rewritten to the real id)."""
    if api == "responses":
        parts: list[Any] = [body.get("instructions"), body.get("input")]
    elif api == "messages":
        parts = [body.get("system"), body.get("messages")]
    else:
        parts = [body.get("messages")]
    blob = orjson.dumps([api, body.get("model"), *parts], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(blob, digest_size=12).hexdigest()


def tool_id(api: str, step: str, index: int) -> str:
    """The id proxy.graph.script gives a step's tool call (its results quote this id)."""
    return f"{'toolu' if api == 'messages' else 'call'}_{step}_{index}"


def with_stream(script: Script, stream: bool) -> Script:
    return Script(script.agents, tuple(replace(s, stream=stream) for s in script.steps), script.group_threads)


def with_api(script: Script, api: str) -> Script:
    """The same system with every agent on another wire format."""
    agents = {name: replace(spec, api=api, stateful=False) for name, spec in script.agents.items()}
    return Script(agents, script.steps, script.group_threads)


@dataclass
class Plan:
    exchanges: list[Exchange]
    steps: dict[str, Step]
    deps: dict[str, tuple[str, ...]]
    keys: dict[str, str]  # request key → step id
    misses: list[str] = field(default_factory=list)
    errors: dict[str, BaseException] = field(default_factory=dict)
    response_ids: dict[str, str] = field(default_factory=dict)  # scripted → real response id
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, scenario: Scenario, *, stream: bool) -> Plan:
        exchanges: list[Exchange] = []
        steps: dict[str, Step] = {}
        deps: dict[str, tuple[str, ...]] = {}
        for script, offset in scenario.scripts:
            script = with_stream(script, stream)
            exchanges.extend(render(script, offset=offset))
            last: str | None = None
            for s in script.steps:  # the renderer's rule: `after`, else the previous step
                steps[s.id] = s
                deps[s.id] = s.after if s.after is not None else ((last,) if last else ())
                last = s.id
        keys = {request_key(ex.api, ex.request): ex.step for ex in exchanges}
        assert len(keys) == len(exchanges), "two steps send the same request: the replay cannot tell them apart"
        exchanges.sort(key=lambda ex: (ex.started_at, ex.step))
        return cls(exchanges, steps, deps, keys)

    # ------------------------------------------------------------------ the fake model
    def responder(self, req: Json, path: str) -> Reply:
        api = API_OF_PATH.get(path, "chat")
        step_id = self.keys.get(request_key(api, req))
        if step_id is None:
            with self._lock:
                self.misses.append(f"{path}: {orjson.dumps(req).decode()[:400]}")
            return Reply(status=500, error="interlock e2e: no scripted step sends this request")
        step = self.steps[step_id]
        calls = tuple(ToolCall(t.name, t.args, id=tool_id(api, step.id, i)) for i, t in enumerate(step.tools))
        finish = LENGTH_REASON[api] if step.finish == "length" and not calls else None
        return Reply(text=step.text, tool_calls=calls, finish_reason=finish)

    # ------------------------------------------------------------------ the agents
    def drive(self, base_url: str, *, timeout: float = 20.0) -> None:
        oai = openai.OpenAI(base_url=base_url + "/v1", api_key="sk-test", max_retries=0, timeout=timeout,
                            http_client=sdk_http(timeout))
        ant = anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0, timeout=timeout,
                                  http_client=sdk_http(timeout))
        done = {ex.step: threading.Event() for ex in self.exchanges}
        t0 = time.monotonic()
        offset = min(ex.started_at for ex in self.exchanges)

        def run(ex: Exchange) -> None:
            try:
                for dep in self.deps[ex.step]:
                    if not done[dep].wait(timeout) or dep in self.errors:
                        raise RuntimeError(f"step {dep} (before {ex.step}) did not complete")
                pause = t0 + (ex.started_at - offset) * TIME_SCALE - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self._send(ex, oai, ant)
            except BaseException as exc:  # reported by the caller, with the step's name
                self.errors[ex.step] = exc
            finally:
                done[ex.step].set()

        threads = [threading.Thread(target=run, args=(ex,), name=f"step-{ex.step}") for ex in self.exchanges]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout * 2)
        oai.close()
        ant.close()
        assert not self.misses, f"the fake model got unscripted requests: {self.misses}"
        assert not self.errors, f"steps failed: {self.errors!r}"

    def _send(self, ex: Exchange, oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
        body = dict(ex.request)
        stream = bool(body.pop("stream", False))
        if ex.api == "messages":
            _consume(ant.messages.create(**body, stream=stream), stream, lambda _: None)
        elif ex.api == "responses":
            previous = body.get("previous_response_id")
            if previous is not None:
                body["previous_response_id"] = self.response_ids[previous]
            got: list[str] = []
            _consume(oai.responses.create(**body, stream=stream), stream, lambda r: got.append(_response_id(r)))
            with self._lock:
                self.response_ids[f"resp_{ex.step}"] = next(i for i in got if i)
        else:
            _consume(oai.chat.completions.create(**body, stream=stream), stream, lambda _: None)

    # ------------------------------------------------------------------ reading back
    def identify(self, api: Api) -> dict[str, str]:
        """Proxy call id → step id, matching each stored request to the step that sent it."""
        rows = api.wait_calls(len(self.exchanges))
        out: dict[str, str] = {}
        for row in rows:
            stored = api.get(f"/api/calls/{row['id']}")
            body = orjson.loads(stored["request_content"])
            out[row["id"]] = self.keys[request_key(API_OF_PATH[stored["path"]], body)]
        assert sorted(out.values()) == sorted(self.steps), f"calls do not map one to one onto steps: {out}"
        return out


def _consume(result: Any, stream: bool, seen: Callable[[Any], None]) -> None:
    if not stream:
        seen(result)
        return
    with result as events:
        for event in events:
            seen(event)


def _response_id(obj: Any) -> str:
    response = getattr(obj, "response", None)  # stream events carry the response object
    if response is not None:
        return str(response.id)
    return str(getattr(obj, "id", "") or "") if getattr(obj, "object", None) == "response" else ""


@dataclass(frozen=True)
class Recovered:
    """A recovered graph in the scenario's own terms (step ids; "human" for human input)."""

    agents: dict[str, tuple[str, ...]]
    edges: frozenset[tuple[str, str, str]]
    runs: frozenset[frozenset[str]]
    truncated: frozenset[tuple[str, str]]
    agent_edges: frozenset[tuple[str, str, str]]
    evidence: dict[tuple[str, str, str], Json]  # per edge
    flags: dict[str, tuple[str, ...]]  # per step


def recovered(graphs: dict[str, Json], step_of: dict[str, str]) -> Recovered:
    agents: dict[str, list[str]] = {}
    runs = set()
    edges = set()
    truncated = set()
    agent_edges = set()
    evidence: dict[tuple[str, str, str], Json] = {}
    flags: dict[str, tuple[str, ...]] = {}
    for graph in graphs.values():
        run = set()
        for node in graph["nodes"]:
            step = step_of.get(node["id"], node["id"])
            agents.setdefault(node["agent"], []).append(step)
            run.add(step)
            flags[step] = tuple(node["flags"])
        runs.add(frozenset(run))
        for e in graph["edges"]:
            source = HUMAN if e["source"].startswith("human:") else step_of.get(e["source"], e["source"])
            target = step_of.get(e["target"], e["target"])
            edges.add((source, target, e["kind"]))
            evidence[(source, target, e["kind"])] = e.get("evidence") or {}
            if (e.get("evidence") or {}).get("truncated"):
                truncated.add((source, target))
        agent_edges |= {(e["source"], e["target"], e["kind"]) for e in graph["agent_edges"]}
    return Recovered(
        {k: tuple(sorted(v)) for k, v in agents.items()},
        frozenset(edges),
        frozenset(runs),
        frozenset(truncated),
        frozenset(agent_edges),
        evidence,
        flags,
    )
