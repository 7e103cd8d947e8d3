"""Running totals for the `runs` and `agents` tables, kept by the pipeline worker.

Rows carry absolute totals and the store merges them with max(), so a replayed or reordered
write is harmless.  Memory is bounded (least recently touched entries are forgotten); a run seen
again after being forgotten, or after a restart, restarts its totals from that call and the
stored row keeps the larger figures until the new ones pass them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxy.call import Call
from proxy.lru import LRU


@dataclass(slots=True)
class _Run:
    started_at: float
    last_at: float
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    agents: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    status: str = "open"

    def row(self, run_id: str) -> dict[str, Any]:
        return {"id": run_id, "started_at": self.started_at, "last_at": self.last_at, "status": self.status,
                "calls": self.calls, "agents": list(self.agents), "tokens": self.tokens,
                "cost_usd": round(self.cost_usd, 6), "flags": sorted(self.flags)}


@dataclass(slots=True)
class _Agent:
    fingerprint: str | None
    first_seen: float
    last_seen: float
    calls: int = 0
    tokens: int = 0

    def row(self, name: str) -> dict[str, Any]:
        return {"name": name, "fingerprint": self.fingerprint, "display_name": None, "first_seen": self.first_seen,
                "last_seen": self.last_seen, "calls": self.calls, "tokens": self.tokens}


class Aggregates:
    """Not thread-safe: the pipeline worker is its only user."""

    def __init__(self, max_runs: int = 50_000, max_agents: int = 10_000) -> None:
        self._runs: LRU[str, _Run] = LRU()
        self._agents: LRU[str, _Agent] = LRU()
        self._max_runs, self._max_agents = max_runs, max_agents

    def add(self, call: Call, agent: str, fingerprint: str | None, run_id: str | None,
            flags: list[str]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Count one finished call; returns (run row or None, agent row)."""
        at = call.ended_at or call.started_at
        tokens = call.usage.total()
        a = self._agents.touch(agent, lambda: _Agent(fingerprint, call.started_at, at))
        self._agents.evict(self._max_agents)
        a.calls, a.tokens, a.last_seen = a.calls + 1, a.tokens + tokens, max(a.last_seen, at)
        if run_id is None:
            return None, a.row(agent)
        r = self._runs.touch(run_id, lambda: _Run(call.started_at, at))
        self._runs.evict(self._max_runs)
        r.calls, r.tokens, r.cost_usd = r.calls + 1, r.tokens + tokens, r.cost_usd + (call.cost_usd or 0.0)
        r.last_at, r.status = max(r.last_at, at), "open"
        r.started_at = min(r.started_at, call.started_at)
        if agent not in r.agents:
            r.agents.append(agent)
        r.flags.update(flags)
        r.flags.update(str(e.get("rule")) for e in call.guard_events if e.get("action") != "allow")
        return r.row(run_id), a.row(agent)

    def merge(self, old: str, into: str) -> dict[str, Any] | None:
        """Fold run `old` into `into`; returns the merged row (None when `into` is unknown)."""
        gone = self._runs.pop(old, None)
        target = self._runs.get(into)
        if target is None:
            return None
        if gone is not None:
            target.calls += gone.calls
            target.tokens += gone.tokens
            target.cost_usd += gone.cost_usd
            target.started_at = min(target.started_at, gone.started_at)
            target.agents += [a for a in gone.agents if a not in target.agents]
            target.flags |= gone.flags
        return target.row(into)

    def close(self, run_id: str) -> dict[str, Any] | None:
        r = self._runs.get(run_id)
        if r is None:
            return None
        r.status = "closed"
        return r.row(run_id)

