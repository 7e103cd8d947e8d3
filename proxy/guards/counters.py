"""CounterStore: the one seam between guards and shared hot state.

    guards ──reserve(_many) / adjust(_many) / spent / hit──▶ CounterStore ──┬─ MemoryCounterStore  (one process)
           ──first_seen / push / remember / recent / setdefault─▶            └─ RedisCounterStore   (every replica)

Amounts are integers (tokens, or micro-dollars for USD budgets).

Windows.  `window=None` means no time window: the count lives until its key is idle for
`idle_ttl_s` (used for per-run budgets, keyed by run id).  A number is a sliding window of that
many seconds, approximated by 60 equal buckets: an amount counts from the moment it is spent
until between 59/60 and 60/60 of the window later (a 1h window forgets in 1-minute steps).
`reserve` returns the bucket it wrote to; `adjust` corrects that same bucket, so reconciling a
call that outlived part of its window never moves spend into the present.

Atomicity.  `reserve` checks and adds in one step: the memory store has no `await` between
the two, the Redis store runs one Lua script.  N concurrent reservations against one limit
therefore never exceed it; the only overshoot comes from reconciliation (a call that used more
than it reserved, e.g. one without max_tokens).  `reserve_many` / `adjust_many` do the same for
several keys in one step (one script: all the budget rules of a call cost one round trip),
each key against its own limit, stopping at the first refusal.

Replicas.  With Redis every replica sees one counter per key (keys are namespaced
`interlock:`; the bucket clock is each replica's wall clock, so keep them NTP-synced: skew
below the bucket width, one second for 1m windows, is harmless).  Without Redis each process
counts alone: a budget becomes per-replica (N replicas admit up to N x the limit) and loop
windows see only their replica's traffic.  Run one replica, or configure INTERLOCK_REDIS_URL.

Outages.  Every Redis failure (refused, reset, timed out after `timeout_s`) surfaces as
`StoreUnavailable`; the guard chain answers it with the rule's `on_store_error` (allow or
deny).  After a failure the store stops asking Redis for `probe_s` (each call raises at once,
so an outage costs no latency per call), then lets one call probe it.  The outage is logged
once when it starts and once when Redis answers again, not per call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

from redis.exceptions import RedisError

from proxy.failures import FailureLog

log = logging.getLogger("interlock.guards")

BUCKETS = 60
IDLE_TTL_S = 2 * 86_400.0
_SWEEP_EVERY = 4096


class StoreUnavailable(Exception):
    """The shared store did not answer (refused, reset, timed out, or still inside the pause
    after such a failure).  Raised by a remote CounterStore; the guard chain applies the rule's
    `on_store_error` to it instead of treating it as a guard bug."""


class Reservation(NamedTuple):
    """Outcome of `reserve`.  When refused nothing was added and `spent_after` is the current
    total; `bucket` is where the amount went (pass it back to `adjust`).  A NamedTuple: as
    immutable as a frozen dataclass and three times cheaper to build (one per budget rule
    and call)."""

    ok: bool
    spent_after: int
    bucket: int


# One reservation of a `reserve_many` batch: (key, amount, limit, window), as for `reserve`.
Ask = tuple[str, int, "int | None", "float | None"]
# One correction of an `adjust_many` batch: (key, delta, window, bucket), as for `adjust`.
Adjustment = tuple[str, int, "float | None", int]


def bucket_of(now: float, window: float | None) -> int:
    return 0 if window is None else int(now // (window / BUCKETS))


def oldest_live(bucket: int, window: float | None) -> int:
    """Buckets <= this value are outside the window."""
    return -1 if window is None else bucket - BUCKETS


class CounterStore(ABC):
    """Shared counters and small recent-item lists.  Every method may be awaited on the hot
    path and must complete in one round trip.  Methods raise on store failure (the guard chain
    isolates it).  `remote` stores are worth calling concurrently (see GuardChain)."""

    remote = False

    @abstractmethod
    async def reserve(self, key: str, amount: int, limit: int | None, window: float | None) -> Reservation:
        """Add `amount` if `spent + amount <= limit` (always when limit is None), atomically."""

    @abstractmethod
    async def adjust(self, key: str, delta: int, window: float | None, bucket: int) -> int:
        """Add `delta` (may be negative) to the bucket a reservation used; returns the total.
        A bucket that already left the window is not touched."""

    @abstractmethod
    async def spent(self, key: str, window: float | None) -> int:
        """Current total in the window."""

    async def reserve_many(self, asks: Sequence[Ask]) -> list[Reservation]:
        """`reserve` each ask in order, in one round trip, stopping after the first refusal:
        one Reservation per ask up to and including the refused one (the later asks are not
        tried).  Each ask is atomic against its own limit, as `reserve` is."""
        out = []
        for ask in asks:
            out.append(await self.reserve(*ask))
            if not out[-1].ok:
                break
        return out

    async def adjust_many(self, adjustments: Sequence[Adjustment]) -> list[int]:
        """`adjust` each in order, in one round trip; the totals, one per adjustment."""
        return [await self.adjust(*a) for a in adjustments]

    async def hit(self, key: str, window: float | None, amount: int = 1) -> int:
        """Count an occurrence; returns the total in the window including this one."""
        return (await self.reserve(key, amount, None, window)).spent_after

    @abstractmethod
    async def first_seen(self, key: str, ttl_s: float) -> bool:
        """True exactly once per key within `ttl_s` (across replicas)."""

    @abstractmethod
    async def push(self, key: str, item: str, *, keep: int, ttl_s: float) -> list[str]:
        """Prepend `item` to a list capped at `keep`; returns the items before it, newest first."""

    @abstractmethod
    async def remember(self, key: str, item: str, *, keep: int, ttl_s: float) -> list[str]:
        """Prepend `item` unless the list already holds it; returns the list afterwards,
        newest first (at most `keep` items)."""

    @abstractmethod
    async def recent(self, key: str) -> list[str]:
        """The list's items, newest first (empty when absent or expired)."""

    @abstractmethod
    async def setdefault(self, key: str, value: str, ttl_s: float) -> str:
        """Store `value` unless the key exists; returns the stored value."""

    async def aclose(self) -> None:
        return None


