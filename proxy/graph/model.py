"""Records the graph code passes around: what the linker returns and what its index stores.

LinkResult ── one per observed call: agent, run, thread, edges into the call, flags
  └─ Edge(source, target, kind, evidence)   kind: continuation|handoff|return|tool|human

index records (shared between replicas through a LineageIndex):
  Ref          a key (thread head, response id, tool-call id) → the call that produced it
  CallRecord   an output's fingerprints, for coverage and truncation checks
  RunState     a run's clock and the agent pairs that handed work to each other
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("continuation", "handoff", "return", "tool", "human")
HUMAN_PREFIX = "human:"


@dataclass(slots=True)
class Edge:
    """`source` fed `target`.  Sources are call ids, or `human:<hash>` for human input."""

    source: str
    target: str
    kind: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "kind": self.kind, "evidence": self.evidence}


@dataclass(slots=True)
class LinkResult:
    """What the linker learnt about one call.  `run_id` is None only for calls that are not
    conversations (embeddings, count_tokens, model lists) and carry no explicit run."""

    call_id: str
    agent: str
    agent_fingerprint: str  # the agent's key: its prompt fingerprint, with who it is among sharers
    run_id: str | None
    thread_id: str
    edges: list[Edge] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    new_run: bool = False
    new_agent: bool = False
    merged_runs: list[str] = field(default_factory=list)  # runs folded into run_id by this call
    renamed: dict[str, str] = field(default_factory=dict)  # earlier call id → its agent, learnt here


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a call.  `key` is what threads and agent pairs are keyed by: renames and
    merges change `name`, never `key`."""

    key: str
    name: str
    fingerprint: str
    new: bool = False
    hinted: bool = False  # the request itself named the speaker (explicit name or a stated name)

    @property
    def seed(self) -> str:
        """What a conversation's hash chain starts from: the prompt and tools (agents that share
        them share chains; who continues a chain is the agent of its last call)."""
        return self.key if self.key.startswith("name:") else self.fingerprint


@dataclass(frozen=True, slots=True)
class Ref:
    """The call behind a thread head, a response id or a tool-call id."""

    call_id: str
    thread_id: str
    run_id: str
    agent: str  # Identity.key
    ended_at: float
    chain: str  # hex head hash of the producing call, so previous_response_id can extend it
    ok: bool = True  # the call produced output (a failed call's input may be retried)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """An output's fingerprints in text order; `part_ends[i]` is where part i ends in `fps`."""

    call_id: str
    agent: str
    thread_id: str
    run_id: str
    started_at: float
    ended_at: float
    finish_reason: str | None
    chars: int
    fps: tuple[int, ...]
    part_ends: tuple[int, ...]
    tails: tuple[bytes, ...] = ()  # per part: words of its end (fingerprint.tail_signature)
    handed: int = 0  # bit i: part i is a string handed to a call (a tool call's or code's argument)
    echo: frozenset[int] = frozenset()  # fps the call's own new input already held (it restated them)


@dataclass(frozen=True, slots=True)
class RunState:
    run_id: str
    started_at: float
    last_seen: float
    closed: bool = False
    pairs: frozenset[tuple[str, str]] = frozenset()  # (from agent key, to agent key) handoffs
    explicit: bool = False  # named by X-Interlock-Run: never merged into another run
