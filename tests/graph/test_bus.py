"""RedisGraphBus on a real Redis: one ordered log, reply lists, one lease holder at a time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from proxy.graph.bus import RedisGraphBus
from tests.services import redis_url


@pytest.fixture
async def bus() -> AsyncIterator[RedisGraphBus]:
    prefix = f"interlock-test:{uuid.uuid4().hex[:10]}"
    b = RedisGraphBus.from_url(redis_url(), prefix=prefix)
    yield b
    keys = [k async for k in b.client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await b.client.delete(*keys)
    await b.aclose()


async def test_the_log_reads_back_in_append_order_after_a_position(bus: RedisGraphBus) -> None:
    await bus.append([b"one", b"two"])
    await bus.append([b"three"])

    first = await bus.read("0", 2, 0)
    rest = await bus.read(first[-1][0], 10, 0)

    assert [p for _, p in first] == [b"one", b"two"] and [p for _, p in rest] == [b"three"]


async def test_reading_past_the_end_waits_then_returns_nothing(bus: RedisGraphBus) -> None:
    await bus.append([b"only"])
    (last, _), = await bus.read("0", 10, 0)

    assert await bus.read(last, 10, 50) == []


async def test_replies_pop_in_order_and_time_out_empty(bus: RedisGraphBus) -> None:
    await bus.push("links:me", [b"a", b"b", b"c"], 5.0)

    assert await bus.pop("links:me", 2, 0.1) == [b"a", b"b"]
    assert await bus.pop("links:me", 2, 0.1) == [b"c"]
    assert await bus.pop("links:me", 2, 0.05) == []


async def test_only_one_process_holds_the_lease_until_it_lapses(bus: RedisGraphBus) -> None:
    other = RedisGraphBus(bus.client, prefix=bus.prefix)

    assert await bus.lead("a", 200) and await bus.lead("a", 200)  # taken, then renewed
    assert not await other.lead("b", 200)
    await bus.client.pexpire(f"{bus.prefix}:owner", 1)  # as if "a" died and its lease ran out
    await asyncio.sleep(0.01)
    assert await other.lead("b", 200)
    assert not await bus.lead("a", 200)
