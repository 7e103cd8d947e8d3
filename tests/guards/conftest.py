from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from proxy.guards.counters import CounterStore, MemoryCounterStore, RedisCounterStore
from tests.guards.factory import FakeClock
from tests.services import redis_url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[CounterStore]:
    """The same behaviour from both counter stores; Redis keys get a unique prefix per test."""
    if request.param == "memory":
        yield MemoryCounterStore(clock=clock)
        return
    url = redis_url()
    prefix = f"interlock-test:{uuid.uuid4().hex}:"
    redis_store = RedisCounterStore.from_url(url, prefix=prefix, clock=clock)
    try:
        yield redis_store
    finally:
        client = redis_store._r
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await redis_store.aclose()
