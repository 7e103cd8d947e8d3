"""The linker's memory, behind a seam so several replicas can share one (Redis) later.

    LineageIndex (protocol)                      MemoryLineageIndex (in-process twin)
    ├─ refs      key → Ref                       OrderedDict, LRU + TTL
    │            h:<head> i:<input> r:<resp> t:<tool call>
    ├─ postings  shingle hash → call ids         dict; a hash posted by more than `df_max`
    │            (+ CallRecord per call)         live calls is boilerplate and never matches
    ├─ runs      run id → RunState, seen inputs  LRU + TTL; open runs closed by idle time;
    │            merged run → its root           (union-find when lineage joins two runs)
    ├─ threads   thread id → source call ids     LRU
    └─ names     display name → owner            (NameClaims for AgentDirectory)

Every method may be a network round trip in a shared backend, so the linker batches: per
observed call it makes a handful of calls, each with all its keys.  Writes are additive
(put, add, touch) so two replicas writing the same run merge instead of overwriting:
a Redis backend maps them to SET/MGET, SADD/SMISMEMBER and ZADD on a last-seen sorted set.
Time is event time (the calls' own timestamps), so replaying traffic evicts the same way.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from proxy.graph.model import CallRecord, Ref, RunState
from proxy.lru import LRU


class LineageIndex(Protocol):
    """Shared state of the linker.  Called from the linker (background task, one call at a
    time per replica) and from RunResolver (request path: `get_refs` and `get_run` only,
    which must therefore answer in microseconds — a shared backend keeps a local cache)."""

    def get_refs(self, keys: Sequence[str]) -> list[Ref | None]:
        """The Ref stored under each key (None where absent), in key order."""
        ...

    def put_refs(self, refs: Mapping[str, Ref]) -> None: ...

    def lookup(self, hashes: Collection[int]) -> dict[int, tuple[str, ...]]:
        """For each hash posted by live calls: those calls.  Boilerplate hashes (posted by
        more than df_max calls) and unknown hashes are left out."""
        ...

    def get_calls(self, call_ids: Collection[str]) -> dict[str, CallRecord]: ...

    def add_call(self, record: CallRecord) -> None:
        """Store the record and post its fingerprints."""
        ...

    def get_run(self, run_id: str) -> RunState | None:
        """The run (or the root it was merged into), None when unknown or evicted."""
        ...

    def touch_run(
        self,
        run_id: str,
        *,
        started_at: float,
        ended_at: float,
        pairs: Iterable[tuple[str, str]] = (),
        explicit: bool = False,
    ) -> None:
        """Create or extend a run: last_seen = max(last_seen, ended_at); add handoff pairs."""
        ...

    def merge_runs(self, root: str, others: Collection[str]) -> RunState:
        """Union-find: fold `others` into `root`; any later read of one of them answers root."""
        ...

    def close_idle_runs(self, idle_before: float) -> list[str]:
        """Close every open run last seen before `idle_before`; return their ids."""
        ...

    def run_seen(self, run_id: str, hashes: Collection[int]) -> set[int]:
        """Which of `hashes` were already seen as input in the run."""
        ...

    def add_run_seen(self, run_id: str, hashes: Iterable[int]) -> None: ...

    def thread_sources(self, thread_ids: Collection[str]) -> dict[str, frozenset[str]]:
        """Calls that fed each thread (edge sources into any of its calls)."""
        ...

    def add_thread_sources(self, thread_id: str, call_ids: Iterable[str]) -> None: ...

    def claim_name(self, name: str, owner: str) -> str: ...


@dataclass(slots=True)
class _Run:
    started_at: float
    last_seen: float
    closed: bool = False
    explicit: bool = False
    pairs: set[tuple[str, str]] = field(default_factory=set)
    seen: set[int] | frozenset[int] = frozenset()  # frozen: shared with the caller, copied on write

    def state(self, run_id: str) -> RunState:
        return RunState(
            run_id, self.started_at, self.last_seen, self.closed, frozenset(self.pairs), self.explicit
        )


class MemoryLineageIndex:
    """In-process LineageIndex bounded by entry counts and by `ttl_s` of event time.

    About 4.5 KB per live call (mostly output fingerprints and their postings): the default
    20k calls is ~90 MB at most.  Lineage only needs outputs that can still be handed on,
    so `ttl_s` a little longer than your longest run is enough."""

    def __init__(
        self,
        *,
        max_calls: int = 20_000,
        ttl_s: float = 2 * 3600.0,
        df_max: int = 8,
        max_thread_sources: int = 64,
        max_run_seen: int = 50_000,
    ) -> None:
        self.max_calls = max_calls
        self.ttl_s = ttl_s
        self.df_max = df_max
        self._max_refs = 4 * max_calls
        self._max_runs = max(1000, max_calls // 4)
        self._max_thread_sources = max_thread_sources
        self._max_run_seen = max_run_seen
        self._now = 0.0
        self._refs: LRU[str, Ref] = LRU()
        self._calls: LRU[str, CallRecord] = LRU()
        self._post: dict[int, str | list[str]] = {}
        self._runs: LRU[str, _Run] = LRU()
        self._open: dict[str, None] = {}
        self._alias: LRU[str, str] = LRU()
        self._threads: LRU[str, set[str]] = LRU()
        self._names: dict[str, str] = {}

    # ------------------------------------------------------------------ refs

    def get_refs(self, keys: Sequence[str]) -> list[Ref | None]:
        get = self._refs.get
        return [get(k) for k in keys]

    def put_refs(self, refs: Mapping[str, Ref]) -> None:
        put = self._refs.put
        for key, ref in refs.items():
            put(key, ref)
            self._tick(ref.ended_at)
        self._evict_refs()

    def _evict_refs(self) -> None:
        horizon = self._now - self.ttl_s
        self._refs.evict(self._max_refs, lambda ref: ref.ended_at < horizon)

    # ------------------------------------------------------------------ postings

    def lookup(self, hashes: Collection[int]) -> dict[int, tuple[str, ...]]:
        post, cap = self._post, self.df_max
        out: dict[int, tuple[str, ...]] = {}
        for h in post.keys() & hashes:
            v = post[h]
            if isinstance(v, str):
                out[h] = (v,)
            elif len(v) <= cap:
                out[h] = tuple(v)
        return out

    def get_calls(self, call_ids: Collection[str]) -> dict[str, CallRecord]:
        calls = self._calls
        found = {cid: calls[cid] for cid in call_ids if cid in calls}
        for cid in found:
            calls.move_to_end(cid)
        return found

    def add_call(self, record: CallRecord) -> None:
        self._tick(record.ended_at)
        if record.call_id in self._calls:
            self._unpost(self._calls.pop(record.call_id))
        self._calls[record.call_id] = record
        self._post_fps(record)
        self._evict_calls()

    def _post_fps(self, record: CallRecord) -> None:
        post, cid, cap = self._post, record.call_id, self.df_max
        for h in set(record.fps):
            v = post.get(h)
            if v is None:
                post[h] = cid
            elif isinstance(v, str):
                post[h] = [v, cid]
            elif len(v) <= cap:
                v.append(cid)

    def _unpost(self, record: CallRecord) -> None:
        post, cid = self._post, record.call_id
        for h in set(record.fps):
            v = post.get(h)
            if v == cid:
                del post[h]
            elif isinstance(v, list) and cid in v:
                v.remove(cid)
                if len(v) == 1:
                    post[h] = v[0]

    def _evict_calls(self) -> None:
        horizon = self._now - self.ttl_s
        for _, record in self._calls.evict(self.max_calls, lambda record: record.ended_at < horizon):
            self._unpost(record)

    # ------------------------------------------------------------------ runs

    def _root(self, run_id: str) -> str:
        seen = {run_id}
        while (nxt := self._alias.get(run_id)) is not None and nxt not in seen:
            seen.add(nxt)
            run_id = nxt
        return run_id

    def get_run(self, run_id: str) -> RunState | None:
        root = self._root(run_id)
        run = self._runs.get(root)
        return run.state(root) if run is not None else None

    def touch_run(
        self,
        run_id: str,
        *,
        started_at: float,
        ended_at: float,
        pairs: Iterable[tuple[str, str]] = (),
        explicit: bool = False,
    ) -> None:
        self._tick(ended_at)
        run_id = self._root(run_id)
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = _Run(started_at, ended_at, explicit=explicit)
            self._open[run_id] = None
        run.last_seen = max(run.last_seen, ended_at)
        new = frozenset(pairs) - run.pairs
        if new:
            run.pairs |= new
        self._runs.move_to_end(run_id)
        self._evict_runs()

    def merge_runs(self, root: str, others: Collection[str]) -> RunState:
        root = self._root(root)
        into = self._runs[root]
        for other in {self._root(o) for o in others} - {root}:
            run = self._runs.pop(other, None)
            self._open.pop(other, None)
            self._alias[other] = root
            if run is not None:
                into.started_at = min(into.started_at, run.started_at)
                into.last_seen = max(into.last_seen, run.last_seen)
                into.pairs = into.pairs | run.pairs
                into.seen |= run.seen
        self._alias.evict(self._max_runs)
        return into.state(root)

    def close_idle_runs(self, idle_before: float) -> list[str]:
        closed = [rid for rid in self._open if self._runs[rid].last_seen < idle_before]
        for rid in closed:
            self._runs[rid].closed = True
            del self._open[rid]
        return closed

    def run_seen(self, run_id: str, hashes: Collection[int]) -> set[int]:
        run = self._runs.get(self._root(run_id))
        return set(hashes) & run.seen if run is not None else set()

    def add_run_seen(self, run_id: str, hashes: Iterable[int]) -> None:
        """A frozenset given to a run that has seen nothing yet is kept as it is, not copied:
        the same big message opening many runs (one-shot calls) is held once."""
        run = self._runs.get(self._root(run_id))
        if run is None or len(run.seen) >= self._max_run_seen:
            return
        if isinstance(run.seen, frozenset):
            if not run.seen and isinstance(hashes, frozenset):
                run.seen = hashes
                return
            run.seen = set(run.seen)
        run.seen.update(hashes)

    def _evict_runs(self) -> None:
        horizon = self._now - self.ttl_s
        for rid, _ in self._runs.evict(self._max_runs, lambda run: run.last_seen < horizon):
            self._open.pop(rid, None)

    # ------------------------------------------------------------------ threads and names

    def thread_sources(self, thread_ids: Collection[str]) -> dict[str, frozenset[str]]:
        threads = self._threads
        return {t: frozenset(threads[t]) for t in thread_ids if t in threads}

    def add_thread_sources(self, thread_id: str, call_ids: Iterable[str]) -> None:
        sources = self._threads.touch(thread_id, set)
        for cid in call_ids:
            if len(sources) < self._max_thread_sources:
                sources.add(cid)
        self._threads.evict(self.max_calls)

    def claim_name(self, name: str, owner: str) -> str:
        return self._names.setdefault(name, owner)

    # ------------------------------------------------------------------ housekeeping

    def _tick(self, t: float) -> None:
        if t > self._now:
            self._now = t

    def stats(self) -> dict[str, int]:
        return {
            "refs": len(self._refs),
            "calls": len(self._calls),
            "postings": len(self._post),
            "runs": len(self._runs),
            "threads": len(self._threads),
        }
