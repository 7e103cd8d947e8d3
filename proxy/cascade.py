"""Cascades: one call's fault, followed down the graph to every call built on it.

    fault sources (a call is a root cause when)        propagation (pipeline worker, completion order)
      guard      a loop/context/... rule flagged,        link.edges of kind handoff, return, tool,
                 denied or escalated it                  continuation (not a retry's resend) from a
      upstream_error   upstream error, cut, timeout      root or tainted call → this call is tainted:
      length           output cut at max_tokens            tainted_by = the root-cause call ids
      content_filter   output filtered / refused           depth      = hops from the nearest root
      truncated_handoff  its input was a cut copy of
                         another call's output (edge evidence `truncated`, reason `cut`)

    CascadeTracker.observe(call, link) ─▶ Taint ─taint_update()─▶ UPDATE calls row: tainted_by,
                                          depth, flags + `tainted`, `cascade_root`, `fault:<kind>`
    TaintBook (CounterStore, shared by replicas): per run, sketches of tainted outputs, so the
      Quarantine guard (guards/cascade.py) can recognise tainted content in a new request
      before the model sees it.  Marked by the guard at on_response (no lag) and by the
      pipeline from the graph (authoritative).
    summarize(rows) ─▶ root causes and blast radius (calls, agents, tokens downstream) of a run,
                      for /api/runs/{id} (Runtime.run_extras).

Budget verdicts are not faults: they are about spend, not about the content.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.call import Call
from proxy.guards.facts import CallFacts, FactsCache, Sketch, containment, decode_sketch, encode_sketch
from proxy.guards.handoffs import TRUNCATED
from proxy.lru import Memo, drop_oldest

PROPAGATING = frozenset({"handoff", "return", "tool", "continuation"})
FILTERED = frozenset({"content_filter", "refusal"})
FAILED = frozenset({"upstream_error", "upstream_cut", "unreachable", "timeout"})
NOT_CONTENT_KINDS = frozenset({"budget", "cascade", "escalation"})
# Loop detections about how often an agent asked (the same request resent, a run over its
# ceilings), not about what came back: the answer itself is not suspect.
NOT_CONTENT_LOOPS = frozenset({"retry", "ceiling"})
_SEP = "\x1f"


def _content_fault(ev: Mapping[str, Any]) -> bool:
    """A guard event that makes its call's output suspect (a cascade root)."""
    if ev.get("action") not in ("flag", "deny", "escalate") or ev.get("kind") in NOT_CONTENT_KINDS:
        return False
    return ev.get("kind") != "loop" or (ev.get("data") or {}).get("detect") not in NOT_CONTENT_LOOPS


def fault_kinds(call: Call, link: Any = None) -> tuple[str, ...]:
    """Why this call is a root cause (empty: it is not).  Without a link, only what the call
    itself shows (the request path's view)."""
    kinds = []
    if any(map(_content_fault, call.guard_events)):
        kinds.append("guard")
    if call.outcome in FAILED:
        kinds.append("upstream_error")
    if call.finish_reason in TRUNCATED:
        kinds.append("length")
    if call.finish_reason in FILTERED:
        kinds.append("content_filter")
    if link is not None and any(_cut_in_transit(e) for e in link.edges):
        kinds.append("truncated_handoff")
    return tuple(kinds)


def _cut_in_transit(edge: Any) -> bool:
    ev = edge.evidence or {}
    return bool(ev.get("truncated")) and ev.get("reason") != "source_length"


@dataclass(frozen=True, slots=True)
class Taint:
    """What one call carries: its own faults (a root when any) and the roots upstream of it."""

    call_id: str
    roots: tuple[str, ...]  # root-cause calls upstream (not this call)
    depth: int  # hops from the nearest root; 0 for a root
    faults: tuple[str, ...]  # this call's own fault kinds
    root_faults: tuple[str, ...]  # fault kinds of every root it descends from, its own included

    @property
    def lineage(self) -> tuple[str, ...]:
        """The roots its descendants inherit."""
        return (*self.roots, self.call_id) if self.faults else self.roots


