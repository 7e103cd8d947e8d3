"""One graph per deployment, whatever the replica count: a single owner links every call.

    replica A ──┐ answered call: send() ─▶ sender task ─XADD─▶ ┌──────────────────────────┐
    replica B ──┤ new request:  place() ─▶ (same queue) ─XADD─▶ │ log (one Redis Stream)    │
                │                                             └────────────┬─────────────┘
                │                                                          │ XREAD, in order
                │                    owner (whoever holds the lease) ◀─────┘
                │                      place: RunResolver.resolve ──▶ reply list re:<call id>
                │                      done:  note_response, Linker.observe, totals
                └◀── listener task ◀── links:<process id> ◀── LinkResult + edge/total rows

Each process runs a GraphClient (its calls go out, its answers come back into its own
Pipeline, which writes the call row linked, as in one process) and a GraphOwner (a loop that
tries to take the lease; only the holder reads the log).  One linker, one index, one order:
the graphs of 1 and of N processes are the same by construction.

Request path: `place` waits at most `place_timeout_s` for the owner (then the call goes
unplaced, counted in `place_timeouts`; the owner still links it).  Redis unreachable: calls
are linked by the process's own linker (`linked_local`), placement is local; logged once.
A new owner (the old one died, its lease expired) replays the log it kept up to the last
position the old one finished, without answering, to rebuild the lineage index; then goes on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from proxy.aggregates import Aggregates
from proxy.call import Call
from proxy.failures import FailureLog
from proxy.graph.bus import Entry, GraphBus
from proxy.graph.linker import LINKABLE, Linker
from proxy.graph.model import LinkResult
from proxy.graph.runs import RunResolver
from proxy.graph.wire import call_dict, call_of, dumps, link_dict, link_of, loads
from proxy.pipeline import link_rows
from proxy.store.rows import Record

log = logging.getLogger("interlock.graph")


class LinkSink(Protocol):
    """Where a process's answers go (its Pipeline)."""

    def linked(self, call_id: str, link: LinkResult | None, rows: Record, agg: Record) -> None: ...

    def link_locally(self, call: Call) -> None: ...


def process_id() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


