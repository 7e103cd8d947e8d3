"""The same guard answers at any replica count: two `interlock serve --workers 2` replicas sharing
Redis and PostgreSQL, the test round-robining between them (each call on either worker of the
replica), against the answer of one process alone.  Real SDK, real
HTTP, real Redis and PostgreSQL; the model API is the fake upstream."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fake_upstream import FakeUpstream, Json, Reply, echo, last_user_text
from tests.replicas import Replicas

STUCK = "I could not find the configuration file. I will search the repository again for the config file."
RULES = """
rules:
  - {name: retries, kind: loop, detect: retry, max_repeats: 3, action: deny, match: {agent: retrier}}
  - {name: no-progress, kind: loop, detect: no_progress, max_repeats: 2, action: deny, match: {agent: stuck}}
  - {name: tool-repeats, kind: loop, detect: tool_repeat, max_repeats: 2, action: deny, match: {agent: tooler}}
  - {name: run-budget, kind: budget, scope: run, limit_tokens: 5000, action: deny, match: {agent: spender}}
"""
TURNS = 8
LIMIT = 5000


def responder(req: Json, path: str) -> Reply:
    text = last_user_text(req)
    if text.startswith("stuck"):
        return Reply(text=STUCK)
    if text.startswith("spend"):
        return Reply(text="done", input_tokens=12, output_tokens=90, headers_delay=0.3)
    return echo(req, path)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(responder=responder) as up:
        yield up


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Replicas]:
    with Replicas(tmp_path_factory.mktemp("replicas"), upstream.url, RULES, workers=2) as rs:
        yield rs


def client(url: str, agent: str, run: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/agents/{agent}/v1", api_key="sk-test", max_retries=0, timeout=30,
                         default_headers={"X-Interlock-Run": run})


def tool_turn(i: int) -> list[dict[str, Any]]:
    """Turn i of an agent reading the same file again and again (a new tool-call id each time)."""
    msgs: list[dict[str, Any]] = [{"role": "user", "content": "What does the config say about retries?"}]
    for j in range(i + 1):
        tc = {"id": f"call_{j}", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.cfg"}'}}
        msgs += [{"role": "assistant", "content": None, "tool_calls": [tc]},
                 {"role": "tool", "tool_call_id": f"call_{j}", "content": "retries = 3"}]
    return msgs


def messages(agent: str, i: int) -> list[dict[str, Any]]:
    if agent == "retrier":
        return [{"role": "user", "content": "Summarise the incident report."}]
    if agent == "stuck":
        return [{"role": "user", "content": f"stuck: find the config file, attempt {i}"}]
    return tool_turn(i)


def refused_at(urls: list[str], agent: str, stream: bool) -> int | None:
    """The first turn (0-based) refused as a loop, the calls going round-robin over `urls`.
    Streamed turns are read as an agent reads them: up to `[DONE]`, where the SDK stops."""
    run = f"run-{uuid.uuid4().hex[:10]}"
    clients = [client(url, agent, run) for url in urls]
    for i, c in zip(range(TURNS), itertools.cycle(clients), strict=False):
        try:
            if stream:
                for _ in c.chat.completions.create(model="gpt-4o", messages=messages(agent, i), stream=True):  # type: ignore[arg-type]
                    pass
            else:
                c.chat.completions.create(model="gpt-4o", messages=messages(agent, i))  # type: ignore[arg-type]
        except openai.RateLimitError as err:
            assert err.code == "interlock_loop_detected", err.message
            return i
    return None


@pytest.mark.parametrize(("agent", "turn", "stream"),
                         [("retrier", 3, False), ("stuck", 3, False), ("stuck", 3, True), ("tooler", 2, False)])
def test_a_loop_split_across_replicas_is_refused_at_the_same_turn(
    replicas: Replicas, agent: str, turn: int, stream: bool
) -> None:
    alone = refused_at(replicas.urls[:1], agent, stream)
    split = refused_at(replicas.urls, agent, stream)
    assert alone == turn, f"one process refused {agent} at turn {alone}"
    assert split == alone, f"two replicas refused {agent} at turn {split}, one process at {alone}"


async def test_a_run_budget_overshoots_by_at_most_one_reservation_across_replicas(replicas: Replicas) -> None:
    run = f"run-{uuid.uuid4().hex[:10]}"
    clients = [openai.AsyncOpenAI(base_url=f"{url}/agents/spender/v1", api_key="sk-test", max_retries=0,
                                  timeout=60, default_headers={"X-Interlock-Run": run}) for url in replicas.urls]

    async def one(c: openai.AsyncOpenAI, i: int) -> Any:
        try:
            return await c.chat.completions.create(model="gpt-4o", max_tokens=100,
                                                   messages=[{"role": "user", "content": f"spend {i}"}])
        except openai.RateLimitError as err:
            return err

    results = await asyncio.gather(*(one(clients[i % 2], i) for i in range(100)))
    admitted = [r for r in results if not isinstance(r, openai.RateLimitError)]
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert refused and all(r.code == "interlock_budget_exceeded" for r in refused)
    reservation = int(re.search(r"needs up to ([\d,]+) tokens", refused[0].message)[1].replace(",", ""))  # type: ignore[index]
    used = sum(r.usage.total_tokens for r in admitted)
    assert used <= LIMIT + reservation, f"{len(admitted)} calls used {used} tokens"
    reserved = len(admitted) * reservation  # the fake reports less than was reserved (no max_tokens overrun)
    assert LIMIT - reservation < reserved, f"only {len(admitted)} calls admitted: budget under-used"
    served = {i % 2 for i, r in enumerate(results) if not isinstance(r, openai.RateLimitError)}
    assert served == {0, 1}, "both replicas admitted calls"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STORE_RULES = """
rules:
  - {name: lenient, kind: loop, detect: retry, max_repeats: 3, action: deny, match: {agent: lenient}}
  - {name: strict, kind: loop, detect: retry, max_repeats: 3, action: deny, on_store_error: deny, match: {agent: strict}}
"""


def test_with_redis_down_allow_rules_forward_and_deny_rules_refuse(tmp_path: Path, upstream: FakeUpstream) -> None:
    with Replicas(tmp_path, upstream.url, STORE_RULES, count=1, redis_url=f"redis://127.0.0.1:{closed_port()}/0",
                  INTERLOCK_LOG_LEVEL="info") as rs:
        for _ in range(5):  # past max_repeats: nothing can count the repeats, so the rule lets them through
            reply = client(rs.urls[0], "lenient", "run-a").chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "ping"}])
            assert reply.choices[0].message.content == "ok: ping"
        for _ in range(3):
            with pytest.raises(openai.InternalServerError) as err:
                client(rs.urls[0], "strict", "run-b").chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "ping"}])
            assert err.value.status_code == 503
            body: Any = err.value.body
            assert body["code"] == "interlock_store_unavailable" and "'strict'" in body["message"]
        metrics = rs.metrics(0)
        assert re.search(r'interlock_store_errors_total\{[^}]*outcome="allowed"[^}]*rule="lenient"[^}]*\} 5\.0',
                         metrics), metrics
        assert re.search(r'interlock_store_errors_total\{[^}]*outcome="denied"[^}]*rule="strict"[^}]*\} 3\.0',
                         metrics), metrics
        log = rs.log(0)
        assert log.count("Redis (shared guard state) failed") == 1, log
