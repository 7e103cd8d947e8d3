"""Rows: what the writer carries from the request path to the database (and the spool).

A `Record` is the unit the writer queues, spools and writes in one transaction: rows for some
tables, each row a plain JSON-ready dict (timestamps as epoch floats; the model's `UtcDateTime`
binds them).  Tables are applied in `TABLE_ORDER`, so an update follows the insert it amends.

    Record.calls          insert, ignored when the id exists          (recorder)
    Record.guard_events   insert, ignored when the id exists          (recorder; id = call_id:n)
    Record.edges          upsert on (source, target, kind)            (graph linker)
    Record.agents         upsert, counters merged monotonically       (graph linker)
    Record.runs           upsert, counters merged monotonically       (graph linker)
    Record.call_updates   UPDATE calls SET ... WHERE id = row["id"]   (graph linker, after insert)
    Record.run_merges     {"from", "into"}: calls, edges and guard events of run `from` move
                          to run `into`; the `from` run row is deleted (graph linker merged them)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from proxy.call import Call
from proxy.redact import redact_text
from proxy.store import models as m

ContentPolicy = Literal["full", "redacted", "none"]
Row = dict[str, Any]
TABLE_ORDER = ("calls", "guard_events", "edges", "agents", "runs", "call_updates", "run_merges")
CALL_UPDATE_COLUMNS = frozenset({"run_id", "agent", "agent_source", "flags", "tainted_by", "depth", "cost_usd"})
_REDACT_MARGIN = 512  # bytes past the cap that redaction still sees, so a key cut at the cap is masked


@dataclass(slots=True)
class Record:
    """One unit of work for the writer; every list holds JSON-ready row dicts."""

    calls: list[Row] = field(default_factory=list)
    guard_events: list[Row] = field(default_factory=list)
    edges: list[Row] = field(default_factory=list)
    agents: list[Row] = field(default_factory=list)
    runs: list[Row] = field(default_factory=list)
    call_updates: list[Row] = field(default_factory=list)
    run_merges: list[Row] = field(default_factory=list)
    # WAL entries this record makes redundant once written (proxy/store/wal.py); never stored
    wal: list[int] = field(default_factory=list, compare=False, repr=False)

    def to_json(self) -> dict[str, list[Row]]:
        """The record as a dict of non-empty tables (the spool's line format)."""
        return {name: getattr(self, name) for name in TABLE_ORDER if getattr(self, name)}

    @classmethod
    def from_json(cls, data: dict[str, list[Row]]) -> Record:
        """Inverse of `to_json`; unknown tables raise ValueError (a spool from a newer version)."""
        unknown = set(data) - set(TABLE_ORDER)
        if unknown:
            raise ValueError(f"unknown tables in record: {sorted(unknown)}")
        return cls(**data)  # type: ignore[arg-type]  # keys checked above: table lists only

    def size(self) -> int:
        """Number of rows across its tables."""
        return sum(len(getattr(self, name)) for name in TABLE_ORDER)


def call_record(call: Call, *, policy: ContentPolicy, max_bytes: int) -> Record:
    """The record for a finished call: its row and its guard events.  Pure; never raises on
    odd content (undecodable bytes are replaced)."""
    return Record(
        calls=[call_to_row(call, policy=policy, max_bytes=max_bytes)], guard_events=guard_event_rows(call)
    )


def call_to_row(call: Call, *, policy: ContentPolicy, max_bytes: int) -> Row:
    """The `calls` row for `call`: JSON-ready, content under `policy`, each side capped at
    `max_bytes`.  Credentials never appear: the call carries only their hash, and error text is
    always redacted (upstream errors echo key fragments)."""
    request, req_cut = _content(call.request_bytes, policy, max_bytes)
    response, resp_cut = _content(call.response_bytes, policy, max_bytes)
    return {
        **_identity(call),
        **_timing(call),
        **_usage(call),
        "error": _clip(redact_text(call.error), 64 * 1024) if call.error else None,
        "request_content": request,
        "response_content": response,
        "content_truncated": req_cut or resp_cut or (call.response_truncated and policy != "none"),
        "flags": flags_of(call),
        "tainted_by": getattr(call, "tainted_by", None),
        "depth": getattr(call, "depth", None),
    }


def guard_event_rows(call: Call) -> list[Row]:
    """One row per guard event on `call` (dicts with rule, kind, action, reason, data, at).
    Ids are `{call.id}:{n}`, so writing the same call twice cannot duplicate its events."""
    return [_guard_row(call, n, event) for n, event in enumerate(call.guard_events)]


def _guard_row(call: Call, n: int, event: dict[str, Any]) -> Row:
    return {
        "id": f"{call.id}:{n}",
        "call_id": call.id,
        "at": float(event.get("at") or call.ended_at or call.started_at),
        "rule": _clip(str(event.get("rule") or "?"), m.NAME_LEN),
        "kind": _clip(str(event.get("kind") or ""), m.SHORT_LEN),
        "action": _clip(str(event.get("action") or ""), m.SHORT_LEN),
        "reason": str(event.get("reason") or ""),
        "data": _jsonable(event.get("data") or {}),
        "agent": _clip(call.agent, m.NAME_LEN),
        "run_id": _clip(call.run_id, m.RUN_ID_LEN),
    }


def _identity(call: Call) -> Row:
    return {
        "id": call.id,
        "provider": _clip(call.provider, m.SHORT_LEN),
        "operation": _clip(call.operation, m.SHORT_LEN),
        "upstream": _clip(call.upstream, m.UPSTREAM_LEN),
        "method": _clip(call.method, 16),
        "path": _clip(redact_text(call.path), m.PATH_LEN),  # a key can ride in a path (`;key=...`)
        "agent": _clip(call.agent, m.NAME_LEN),
        "agent_source": _clip(call.agent_source, m.SHORT_LEN),
        "run_id": _clip(call.run_id, m.RUN_ID_LEN),
        "run_hint": _clip(call.run_hint, m.NAME_LEN),
        "api_key_hash": _clip(call.api_key_hash, m.HASH_LEN),
        "model_requested": _clip(call.model_requested, m.NAME_LEN),
        "model_served": _clip(call.model_served, m.NAME_LEN),
        "stream": call.stream,
        "status": call.status,
        "outcome": _clip(call.outcome, m.SHORT_LEN),
        "finish_reason": _clip(call.finish_reason, m.SHORT_LEN),
    }


def _timing(call: Call) -> Row:
    ttfb = None if call.first_byte_at is None else (call.first_byte_at - call.started_at) * 1000.0
    return {
        "started_at": call.started_at,
        "first_byte_at": call.first_byte_at,
        "ended_at": call.ended_at,
        "latency_ms": call.latency_ms,
        "ttfb_ms": ttfb,
    }


def _usage(call: Call) -> Row:
    u = call.usage
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cached_tokens": u.cached_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "input_tokens_counted": call.input_tokens_counted,
        "cost_usd": getattr(call, "cost_usd", None),
    }