class CascadeTracker:
    """Follows taint along the graph's edges.  Runs in the pipeline worker (one consumer,
    completion order, no I/O); remembers the last `cap` tainted calls (clean ones cost nothing)."""

    def __init__(self, cap: int = 200_000) -> None:
        self._cap = cap
        self._taints: dict[str, Taint] = {}
        self.roots_total = 0  # calls that were a fault source (metrics)
        self.tainted_total = 0  # calls that descend from one

    def observe(self, call: Call, link: Any) -> Taint | None:
        """The call's Taint (None: clean), from its own faults and its tainted parents."""
        faults = fault_kinds(call, link)
        parents = self._parents(link)
        if not faults and not parents:
            return None
        roots = tuple(sorted({r for p in parents for r in p.lineage}))
        depth = 0 if faults else min(p.depth for p in parents) + 1
        root_faults = tuple(sorted({k for p in parents for k in p.root_faults} | set(faults)))
        taint = Taint(call.id, roots, depth, faults, root_faults)
        self.roots_total += bool(faults)
        self.tainted_total += bool(roots)
        self._remember(taint)
        return taint

    def _parents(self, link: Any) -> list[Taint]:
        """Tainted calls feeding this one through content (a retry's resend carries nothing)."""
        edges = link.edges if link is not None else ()
        return [self._taints[e.source] for e in edges
                if e.kind in PROPAGATING and e.source in self._taints and (e.evidence or {}).get("via") != "retry"]

    def get(self, call_id: str) -> Taint | None:
        return self._taints.get(call_id)

    def _remember(self, taint: Taint) -> None:
        if len(self._taints) >= self._cap:
            drop_oldest(self._taints)
        self._taints[taint.call_id] = taint


def stored_flags(call: Call, link: Any) -> list[str]:
    """The flags the pipeline stored for the call (rows._flags, merged with the link's)."""
    flags = [str(e.get("rule")) for e in call.guard_events if e.get("action") not in (None, "allow")]
    if link is not None and link.flags:
        return sorted(set(flags) | set(link.flags))
    return list(dict.fromkeys(flags))


def taint_flags(taint: Taint) -> list[str]:
    flags = ["tainted"] if taint.roots else []
    if taint.faults:
        flags += ["cascade_root", *(f"fault:{k}" for k in taint.faults)]
    return flags


def taint_update(call: Call, link: Any, taint: Taint) -> dict[str, Any]:
    """A `call_updates` row writing the taint into the call's stored row."""
    flags = list(dict.fromkeys(stored_flags(call, link) + taint_flags(taint)))
    return {"id": call.id, "tainted_by": list(taint.roots) or None, "depth": taint.depth, "flags": flags}


# ---------------------------------------------------------------------------- request path


@dataclass(frozen=True, slots=True)
class Mark:
    """A tainted output as the request path remembers it."""

    call_id: str
    agent: str
    depth: int
    roots: tuple[str, ...]  # what its consumers inherit (Taint.lineage)
    faults: tuple[str, ...]  # Taint.root_faults
    sketch: Sketch

    def encode(self) -> str:
        return _SEP.join((self.call_id, self.agent.replace(_SEP, " "), str(self.depth), ",".join(self.roots),
                          ",".join(self.faults), encode_sketch(self.sketch)))

    @classmethod
    def decode(cls, raw: str) -> Mark:
        call_id, agent, depth, roots, faults, sketch = raw.split(_SEP)
        return cls(call_id, agent, int(depth), tuple(filter(None, roots.split(","))),
                   tuple(filter(None, faults.split(","))), decode_sketch(sketch))


@dataclass(frozen=True, slots=True)
class Hit:
    """A request whose new input holds `overlap` of tainted output `mark`."""

    mark: Mark
    overlap: float

    @property
    def depth(self) -> int:
        return self.mark.depth + 1


