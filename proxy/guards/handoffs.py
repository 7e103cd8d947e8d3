"""Where a call's input came from: the `HandoffSource` seam and its built-in implementation.

    on_response(A's call) ──record_output──▶ recent outputs of the run (sketch, truncated?)
    on_request(B's call)  ──handoff_into───▶ Handoff(A → B) when B's newest input contains
                                             most of one of A's recent outputs

The graph module (proxy/graph/) links calls by content lineage too; it can implement this
protocol and be passed to the RulesManager instead of `FingerprintHandoffs`, which keeps its
own lightweight fingerprints so loop and context rules work without the graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

from proxy.call import Call
from proxy.guards.counters import CounterStore
from proxy.guards.facts import FactsCache, Sketch, decode_sketch
from proxy.lru import CallSlots, Memo

TRUNCATED = frozenset({"length", "max_tokens", "max_output_tokens"})
_UNKNOWN: Any = object()


@dataclass(frozen=True, slots=True)
class Handoff:
    """One agent's output arriving as another agent's input, within one run."""

    source_agent: str
    target_agent: str
    content: Sketch  # fingerprint of what was handed over (facts.similarity compares two)
    overlap: float  # share of the source output found in the target's input
    truncated: bool = False  # the source output had been cut at max_tokens
    depth: int | None = None  # delegation depth of the target within the run (root agents: 0)


@dataclass(frozen=True, slots=True, eq=False)  # identity: `None in outputs` stays in C
class _Output:
    agent: str
    truncated: bool
    sketch: Sketch
    hashes: frozenset[int]  # the sketch as a set: `containment` at a third of the cost

    def share_in(self, incoming: set[int]) -> float:
        """`containment(self.sketch, incoming)`."""
        if not self.sketch or not incoming:
            return 0.0
        return len(self.hashes & incoming) / len(self.sketch)


class HandoffSource(Protocol):
    async def handoff_into(self, call: Call) -> Handoff | None:
        """At on_request: the handoff that delivered this call's newest input, if any.
        May await the counter store; must be cheap to call several times per call."""
        ...

    async def record_output(self, call: Call) -> None:
        """At on_response: remember what this call produced.  Idempotent per call."""
        ...


class FingerprintHandoffs:
    """Store-backed handoff detection by content: per run, the last `keep` outputs of every
    agent are kept as sketches for `ttl_s`; an input containing >= `overlap` of one of another
    agent's outputs is a handoff from that agent."""

    def __init__(
        self,
        counters: CounterStore,
        facts: FactsCache,
        *,
        keep: int = 32,
        ttl_s: float = 3600.0,
        overlap: float = 0.6,
    ) -> None:
        self._counters = counters
        self._facts = facts
        self._keep = keep
        self._ttl = ttl_s
        self._overlap = overlap
        self._recorded: CallSlots[bool] = CallSlots(cap=4096)
        self._decoded: Memo[str, _Output] = Memo(8192)

    async def handoff_into(self, call: Call) -> Handoff | None:
        if not call.run_id or not call.agent:
            return None  # handoffs are looked for within a run (as `_find` would say)
        facts = self._facts(call)
        found = facts.get("handoff", _UNKNOWN)  # every later guard of the call: no coroutine
        if found is not _UNKNOWN:
            return cast(Handoff | None, found)
        return await facts.once("handoff", lambda: self._find(call))

    async def _find(self, call: Call) -> Handoff | None:
        if not call.run_id or not call.agent:
            return None
        raws = await self._counters.recent(f"hand:out:{call.run_id}")
        found = list(map(self._decoded.get, raws))  # each later call of the run reads them again
        decoded = (
            found if None not in found else [o or self._decode(r) for o, r in zip(found, raws, strict=True)]
        )
        agent = call.agent
        outputs = [o for o in cast(list[_Output], decoded) if o.agent != agent]
        incoming = self._facts(call).incoming if outputs else None
        if not incoming:
            return None
        best: tuple[float, _Output] | None = None
        for out in outputs:
            share = out.share_in(incoming)
            if share >= self._overlap and (best is None or share > best[0]):
                best = (share, out)
        if best is None:
            return None
        share, out = best
        depth = await self._depth(call.run_id, out.agent, call.agent)
        return Handoff(out.agent, call.agent, out.sketch, share, out.truncated, depth)

    def _decode(self, raw: str) -> _Output:
        """Stored outputs are decoded once per process (the same items are read by every
        later request of the run)."""
        out = self._decoded.get(raw)
        if out is None:
            agent, flag, encoded = raw.split("\x1f")
            sketch = decode_sketch(encoded)
            out = _Output(agent, flag == "1", sketch, frozenset(sketch))
            self._decoded.keep(raw, out)
        return out

    async def _depth(self, run: str, source: str, target: str) -> int:
        ttl = self._ttl
        parent = int(await self._counters.setdefault(f"hand:depth:{run}:{source}", "0", ttl))
        return int(await self._counters.setdefault(f"hand:depth:{run}:{target}", str(parent + 1), ttl))

    async def record_output(self, call: Call) -> None:
        if not call.run_id or not call.agent or self._recorded.get(call):
            return
        self._recorded.put(call, True)
        facts = self._facts(call)
        if not facts.output_sketch:
            return
        agent = call.agent.replace("\x1f", " ")
        item = f"{agent}\x1f{int(call.finish_reason in TRUNCATED)}\x1f{facts.output_encoded}"
        await self._counters.push(f"hand:out:{call.run_id}", item, keep=self._keep, ttl_s=self._ttl)