def flags_of(call: Call) -> list[str]:
    """Rules that flagged or denied the call, plus any flags the pipeline set, in order, unique."""
    names = [str(e.get("rule")) for e in call.guard_events if e.get("action") not in (None, "allow")]
    names += [str(f) for f in getattr(call, "flags", None) or ()]
    return list(dict.fromkeys(names))


def _content(body: bytes, policy: ContentPolicy, max_bytes: int) -> tuple[str | None, bool]:
    """(stored text, truncated?) for one body under the policy and the byte cap."""
    if policy == "none" or not body:
        return None, False
    margin = _REDACT_MARGIN if policy == "redacted" else 0
    text = (
        body[: max_bytes + margin].decode("utf-8", "replace").replace("\x00", "\ufffd")
    )  # PG text has no NUL
    if policy == "redacted":
        text = redact_text(text)
    clipped = _clip_utf8(text, max_bytes)
    return clipped, len(body) > max_bytes or len(clipped) < len(text)


def _clip_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never splitting a character."""
    if len(text) * 4 <= max_bytes:
        return text
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", "ignore")


def _jsonable(data: Any) -> Any:
    """`data` as plain JSON types (numbers the guards attach may be Decimal, tuples, ...)."""
    return orjson.loads(orjson.dumps(data, default=str))


def _clip(value: str | None, n: int) -> str | None:
    return value if value is None or len(value) <= n else value[:n]
