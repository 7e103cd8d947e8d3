"""The graph's one I/O edge across processes: an ordered log, reply lists and a lease.

    every process ──append──▶ [log: finished calls and placement requests, in arrival order]
                                        │ read (the lease holder only)
                                        ▼
                                   graph owner ──push──▶ [reply list of the asking process]
                                        ▲                          │ pop
    lead(me, ttl): the owner's lease (SET NX PX, renewed); whoever holds it reads the log

RedisGraphBus keeps the log in one Redis Stream (XADD MAXLEN ~), replies in lists that expire,
the lease in a key; MemoryGraphBus is its in-process twin for tests.  Every method may raise
(the Redis client's ConnectionError, TimeoutError): callers count and fall back.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Protocol

Entry = tuple[str, bytes]  # (log id, payload)


class GraphBus(Protocol):
    async def append(self, payloads: list[bytes]) -> None:
        """Add payloads to the end of the log, in order (one round trip)."""

    async def read(self, after: str, count: int, block_ms: int) -> list[Entry]:
        """Up to `count` entries after id `after` ("0": from the oldest kept), waiting up to block_ms."""

    async def push(self, key: str, payloads: list[bytes], ttl_s: float) -> None:
        """Append to reply list `key`, which expires ttl_s after the last push."""

    async def push_many(self, lists: list[tuple[str, list[bytes], float]]) -> None:
        """Several pushes (key, payloads, ttl_s) in one round trip."""

    async def pop(self, key: str, count: int, timeout_s: float) -> list[bytes]:
        """Up to `count` replies from list `key`, waiting up to timeout_s for the first."""

    async def lead(self, me: str, ttl_ms: int) -> bool:
        """Take or renew the owner's lease; True while `me` holds it."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def aclose(self) -> None: ...


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""


class RedisGraphBus:
    """The log as a Redis Stream `{prefix}:log`; `key` arguments are prefixed the same way."""

    def __init__(self, client: Any, *, prefix: str = "interlock:graph", max_len: int = 200_000) -> None:
        self.client = client
        self.prefix = prefix
        self.max_len = max_len
        self.log = f"{prefix}:log"
        self._renew = client.register_script(_RENEW)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisGraphBus:
        import redis.asyncio as aioredis

        client = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=5.0, health_check_interval=30)
        return cls(client, **kwargs)

    async def append(self, payloads: list[bytes]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for p in payloads:
                pipe.xadd(self.log, {"m": p}, maxlen=self.max_len, approximate=True)
            await pipe.execute()

    async def read(self, after: str, count: int, block_ms: int) -> list[Entry]:
        got = await self.client.xread({self.log: after}, count=count, block=block_ms or None)
        if not got:
            return []
        return [(_text(i), f[b"m"]) for i, f in got[0][1]]

    async def push(self, key: str, payloads: list[bytes], ttl_s: float) -> None:
        await self.push_many([(key, payloads, ttl_s)])

    async def push_many(self, lists: list[tuple[str, list[bytes], float]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for key, payloads, ttl_s in lists:
                full = f"{self.prefix}:{key}"
                pipe.rpush(full, *payloads)
                pipe.pexpire(full, int(ttl_s * 1000))
            await pipe.execute()

    async def pop(self, key: str, count: int, timeout_s: float) -> list[bytes]:
        got = await self.client.blmpop(timeout_s, 1, f"{self.prefix}:{key}", direction="LEFT", count=count)
        return list(got[1]) if got else []  # BLMPOP (Redis 7): the first reply and what followed, one trip

    async def lead(self, me: str, ttl_ms: int) -> bool:
        return bool(await self._renew(keys=[f"{self.prefix}:owner"], args=[me, ttl_ms]))

    async def get(self, key: str) -> bytes | None:
        value: bytes | None = await self.client.get(f"{self.prefix}:{key}")
        return value

    async def set(self, key: str, value: bytes) -> None:
        await self.client.set(f"{self.prefix}:{key}", value)

    async def aclose(self) -> None:
        await self.client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class MemoryGraphBus:
    """RedisGraphBus's twin in one process (tests): share one instance between runtimes."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.lists: dict[str, collections.deque[bytes]] = collections.defaultdict(collections.deque)
        self.values: dict[str, bytes] = {}
        self.owner: tuple[str, float] | None = None
        self._seq = 0
        self._changed = asyncio.Event()
        self.down = False  # set to make every call fail, as an unreachable Redis does

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("graph bus down")

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def append(self, payloads: list[bytes]) -> None:
        self._check()
        for p in payloads:
            self._seq += 1
            self.entries.append((f"0-{self._seq}", p))
        self._wake()

    async def read(self, after: str, count: int, block_ms: int) -> list[Entry]:
        self._check()
        seq = int(after.split("-")[-1])
        if seq >= self._seq and block_ms:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), block_ms / 1000)
            except TimeoutError:
                return []
        return [e for e in self.entries if int(e[0].split("-")[1]) > seq][:count]

    async def push(self, key: str, payloads: list[bytes], ttl_s: float) -> None:
        await self.push_many([(key, payloads, ttl_s)])

    async def push_many(self, lists: list[tuple[str, list[bytes], float]]) -> None:
        self._check()
        for key, payloads, _ in lists:
            self.lists[key].extend(payloads)
        self._wake()

    async def pop(self, key: str, count: int, timeout_s: float) -> list[bytes]:
        self._check()
        deadline = time.monotonic() + timeout_s
        while not self.lists[key]:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                return []
        q = self.lists[key]
        return [q.popleft() for _ in range(min(count, len(q)))]

    async def lead(self, me: str, ttl_ms: int) -> bool:
        self._check()
        now = time.monotonic()
        if self.owner is None or self.owner[0] == me or self.owner[1] < now:
            self.owner = (me, now + ttl_ms / 1000)
            return True
        return False

    async def get(self, key: str) -> bytes | None:
        self._check()
        return self.values.get(key)

    async def set(self, key: str, value: bytes) -> None:
        self._check()
        self.values[key] = value

    async def aclose(self) -> None:
        return None