def request_taint(call: Call, hit: Hit | None) -> Taint | None:
    """The request path's Taint of a call (None: clean), ahead of the graph's: its own faults,
    and the one tainted output its input was found to hold (`hit`)."""
    faults = fault_kinds(call)
    if hit is None:
        return Taint(call.id, (), 0, faults, tuple(sorted(faults))) if faults else None
    root_faults = tuple(sorted(set(hit.mark.faults) | set(faults)))
    return Taint(call.id, hit.mark.roots, 0 if faults else hit.depth, faults, root_faults)


class TaintBook:
    """Tainted outputs per run (and globally, for calls without a run) in the CounterStore.
    `lookup` is one store read on the request path; `mark` one or two writes."""

    def __init__(self, counters: Any, facts: FactsCache | None = None, *, keep: int = 64,
                 ttl_s: float = 3600.0) -> None:
        self.counters = counters
        self.facts = facts if facts is not None else FactsCache()
        self.keep = keep
        self.ttl_s = ttl_s
        self._decoded: Memo[str, Mark] = Memo(4096)

    async def mark(self, run_id: str | None, mark: Mark) -> None:
        if not mark.sketch:
            return
        item = mark.encode()  # remember: the guard and the pipeline both mark, without duplicates
        if run_id:
            await self.counters.remember(f"taint:{run_id}", item, keep=self.keep, ttl_s=self.ttl_s)
        await self.counters.remember("taint:*", item, keep=self.keep * 4, ttl_s=self.ttl_s)

    async def lookup(self, call: Call, overlap: float) -> Hit | None:
        """The nearest-to-its-root tainted output that the call's new input contains."""
        incoming = self.facts(call).incoming
        if not incoming:
            return None
        best: Hit | None = None
        for raw in await self.counters.recent(f"taint:{call.run_id}" if call.run_id else "taint:*"):
            mark = self._decode(raw)
            share = containment(mark.sketch, incoming)
            if mark.call_id != call.id and share >= overlap and (best is None or mark.depth < best.mark.depth):
                best = Hit(mark, share)
        return best

    def _decode(self, raw: str) -> Mark:
        mark = self._decoded.get(raw)
        if mark is None:
            mark = self._decoded.keep(raw, Mark.decode(raw))
        return mark


def mark_of(call: Call, agent: str | None, taint: Taint, facts: CallFacts | None = None) -> Mark:
    sketch = (facts or CallFacts(call)).output_sketch
    return Mark(call.id, agent or call.agent or "?", taint.depth, taint.lineage, taint.root_faults, sketch)


# ---------------------------------------------------------------------------- blast radius


def _tokens(row: Mapping[str, Any]) -> int:
    return int(row.get("input_tokens") or 0) + int(row.get("output_tokens") or 0)


def _radius(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "calls": len(rows),
        "call_ids": [str(r["id"]) for r in rows],
        "agents": sorted({str(r.get("agent") or "unknown") for r in rows}),
        "tokens": sum(map(_tokens, rows)),
        "max_depth": max((int(r.get("depth") or 0) for r in rows), default=0),
    }


def summarize(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Root causes and blast radius of one run, from its calls rows (tainted_by, depth, flags,
    agent, input/output tokens).  For `/api/runs/{id}`: `{"root_causes": [...],
    "blast_radius": {...}}`."""
    calls = list(rows)
    tainted = [r for r in calls if r.get("tainted_by")]
    roots = [r for r in calls if "cascade_root" in (r.get("flags") or [])]
    causes = []
    for root in roots:
        downstream = [r for r in tainted if root["id"] in (r.get("tainted_by") or [])]
        faults = [f.split(":", 1)[1] for f in root.get("flags") or [] if str(f).startswith("fault:")]
        causes.append({"call_id": str(root["id"]), "agent": root.get("agent"), "faults": faults,
                       "downstream": _radius(downstream)})
    return {"root_causes": causes, "blast_radius": _radius(tainted)}
