from __future__ import annotations

import asyncio

from proxy.guards.counters import BUCKETS, CounterStore, MemoryCounterStore
from tests.guards.factory import FakeClock


async def test_reserve_refuses_past_the_limit_and_adds_nothing(store: CounterStore) -> None:
    assert (await store.reserve("k", 60, 100, None)).ok
    refused = await store.reserve("k", 50, 100, None)
    assert not refused.ok and refused.spent_after == 60
    assert await store.spent("k", None) == 60


async def test_fifty_concurrent_reservations_never_exceed_the_limit(store: CounterStore) -> None:
    results = await asyncio.gather(*(store.reserve("k", 1000, 10_500, 3600.0) for _ in range(50)))
    assert sum(r.ok for r in results) == 10
    assert await store.spent("k", 3600.0) == 10_000


async def test_adjust_corrects_the_reservations_bucket(store: CounterStore, clock: FakeClock) -> None:
    res = await store.reserve("k", 1000, None, 60.0)
    clock.advance(10)
    assert await store.adjust("k", -700, 60.0, res.bucket) == 300


async def test_sliding_window_forgets_old_spend(store: CounterStore, clock: FakeClock) -> None:
    await store.reserve("k", 100, 100, 60.0)
    assert not (await store.reserve("k", 1, 100, 60.0)).ok
    clock.advance(60 - 60 / BUCKETS - 0.01)
    assert not (await store.reserve("k", 1, 100, 60.0)).ok
    clock.advance(60 / BUCKETS + 0.02)
    assert (await store.reserve("k", 1, 100, 60.0)).ok


async def test_adjust_of_a_bucket_that_left_the_window_changes_nothing(
    store: CounterStore, clock: FakeClock
) -> None:
    res = await store.reserve("k", 100, None, 60.0)
    clock.advance(61)
    await store.reserve("k", 5, None, 60.0)
    assert await store.adjust("k", -100, 60.0, res.bucket) == 5


async def test_hit_counts_occurrences(store: CounterStore) -> None:
    assert [await store.hit("h", 600.0) for _ in range(3)] == [1, 2, 3]


async def test_first_seen_once_per_ttl(store: CounterStore, clock: FakeClock) -> None:
    assert await store.first_seen("f", 10.0)
    assert not await store.first_seen("f", 10.0)


async def test_push_returns_previous_items_newest_first_capped(store: CounterStore) -> None:
    for item in "abcd":
        await store.push("l", item, keep=3, ttl_s=60.0)
    assert await store.push("l", "e", keep=3, ttl_s=60.0) == ["d", "c"]
    assert await store.recent("l") == ["e", "d", "c"]


async def test_setdefault_keeps_the_first_value(store: CounterStore) -> None:
    assert await store.setdefault("s", "one", 60.0) == "one"
    assert await store.setdefault("s", "two", 60.0) == "one"


async def test_push_keeping_one_returns_nothing_before(store: CounterStore) -> None:
    await store.push("one", "a", keep=1, ttl_s=60.0)
    assert await store.push("one", "b", keep=1, ttl_s=60.0) == []
    assert await store.recent("one") == ["b"]


async def test_remember_adds_an_item_once(store: CounterStore) -> None:
    assert await store.remember("r", "a", keep=3, ttl_s=60.0) == ["a"]
    assert await store.remember("r", "b", keep=3, ttl_s=60.0) == ["b", "a"]
    assert await store.remember("r", "a", keep=3, ttl_s=60.0) == ["b", "a"]


async def test_reserve_many_stops_at_the_first_refusal(store: CounterStore) -> None:
    await store.reserve("b", 90, None, None)
    asks = [("a", 10, 100, 60.0), ("b", 20, 100, None), ("c", 30, 100, None)]
    results = await store.reserve_many(asks)
    assert [(r.ok, r.spent_after) for r in results] == [(True, 10), (False, 90)]
    assert [await store.spent(k, None) for k in "abc"] == [10, 90, 0]


async def test_reserve_many_is_reserve_for_each_ask(store: CounterStore, clock: FakeClock) -> None:
    results = await store.reserve_many([("a", 5, None, 60.0), ("b", 7, 10, None)])
    assert [r.ok for r in results] == [True, True]
    clock.advance(10)
    assert await store.adjust_many(
        [("a", -2, 60.0, results[0].bucket), ("b", 1, None, results[1].bucket)]
    ) == [3, 8]
    assert await store.reserve_many([]) == [] and await store.adjust_many([]) == []


async def test_fifty_concurrent_batches_never_exceed_a_shared_limit(store: CounterStore) -> None:
    batches = [[("mine", 1, None, None), ("shared", 1000, 10_500, 3600.0)] for _ in range(50)]
    results = await asyncio.gather(*(store.reserve_many(b) for b in batches))
    assert sum(r[-1].ok for r in results) == 10
    assert await store.spent("shared", 3600.0) == 10_000 and await store.spent("mine", None) == 50


async def test_expired_keys_are_swept_and_memory_stays_bounded(clock: FakeClock) -> None:
    store = MemoryCounterStore(clock=clock, idle_ttl_s=60.0)
    for i in range(10_000):
        await store.hit(f"k{i}", None)
        if i % 1000 == 999:
            clock.advance(61)  # every earlier key expires
    assert len(store._counts) < 2 * 4096
