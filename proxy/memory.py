"""One memory budget per process (INTERLOCK_MEMORY_MB) → the bound of every cache and queue.

    memory_mb ─ BASELINE_MB (code, catalogs, encodings, pools: what a process holds at ready)
        = budget for what grows with traffic, split by SHARES:
          writer queue bytes · pipeline queue bytes      (bodies waiting to be stored / linked)
          token-count histories · graph hash chains ·    (texts kept so a resent conversation
          guard fingerprints                               is not worked again; characters)
          lineage index calls                             (recent calls the graph links against)

Unset, the historical defaults hold (their sum plus the baseline is ~560 MiB at the worst).  A
queue bound set explicitly (INTERLOCK_WRITER_QUEUE_MAX_BYTES, _PIPELINE_QUEUE_MAX_BYTES) wins
over its share.  Past a bound nothing is dropped: queues spill to disk or store calls unlinked,
caches forget their least recently used entries (work is redone, answers do not change).
Pure arithmetic, done once when the runtime starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024
BASELINE_MB = 170  # RSS of a worker at ready (bench/README.md "Memory"), not available to caches
MIN_MB = 192  # below this the shares are too small to be useful
# A cached character costs about this many bytes once Python objects and LRU entries count.
BYTES_PER_CHAR = 2.0
BYTES_PER_LINEAGE_CALL = 1500  # one call's fingerprints and refs in MemoryLineageIndex

SHARES = {
    "writer_queue": 0.20,
    "pipeline_queue": 0.25,
    "token_histories": 0.20,
    "chains": 0.10,
    "fingerprints": 0.12,
    "lineage": 0.13,
}


@dataclass(frozen=True)
class MemoryPlan:
    """The bounds the runtime passes to each component's constructor."""

    writer_queue_bytes: int = 64 * MIB
    pipeline_queue_bytes: int = 128 * MIB
    token_history_chars: int = 16_000_000
    chain_chars: int = 8_000_000
    fingerprint_chars: int = 8_000_000
    lineage_calls: int = 20_000

    @classmethod
    def from_settings(cls, settings: Any) -> MemoryPlan:
        explicit = settings.model_fields_set
        writer = settings.writer_queue_max_bytes
        pipeline = settings.pipeline_queue_max_bytes
        if settings.memory_mb is None:
            return cls(writer_queue_bytes=writer, pipeline_queue_bytes=pipeline)
        plan = cls.for_budget(settings.memory_mb)
        return cls(
            writer_queue_bytes=writer if "writer_queue_max_bytes" in explicit else plan.writer_queue_bytes,
            pipeline_queue_bytes=pipeline if "pipeline_queue_max_bytes" in explicit else plan.pipeline_queue_bytes,
            token_history_chars=plan.token_history_chars, chain_chars=plan.chain_chars,
            fingerprint_chars=plan.fingerprint_chars, lineage_calls=plan.lineage_calls)

    @classmethod
    def for_budget(cls, memory_mb: int) -> MemoryPlan:
        growable = max(memory_mb, MIN_MB) - BASELINE_MB
        share = {k: int(v * growable * MIB) for k, v in SHARES.items()}
        return cls(
            writer_queue_bytes=share["writer_queue"],
            pipeline_queue_bytes=share["pipeline_queue"],
            token_history_chars=int(share["token_histories"] / BYTES_PER_CHAR),
            chain_chars=int(share["chains"] / BYTES_PER_CHAR),
            fingerprint_chars=int(share["fingerprints"] / BYTES_PER_CHAR),
            lineage_calls=max(1000, share["lineage"] // BYTES_PER_LINEAGE_CALL),
        )