class GraphClient:
    """Every process: sends its answered calls and placement requests to the log, in one order,
    and hands the owner's answers to its pipeline.  `send` and `place` never raise."""

    def __init__(self, bus: GraphBus, *, me: str, place_timeout_s: float = 0.05, max_outbox: int = 100_000,
                 retry_s: float = 5.0) -> None:
        self.bus = bus
        self.me = me
        self.sink: LinkSink | None = None  # the pipeline, set once built
        self.place_timeout_s = place_timeout_s
        self.max_outbox = max_outbox
        self.retry_s = retry_s
        self._outbox: collections.deque[Call | bytes] = collections.deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._down_until = 0.0
        self.failures = FailureLog(log, "graph bus (Redis)", traceback=False,
                                   hint="linking locally: the graph may split across replicas until it is back")
        self.sent = 0
        self.send_failures = 0
        self.placed = 0
        self.place_timeouts = 0
        self.place_failures = 0

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send_loop(), name="interlock-graph-send"),
                       asyncio.create_task(self._listen(), name="interlock-graph-listen")]

    def send(self, call: Call) -> None:
        if self.sink is None or self.down or len(self._outbox) >= self.max_outbox:
            if self.sink is not None:
                self.send_failures += 1
                self.sink.link_locally(call)
            return
        self._outbox.append(call)
        self._wake.set()

    async def place(self, call: Call) -> dict[str, Any] | None:
        """The owner's {"a": agent, "r": run} for a request, or None (timed out, or bus down)."""
        if self.down:
            self.place_failures += 1
            return None
        key = f"re:{call.id}"
        self._outbox.append(dumps({"k": "p", "o": self.me, "r": key, "c": call_dict(call)}))
        self._wake.set()
        try:
            got = await self.bus.pop(key, 1, self.place_timeout_s)
        except Exception as exc:
            self._failed(exc)
            self.place_failures += 1
            return None
        if not got:
            self.place_timeouts += 1
            return None
        self.placed += 1
        answer: dict[str, Any] = loads(got[0])
        return answer

    def rename(self, old: str, new: str, *, merge: bool) -> None:
        """An agent renamed (or merged) through the API: the owner's directory follows, in order."""
        self._outbox.append(dumps({"k": "n", "o": self.me, "old": old, "new": new, "merge": merge}))
        self._wake.set()

    def _failed(self, exc: BaseException) -> None:
        self.failures.failed(exc)
        self._down_until = time.monotonic() + self.retry_s

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(256, len(self._outbox)))]
                payloads = [item if isinstance(item, bytes) else _done(self.me, item) for item in batch]
                try:
                    await self.bus.append(payloads)
                except Exception as exc:
                    self._failed(exc)
                    self._fall_back(batch)
                    continue
                self.failures.succeeded()
                self.sent += len(batch)

    def _fall_back(self, batch: list[Call | bytes]) -> None:
        for item in batch:
            if isinstance(item, Call) and self.sink is not None:
                self.send_failures += 1
                self.sink.link_locally(item)

    async def _listen(self) -> None:
        key = f"links:{self.me}"
        while True:
            try:
                items = await self.bus.pop(key, 512, 1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(1.0)
                continue
            for raw in items:
                self._deliver(raw)

    def _deliver(self, raw: bytes) -> None:
        try:
            d = loads(raw)
            link = link_of(d["l"]) if d.get("l") else None
            rows, agg = Record.from_json(d.get("r") or {}), Record.from_json(d.get("t") or {})
        except Exception:
            log.exception("graph owner sent an unreadable answer")
            return
        if self.sink is not None:
            self.sink.linked(d["id"], link, rows, agg)

    async def flush(self, within_s: float = 1.0) -> None:
        """Shutting down: let what is queued go out (polls: the sender has no completion event)."""
        until = time.monotonic() + within_s
        self._wake.set()
        while self._outbox and not self.down and time.monotonic() < until:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a Redis command cancelled mid-block may not unwind promptly
            await asyncio.wait(self._tasks, timeout=2.0)


def _done(me: str, call: Call) -> bytes:
    return dumps({"k": "d", "o": me, "c": call_dict(call)})


class GraphOwner:
    """Every process runs one; the lease holder reads the log and links.  Its linker, resolver
    and totals are used by nothing else.  `submit` writes the rows of runs closed for idleness."""

    def __init__(self, bus: GraphBus, *, me: str, linker: Linker, resolver: RunResolver,
                 submit: Callable[[Record], None], lease_ms: int = 5000, batch: int = 64,
                 close_every_s: float = 5.0, reply_ttl_s: float = 60.0) -> None:
        self.bus = bus
        self.me = me
        self.linker = linker
        self.resolver = resolver
        self.totals = Aggregates()
        self.submit = submit
        self.lease_ms = lease_ms
        self.batch = batch
        self.close_every_s = close_every_s
        self.reply_ttl_s = reply_ttl_s
        self.leading = False
        self.pos = "0"
        self._renewed = 0.0
        self._pos_saved = 0.0
        self._saved = "0"
        self._next_close = time.monotonic() + close_every_s
        self._task: asyncio.Task[None] | None = None
        self.failures = FailureLog(log, "graph owner's log (Redis)", traceback=False,
                                   hint="retrying; calls are answered once it is back")
        self.linked = 0
        self.replayed = 0
        self.bad_entries = 0
        self.lag_s = 0.0  # age of the last linked call's answer when it was linked

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="interlock-graph-owner")

    async def _run(self) -> None:
        while True:
            try:
                if not await self._hold():
                    await asyncio.sleep(self.lease_ms / 3000)
                    continue
                entries = await self.bus.read(self.pos, self.batch, min(200, self.lease_ms // 3))
                if entries:
                    await self._handle(entries, answer=True)
                await self._save_pos(every_s=0.1 if entries else 0.0)
                if time.monotonic() >= self._next_close:
                    self._close_idle()
                self.failures.succeeded()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures.failed(exc)
                self.leading = False
                await asyncio.sleep(0.5)

    async def _save_pos(self, every_s: float) -> None:
        """Where a successor resumes: saved at most every `every_s` while busy, at once when idle
        (a successor that found an older position would answer some calls twice)."""
        now = time.monotonic()
        if self.pos != self._saved and now >= self._pos_saved + every_s:
            self._pos_saved, self._saved = now, self.pos
            await self.bus.set("pos", self.pos.encode())

    async def _hold(self) -> bool:
        now = time.monotonic()
        if self.leading and now - self._renewed < self.lease_ms / 3000:
            return True
        held = await self.bus.lead(self.me, self.lease_ms)
        self._renewed = now
        if held and not self.leading:
            await self._take_over()
        self.leading = held
        return held

    async def _take_over(self) -> None:
        """Rebuild the lineage index from the kept log up to where the last owner finished."""
        saved = await self.bus.get("pos")
        self.pos = "0"
        if saved is None:
            return
        end = _id_key(saved.decode())
        while True:
            entries = [e for e in await self.bus.read(self.pos, 512, 0) if _id_key(e[0]) <= end]
            if not entries:
                break
            await self._handle(entries, answer=False)
            self.replayed += len(entries)
            await asyncio.sleep(0)
        self.pos = self._saved = saved.decode()
        log.info("graph owner %s took over at %s (%d calls replayed)", self.me, self.pos, self.replayed)

    async def _handle(self, entries: list[Entry], *, answer: bool) -> None:
        replies: dict[str, list[bytes]] = collections.defaultdict(list)
        places: dict[str, bytes] = {}
        for entry_id, raw in entries:
            self.pos = entry_id
            try:
                d = loads(raw)
                if d["k"] == "n":  # an agent renamed or merged through the API, in log order
                    self._rename(d)
                    continue
                call = call_of(d["c"])
            except Exception:
                self.bad_entries += 1
                log.exception("unreadable graph log entry %s", entry_id)
                continue
            if d["k"] == "p":
                if answer:
                    places[d["r"]] = dumps(self._place(call))
                continue
            try:
                reply = self._link(call)
            except Exception:  # one bad call must not stall the log: answered unlinked
                log.exception("graph owner could not link call %s", call.id)
                reply = dumps({"id": call.id, "l": None})
            if answer:
                replies[f"links:{d['o']}"].append(reply)
        if places or replies:  # one round trip for the batch's answers
            await self.bus.push_many([(key, [p], 5.0) for key, p in places.items()]
                                     + [(key, ps, self.reply_ttl_s) for key, ps in replies.items()])

    def _rename(self, d: dict[str, Any]) -> None:
        directory = self.linker.directory
        (directory.merge if d.get("merge") else directory.rename)(d["old"], d["new"])

    def _place(self, call: Call) -> dict[str, Any]:
        """The request path's answer; never raises (a failure answers 'no run', as one process would)."""
        try:
            return self._resolve(call)
        except Exception:
            log.exception("graph owner could not place call %s", call.id)
            return {"a": call.agent, "s": call.agent_source, "r": None}

    def _resolve(self, call: Call) -> dict[str, Any]:
        if call.agent is None:
            call.agent, call.agent_source = self.resolver.resolve_agent(call), "inferred"
        return {"a": call.agent, "s": call.agent_source, "r": self.resolver.resolve_run(call)}

    def _link(self, call: Call) -> bytes:
        if call.outcome == "ok":
            self.resolver.note_response(call)
        try:
            link: LinkResult | None = self.linker.observe(call)
        except Exception:
            log.exception("graph linking failed for call %s", call.id)
            link = None
        self.linked += 1
        self.lag_s = max(0.0, time.time() - (call.ended_at or call.started_at))
        if link is None:
            return dumps({"id": call.id, "l": None})
        rows, agg = link_rows(self.totals, call, link)
        return dumps({"id": call.id, "l": link_dict(link), "r": rows.to_json(), "t": agg.to_json()})

    def _close_idle(self) -> None:
        self._next_close = time.monotonic() + self.close_every_s
        closed = self.linker.close_idle()
        rows = [r for r in (self.totals.close(run_id) for run_id in closed) if r is not None]
        if rows:
            self.submit(Record(runs=rows))

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=2.0)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class SharedRunResolver:
    """The request path's RunResolving when the graph is shared: the owner places (agent and
    run, exactly as one process would); on a timeout or with the bus down, the local resolver."""

    def __init__(self, local: RunResolver, client: GraphClient) -> None:
        self.local = local
        self.client = client

    async def resolve(self, call: Call) -> None:
        if call.run_id is not None or call.run_hint or call.operation not in LINKABLE:
            await self.local.resolve(call)
            return
        answer = await self.client.place(call)
        if answer is None:
            await self.local.resolve(call)
            return
        if call.agent is None:
            call.agent, call.agent_source = answer["a"], answer.get("s") or "inferred"
        call.run_id = answer["r"]

    def resolve_agent(self, call: Call) -> str:
        return self.local.resolve_agent(call)

    def resolve_run(self, call: Call) -> str | None:
        return self.local.resolve_run(call)

    def note_response(self, call: Call) -> None:
        if self.client.down:  # the owner notes it when it reads the answered call
            self.local.note_response(call)