# ---------------------------------------------------------------------------- memory


class _Count:
    __slots__ = ("buckets", "expires", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.total = 0
        self.expires = 0.0

    def prune(self, oldest: int) -> None:
        buckets = self.buckets
        while buckets:
            first = next(iter(buckets))
            if first > oldest:
                return
            self.total -= buckets.pop(first)


class MemoryCounterStore(CounterStore):
    """In-process twin of the Redis store.  Atomic under asyncio: no method awaits between
    reading and writing.  Not shared between processes (see the module docstring)."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, idle_ttl_s: float = IDLE_TTL_S
    ) -> None:
        self._clock = clock
        self._idle_ttl = idle_ttl_s
        self._counts: dict[str, _Count] = {}
        self._values: dict[str, tuple[float, Any]] = {}
        self._writes = 0
        self._sweep_at = _SWEEP_EVERY

    def _count(self, key: str, window: float | None, now: float) -> tuple[_Count, int]:
        count = self._counts.get(key)
        if count is None or count.expires < now:
            count = self._counts[key] = _Count()
        if window is None:
            count.expires = now + self._idle_ttl
            return count, 0
        bucket = int(now // (window / BUCKETS))
        if count.buckets and next(iter(count.buckets)) <= bucket - BUCKETS:
            count.prune(bucket - BUCKETS)
        count.expires = now + 2 * window
        return count, bucket

    async def reserve(self, key: str, amount: int, limit: int | None, window: float | None) -> Reservation:
        now = self._clock()
        self._maybe_sweep(now)
        count, bucket = self._count(key, window, now)
        total = count.total
        if limit is not None and total + amount > limit:
            return Reservation(False, total, bucket)
        buckets = count.buckets
        buckets[bucket] = buckets.get(bucket, 0) + amount
        count.total = total = total + amount
        return Reservation(True, total, bucket)

    async def reserve_many(self, asks: Sequence[Ask]) -> list[Reservation]:
        now = self._clock()
        self._maybe_sweep(now, len(asks))
        counts, idle, new = self._counts, self._idle_ttl, tuple.__new__  # NamedTuple() costs twice
        out = []
        for key, amount, limit, window in asks:
            count = counts.get(key)  # self._count, inlined: this loop runs per budget rule
            if count is None or count.expires < now:
                count = counts[key] = _Count()
            if window is None:
                count.expires, bucket = now + idle, 0
            else:
                bucket = int(now // (window / BUCKETS))
                if count.buckets and next(iter(count.buckets)) <= bucket - BUCKETS:
                    count.prune(bucket - BUCKETS)
                count.expires = now + 2 * window
            total = count.total
            if limit is not None and total + amount > limit:
                out.append(new(Reservation, (False, total, bucket)))
                break
            buckets = count.buckets
            buckets[bucket] = buckets.get(bucket, 0) + amount
            count.total = total = total + amount
            out.append(new(Reservation, (True, total, bucket)))
        return out

    async def adjust_many(self, adjustments: Sequence[Adjustment]) -> list[int]:
        now = self._clock()
        counts, idle = self._counts, self._idle_ttl
        out = []
        for key, delta, window, bucket in adjustments:
            count = counts.get(key)  # self._count, inlined as in reserve_many
            if count is None or count.expires < now:
                count = counts[key] = _Count()
            if window is None:
                count.expires = now + idle  # no window: every bucket is live (bucket 0)
                live = True
            else:
                oldest = int(now // (window / BUCKETS)) - BUCKETS
                if count.buckets and next(iter(count.buckets)) <= oldest:
                    count.prune(oldest)
                count.expires = now + 2 * window
                live = bucket > oldest
            if live:
                buckets = count.buckets
                buckets[bucket] = buckets.get(bucket, 0) + delta
                count.total += delta
            out.append(count.total)
        return out

    async def hit(self, key: str, window: float | None, amount: int = 1) -> int:
        """`reserve` without a limit, minus the Reservation (loop detectors call it per rule)."""
        now = self._clock()
        self._writes += 1  # self._maybe_sweep(now), written out: one call per loop rule
        if self._writes >= self._sweep_at:
            self._sweep(now)
        count, bucket = self._count(key, window, now)
        buckets = count.buckets
        buckets[bucket] = buckets.get(bucket, 0) + amount
        count.total += amount
        return count.total

    async def adjust(self, key: str, delta: int, window: float | None, bucket: int) -> int:
        now = self._clock()
        count, current = self._count(key, window, now)
        if bucket > oldest_live(current, window):
            buckets = count.buckets
            buckets[bucket] = buckets.get(bucket, 0) + delta
            count.total += delta
        return count.total

    async def spent(self, key: str, window: float | None) -> int:
        now = self._clock()
        count = self._counts.get(key)
        if count is None or count.expires < now:
            return 0
        if window is not None and count.buckets:  # no window: nothing ever leaves it
            count.prune(int(now // (window / BUCKETS)) - BUCKETS)
        return count.total

    async def first_seen(self, key: str, ttl_s: float) -> bool:
        now = self._clock()
        if self._live(key, now) is not None:
            return False
        self._values[key] = (now + ttl_s, True)
        return True

    async def push(self, key: str, item: str, *, keep: int, ttl_s: float) -> list[str]:
        return self._push(key, item, keep, ttl_s, self._clock())

    async def remember(self, key: str, item: str, *, keep: int, ttl_s: float) -> list[str]:
        now = self._clock()
        items = self._live(key, now)
        if items is not None and item in items:
            return list(items)
        self._push(key, item, keep, ttl_s, now)
        return list(self._values[key][1])

    def _push(self, key: str, item: str, keep: int, ttl_s: float, now: float) -> list[str]:
        self._maybe_sweep(now)
        entry = self._values.get(key)
        if entry is None or entry[0] < now:
            items: deque[str] = deque(maxlen=keep)
            before = []
        else:
            items = entry[1]
            before = list(items)[: keep - 1]
        items.appendleft(item)
        self._values[key] = (now + ttl_s, items)
        return before

    async def recent(self, key: str) -> list[str]:
        items = self._live(key, self._clock())
        return list(items) if items is not None else []

    async def setdefault(self, key: str, value: str, ttl_s: float) -> str:
        now = self._clock()
        current = self._live(key, now)
        if current is not None:
            return str(current)
        self._values[key] = (now + ttl_s, value)
        return value

    def _live(self, key: str, now: float) -> Any:
        entry = self._values.get(key)
        if entry is None or entry[0] < now:
            return None
        return entry[1]

    def _maybe_sweep(self, now: float, writes: int = 1) -> None:
        """Drop expired keys once as many writes as there are keys (at least _SWEEP_EVERY)
        happened since the last sweep: O(1) per write amortised, however many keys are live
        (a sweep every 4096 writes cost ~1 µs per write at 100k keys), and since a write adds
        at most one key, memory stays under about twice the live keys."""
        self._writes += writes
        if self._writes >= self._sweep_at:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._writes = 0
        self._counts = {k: c for k, c in self._counts.items() if c.expires >= now}
        self._values = {k: v for k, v in self._values.items() if v[0] >= now}
        self._sweep_at = max(_SWEEP_EVERY, len(self._counts) + len(self._values))


# ---------------------------------------------------------------------------- redis

_RESERVE = """
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local oldest, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local flat = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #flat, 2 do
  if tonumber(flat[i]) <= oldest then redis.call('HDEL', KEYS[1], flat[i])
  else total = total + tonumber(flat[i + 1]) end
end
if limit >= 0 and total + amount > limit then return {0, total} end
redis.call('HINCRBY', KEYS[1], ARGV[3], amount)
redis.call('PEXPIRE', KEYS[1], ttl)
return {1, total + amount}
"""

_RESERVE_MANY = """
local out = {}
for k = 1, #KEYS do
  local a = (k - 1) * 5
  local amount, limit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local oldest = tonumber(ARGV[a + 4])
  local flat = redis.call('HGETALL', KEYS[k])
  local total = 0
  for i = 1, #flat, 2 do
    if tonumber(flat[i]) <= oldest then redis.call('HDEL', KEYS[k], flat[i])
    else total = total + tonumber(flat[i + 1]) end
  end
  if limit >= 0 and total + amount > limit then
    out[#out + 1] = 0
    out[#out + 1] = total
    return out
  end
  redis.call('HINCRBY', KEYS[k], ARGV[a + 3], amount)
  redis.call('PEXPIRE', KEYS[k], tonumber(ARGV[a + 5]))
  out[#out + 1] = 1
  out[#out + 1] = total + amount
end
return out
"""

_ADJUST_MANY = """
local out = {}
for k = 1, #KEYS do
  local a = (k - 1) * 3
  local delta, bucket, oldest = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  if bucket > oldest and redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('HINCRBY', KEYS[k], ARGV[a + 2], delta)
  end
  local flat = redis.call('HGETALL', KEYS[k])
  local total = 0
  for i = 1, #flat, 2 do
    if tonumber(flat[i]) > oldest then total = total + tonumber(flat[i + 1]) end
  end
  out[#out + 1] = total
end
return out
"""

_ADJUST = """
local delta, bucket, oldest = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if bucket > oldest and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[2], delta)
end
local flat = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #flat, 2 do
  if tonumber(flat[i]) > oldest then total = total + tonumber(flat[i + 1]) end
end
return total
"""

_REMEMBER = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
for _, v in ipairs(items) do
  if v == ARGV[1] then return items end
end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('LRANGE', KEYS[1], 0, -1)
"""

_PUSH = """
local before = redis.call('LRANGE', KEYS[1], 0, math.max(tonumber(ARGV[2]) - 2, 0))
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return before
"""

_SETDEFAULT = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class Outage:
    """Circuit breaker and log for one remote store.  Healthy: every call goes to Redis.  After
    a failure: calls raise StoreUnavailable at once until `probe_s` passed, then one call
    probes; a success closes the outage.  Logged once at the start (no traceback: an outage is
    expected, not a bug) and once at the end, with the count of calls it failed."""

    def __init__(self, *, probe_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log) -> None:
        self.probe_s = probe_s
        self.clock = clock
        self.down = False  # read on every call: one attribute test while healthy
        self.failures = 0  # calls failed since the store was created
        self._retry_at = 0.0
        self._log = FailureLog(logger, "Redis (shared guard state)", traceback=False, first_s=math.inf,
                               hint="each rule now applies its on_store_error (allow by default) until it answers")

    def check(self) -> None:
        """While down and before the next probe: raise without touching the network."""
        now = self.clock()
        if now < self._retry_at:
            self.failures += 1
            self._log.count += 1
            raise StoreUnavailable("Redis is unreachable (waiting before the next attempt)")
        self._retry_at = now + self.probe_s  # this call probes; concurrent ones fail fast

    def failed(self, exc: BaseException) -> StoreUnavailable:
        self.failures += 1
        self.down = True
        self._retry_at = self.clock() + self.probe_s
        self._log.failed(exc)
        return StoreUnavailable(f"Redis is unreachable: {type(exc).__name__}: {exc}")

    def recovered(self) -> None:
        self.down = False
        self._retry_at = 0.0
        self._log.succeeded()


P = ParamSpec("P")
T = TypeVar("T")


def _shielded(
    method: Callable[Concatenate[RedisCounterStore, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[RedisCounterStore, P], Coroutine[Any, Any, T]]:
    """Redis failures become StoreUnavailable, through the store's Outage."""

    @functools.wraps(method)
    async def run(self: RedisCounterStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        outage = self.outage
        if outage.down:
            outage.check()
        try:
            result = await method(self, *args, **kwargs)
        except _FAILURES as exc:
            raise outage.failed(exc) from exc
        if outage.down:
            outage.recovered()
        return result

    return run


class RedisCounterStore(CounterStore):
    """Counters shared by every replica.  One round trip per method (a Lua script or a
    MULTI pipeline).  Keys are `{prefix}{key}`; the prefix defaults to `interlock:`.  Every
    method raises StoreUnavailable when Redis does not answer (see Outage)."""

    remote = True

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "interlock:",
        clock: Callable[[], float] = time.time,
        idle_ttl_s: float = IDLE_TTL_S,
        outage: Outage | None = None,
    ) -> None:
        self._r = client
        self.outage = outage if outage is not None else Outage()
        self._prefix = prefix
        self._clock = clock
        self._idle_ttl = idle_ttl_s
        self._reserve = client.register_script(_RESERVE)
        self._adjust = client.register_script(_ADJUST)
        self._reserve_many = client.register_script(_RESERVE_MANY)
        self._adjust_many = client.register_script(_ADJUST_MANY)
        self._setdefault = client.register_script(_SETDEFAULT)
        self._remember = client.register_script(_REMEMBER)
        self._push = client.register_script(_PUSH)

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.5, **kwargs: Any) -> RedisCounterStore:
        """`timeout_s` bounds connecting and each command; one immediate retry (a pooled
        connection Redis closed), none with backoff: redis-py's default retries for
        seconds, while the request waits."""
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = Redis.from_url(url, decode_responses=True, socket_timeout=timeout_s,
                                socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 1))
        return cls(client, **kwargs)

    def _ttl_ms(self, window: float | None) -> int:
        return _ms(self._idle_ttl if window is None else 2 * window)

    @_shielded
    async def reserve(self, key: str, amount: int, limit: int | None, window: float | None) -> Reservation:
        bucket = bucket_of(self._clock(), window)
        args = [
            amount,
            -1 if limit is None else limit,
            bucket,
            oldest_live(bucket, window),
            self._ttl_ms(window),
        ]
        ok, total = await self._reserve(keys=[self._prefix + key], args=args)
        return Reservation(bool(ok), int(total), bucket)

    @_shielded
    async def adjust(self, key: str, delta: int, window: float | None, bucket: int) -> int:
        oldest = oldest_live(bucket_of(self._clock(), window), window)
        return int(await self._adjust(keys=[self._prefix + key], args=[delta, bucket, oldest]))

    @_shielded
    async def reserve_many(self, asks: Sequence[Ask]) -> list[Reservation]:
        """One Lua script over every key: the asks are tried in order, atomically together."""
        if not asks:
            return []
        now = self._clock()
        keys: list[str] = []
        args: list[int | float] = []
        buckets: list[int] = []
        for key, amount, limit, window in asks:
            bucket = bucket_of(now, window)
            keys.append(self._prefix + key)
            buckets.append(bucket)
            args += (
                amount,
                -1 if limit is None else limit,
                bucket,
                oldest_live(bucket, window),
                self._ttl_ms(window),
            )
        flat = await self._reserve_many(keys=keys, args=args)
        return [Reservation(bool(flat[i]), int(flat[i + 1]), buckets[i // 2]) for i in range(0, len(flat), 2)]

    @_shielded
    async def adjust_many(self, adjustments: Sequence[Adjustment]) -> list[int]:
        if not adjustments:
            return []
        now = self._clock()
        keys: list[str] = []
        args: list[int] = []
        for key, delta, window, bucket in adjustments:
            keys.append(self._prefix + key)
            args += (delta, bucket, oldest_live(bucket_of(now, window), window))
        return [int(total) for total in await self._adjust_many(keys=keys, args=args)]

    @_shielded
    async def spent(self, key: str, window: float | None) -> int:
        oldest = oldest_live(bucket_of(self._clock(), window), window)
        flat = await self._r.hgetall(self._prefix + key)
        return sum(int(v) for b, v in flat.items() if int(b) > oldest)

    @_shielded
    async def first_seen(self, key: str, ttl_s: float) -> bool:
        return bool(await self._r.set(self._prefix + key, "1", nx=True, px=_ms(ttl_s)))

    @_shielded
    async def push(self, key: str, item: str, *, keep: int, ttl_s: float) -> list[str]:
        # one script, not a MULTI pipeline: the same atomic step at half the client CPU
        before = await self._push(keys=[self._prefix + key], args=[item, keep, _ms(ttl_s)])
        return list(before)[: keep - 1]

    @_shielded
    async def remember(self, key: str, item: str, *, keep: int, ttl_s: float) -> list[str]:
        return list(await self._remember(keys=[self._prefix + key], args=[item, keep, _ms(ttl_s)]))

    @_shielded
    async def recent(self, key: str) -> list[str]:
        return list(await self._r.lrange(self._prefix + key, 0, -1))

    @_shielded
    async def setdefault(self, key: str, value: str, ttl_s: float) -> str:
        return str(await self._setdefault(keys=[self._prefix + key], args=[value, _ms(ttl_s)]))

    @_shielded
    async def ping(self) -> None:
        await self._r.ping()

    async def aclose(self) -> None:
        await self._r.aclose()


async def make_counter_store(redis_url: str | None, **kwargs: Any) -> CounterStore:
    """Redis-backed when a URL is configured (shared by every replica), else in-process
    (per-replica counts).  An unreachable Redis is logged (once, by the store's Outage), not
    fatal: each rule applies its `on_store_error` until Redis answers."""
    if not redis_url:
        log.info("guard counters are in-process: budgets and loop windows are per replica")
        return MemoryCounterStore()
    store = RedisCounterStore.from_url(redis_url, **kwargs)
    try:
        await store.ping()
    except StoreUnavailable:
        pass  # logged by the store
    return store
