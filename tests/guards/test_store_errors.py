"""Redis unreachable or stalled: each rule's `on_store_error` answers, the outage is logged
once, counted per rule, and calls stop waiting on Redis while it is down."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from proxy.guards import GuardChain, build_chain
from proxy.guards.counters import Outage, RedisCounterStore, StoreUnavailable
from proxy.rules import RuleSet
from tests.guards.factory import deps, finish, make_call, rule_from_yaml, user
from tests.netcut import NetCut
from tests.services import redis_url


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def relay() -> AsyncIterator[NetCut]:
    host, port = redis_url().removeprefix("redis://").split("/")[0].split(":")
    async with NetCut(host, int(port)) as cut:
        yield cut


def store_at(url: str, probe_s: float = 1.0, timeout_s: float = 0.2) -> RedisCounterStore:
    return RedisCounterStore.from_url(url, prefix=f"interlock-test:{uuid.uuid4().hex}:", timeout_s=timeout_s,
                                      outage=Outage(probe_s=probe_s))


def chain_of(store: RedisCounterStore, *rules: str) -> GuardChain:
    ruleset = RuleSet(rules=tuple(rule_from_yaml(r) for r in rules))
    return build_chain(ruleset, deps(store))


async def test_a_closed_port_raises_store_unavailable() -> None:
    store = store_at(f"redis://127.0.0.1:{closed_port()}/0")
    with pytest.raises(StoreUnavailable, match="Redis is unreachable"):
        await store.reserve("k", 1, 10, None)
    await store.aclose()


async def test_calls_during_an_outage_do_not_wait_for_redis(relay: NetCut) -> None:
    store = store_at(relay.url, probe_s=60.0, timeout_s=0.3)
    relay.set("hang")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.hit("k", None)  # waits the timeout once
    first = time.monotonic() - started
    started = time.monotonic()
    for _ in range(200):
        with pytest.raises(StoreUnavailable):
            await store.hit("k", None)
    rest = time.monotonic() - started
    assert 0.25 < first < 2.0
    assert rest < 0.1, f"200 calls inside the outage took {rest:.3f}s"
    relay.set("cut")
    await store.aclose()


async def test_the_outage_is_logged_once_and_its_end_once(
    relay: NetCut, caplog: pytest.LogCaptureFixture
) -> None:
    store = store_at(relay.url, probe_s=0.05)
    assert await store.hit("k", None) == 1
    relay.set("cut")
    with caplog.at_level(logging.WARNING, logger="interlock.guards"):
        for _ in range(5):
            for _ in range(20):
                with pytest.raises(StoreUnavailable):
                    await store.hit("k", None)
            await asyncio.sleep(0.06)  # past the pause: the next call probes Redis again
        relay.set("open")
        assert await store.hit("k", None) == 2  # the count kept in Redis survived the outage
        assert await store.hit("k", None) == 3
    lines = [r.getMessage() for r in caplog.records if "Redis" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "failed" in lines[0] and "on_store_error" in lines[0]
    assert "recovered after 100 failure(s)" in lines[1]
    await store.aclose()


async def test_allow_rules_pass_and_deny_rules_refuse_with_a_503() -> None:
    store = store_at(f"redis://127.0.0.1:{closed_port()}/0")
    chain = chain_of(
        store,
        "{name: open-budget, kind: budget, limit_tokens: 100000, action: deny}",
        "{name: strict-loop, kind: loop, detect: retry, action: deny, on_store_error: deny}",
    )
    verdict = await chain.on_request(make_call(messages=[user("hello")]))
    assert verdict.action == "deny" and verdict.rule == "strict-loop"
    assert (verdict.status, verdict.code) == (503, "interlock_store_unavailable")
    assert "could not reach its shared state store" in verdict.reason
    assert dict(verdict.refusal_headers())[b"retry-after"] == b"1"
    stats = chain.stats
    assert stats.store_errors == {("open-budget", "budget", "allowed"): 1, ("strict-loop", "loop", "denied"): 1}
    assert stats.errors_total == 0  # an outage is not a guard bug
    await store.aclose()


async def test_only_allow_rules_means_the_call_goes_through() -> None:
    store = store_at(f"redis://127.0.0.1:{closed_port()}/0")
    chain = chain_of(store, "{name: retries, kind: loop, detect: retry, action: deny}")
    for _ in range(3):
        assert (await chain.on_request(make_call())).action == "allow"
    assert chain.stats.store_errors == {("retries", "loop", "allowed"): 3}
    await store.aclose()


async def test_fail_closed_rules_deny_on_store_errors_unless_told_otherwise() -> None:
    store = store_at(f"redis://127.0.0.1:{closed_port()}/0")
    closed = rule_from_yaml("{name: a, kind: loop, detect: retry, action: deny, fail_closed: true}")
    relaxed = rule_from_yaml(
        "{name: b, kind: loop, detect: retry, action: deny, fail_closed: true, on_store_error: allow}"
    )
    chain = build_chain(RuleSet(rules=(closed, relaxed)), deps(store))
    assert [g.on_store_error for g in chain.guards] == ["deny", "allow"]
    assert (await chain.on_request(make_call())).code == "interlock_store_unavailable"
    await store.aclose()


async def test_an_outage_is_not_logged_per_call_by_the_handoff_observer(caplog: pytest.LogCaptureFixture) -> None:
    store = store_at(f"redis://127.0.0.1:{closed_port()}/0")
    chain = chain_of(store, "{name: pp, kind: loop, detect: ping_pong, action: deny}")
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            call = make_call()
            await chain.on_request(call)
            await chain.on_response(finish(call, text="the answer"))
    assert [r for r in caplog.records if r.exc_info] == []
    assert chain.stats.store_errors[("(observer)", "observer", "allowed")] == 5
    await store.aclose()
