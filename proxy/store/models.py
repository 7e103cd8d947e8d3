"""SQLAlchemy 2 models: the tables Interlock records into, portable to SQLite and PostgreSQL.

    calls ──< guard_events        (call_id, no foreign key: rows arrive in any batch order)
    calls ──< edges >── calls     (source_call_id / target_call_id, written by the graph linker)
    agents, runs                  (upserted aggregates, merged monotonically so replays are harmless)

Timestamps are timezone-aware UTC (`UtcDateTime`), accepted on insert as aware datetimes or epoch
floats, so the row dicts the writer spools stay plain JSON.  JSON columns use the portable `JSON`
type (not JSONB).  Alembic migrations in `migrations/` must agree with this file (`alembic check`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from math import modf
from types import MappingProxyType
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID_LEN = 26
NAME_LEN = 200
SHORT_LEN = 32
PATH_LEN = 2048
HASH_LEN = 16
RUN_ID_LEN = 64
GUARD_ID_LEN = 48
UPSTREAM_LEN = 100

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """DateTime(timezone=True) that always binds and returns aware UTC; binds epoch floats too.

    SQLite keeps no offset, so everything is normalised to UTC on the way in and tagged UTC on
    the way out; PostgreSQL's timestamptz gets the same values.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if not isinstance(value, datetime):
            raise TypeError(f"expected datetime or epoch seconds, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """SQLite: an epoch float goes straight to the text SQLAlchemy's DATETIME would store
        (the composed processor builds a datetime, then formats it from a dict); the rest, and
        every other dialect, as TypeDecorator composes it."""
        composed = cast(Callable[[Any], Any] | None, super().bind_processor(dialect))
        if dialect.name != "sqlite" or composed is None:
            return composed
        direct = _sqlite_epoch_text(composed)
        agrees = all(direct(t) == composed(t) for t in (0.0, -0.5, 1_700_000_000.123456, 1_700_000_000.9999996))
        return direct if agrees else composed  # a SQLAlchemy with another storage format

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def _sqlite_epoch_text(composed: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Epoch float ─▶ 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC), as `datetime.fromtimestamp` rounds it
    (microseconds half-even, carried into the second); the part up to the second is kept for
    the last second seen (one tuple, replaced whole: safe across threads).  Anything else, or
    a float it cannot take, goes to `composed`, which gives the same value or error as before."""
    last: list[tuple[float, str]] = [(0.0, "1970-01-01 00:00:00")]

    def process(value: Any) -> Any:
        if value.__class__ is not float:
            return composed(value)
        try:
            frac, whole = modf(value)
            micro = round(frac * 1e6)
            if micro >= 1_000_000:
                micro, whole = micro - 1_000_000, whole + 1.0
            elif micro < 0:
                micro, whole = micro + 1_000_000, whole - 1.0
            second, text = last[0]
            if whole != second:
                text = datetime.fromtimestamp(whole, UTC).isoformat(" ")[:19]
                last[0] = (whole, text)
        except (ValueError, OverflowError, OSError):
            return composed(value)
        return f"{text}.{micro:06d}"

    return process


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: sa.JSON(), list[Any]: sa.JSON()}


class CallRow(Base):
    """One model call: the request, the answer, its timings, usage and (policy-bound) content."""

    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(sa.String(ID_LEN), primary_key=True)
    started_at: Mapped[datetime]
    first_byte_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    latency_ms: Mapped[float | None] = mapped_column(sa.Double())
    ttfb_ms: Mapped[float | None] = mapped_column(sa.Double())
    provider: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    operation: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    upstream: Mapped[str] = mapped_column(sa.String(UPSTREAM_LEN))
    method: Mapped[str] = mapped_column(sa.String(16))
    path: Mapped[str] = mapped_column(sa.String(PATH_LEN))
    agent: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    agent_source: Mapped[str | None] = mapped_column(sa.String(SHORT_LEN))
    run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID_LEN))
    run_hint: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    api_key_hash: Mapped[str | None] = mapped_column(sa.String(HASH_LEN))
    model_requested: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    model_served: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    stream: Mapped[bool]
    status: Mapped[int | None]
    outcome: Mapped[str | None] = mapped_column(sa.String(SHORT_LEN))
    finish_reason: Mapped[str | None] = mapped_column(sa.String(SHORT_LEN))
    input_tokens: Mapped[int | None]
    output_tokens: Mapped[int | None]
    cached_tokens: Mapped[int | None]
    reasoning_tokens: Mapped[int | None]
    input_tokens_counted: Mapped[int | None]
    cost_usd: Mapped[float | None] = mapped_column(sa.Double())
    error: Mapped[str | None] = mapped_column(sa.Text())
    request_content: Mapped[str | None] = mapped_column(sa.Text())
    response_content: Mapped[str | None] = mapped_column(sa.Text())
    content_truncated: Mapped[bool]
    flags: Mapped[list[Any]]
    tainted_by: Mapped[list[Any] | None] = mapped_column(sa.JSON())
    depth: Mapped[int | None]

    __table_args__ = (
        sa.Index(None, "started_at", "id"),
        sa.Index(None, "agent", "started_at"),
        sa.Index(None, "agent", "run_id"),  # /api/runs?agent=: index-only probe per run
        sa.Index(None, "run_id", "started_at"),
        sa.Index(None, "model_requested", "started_at"),
        sa.Index(None, "outcome", "started_at"),
        sa.Index(None, "status", "started_at"),
        sa.Index(None, "api_key_hash"),
    )


class GuardEventRow(Base):
    """A non-allow verdict of one rule on one call; id is `{call_id}:{n}` so replays collide."""

    __tablename__ = "guard_events"

    id: Mapped[str] = mapped_column(sa.String(GUARD_ID_LEN), primary_key=True)
    call_id: Mapped[str] = mapped_column(sa.String(ID_LEN))
    at: Mapped[datetime]
    rule: Mapped[str] = mapped_column(sa.String(NAME_LEN))
    kind: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    action: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    reason: Mapped[str] = mapped_column(sa.Text())
    data: Mapped[dict[str, Any]]
    agent: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID_LEN))

    __table_args__ = (
        sa.Index(None, "call_id"),
        sa.Index(None, "at"),
        sa.Index(None, "rule", "at"),
    )


class EdgeRow(Base):
    """A link between two calls found by the graph linker: continuation|handoff|return|tool|human."""

    __tablename__ = "edges"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID_LEN))
    # Human input has no source call: the linker writes the literal "human" so replays still collide.
    source_call_id: Mapped[str] = mapped_column(sa.String(ID_LEN))
    target_call_id: Mapped[str] = mapped_column(sa.String(ID_LEN))
    kind: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    evidence: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]

    __table_args__ = (
        sa.UniqueConstraint("source_call_id", "target_call_id", "kind"),
        sa.Index(None, "run_id"),
        sa.Index(None, "target_call_id"),
    )


class AgentRow(Base):
    """An agent the proxy has seen, named or fingerprinted; counters are absolute totals."""

    __tablename__ = "agents"

    name: Mapped[str] = mapped_column(sa.String(NAME_LEN), primary_key=True)
    fingerprint: Mapped[str | None] = mapped_column(sa.String(RUN_ID_LEN), unique=True)
    display_name: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]
    calls: Mapped[int] = mapped_column(sa.BigInteger())
    tokens: Mapped[int] = mapped_column(sa.BigInteger())

    __table_args__ = (sa.Index(None, "last_seen"),)


class RunRow(Base):
    """A run: calls joined by edges (or named by X-Interlock-Run); counters are absolute totals."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(sa.String(RUN_ID_LEN), primary_key=True)
    started_at: Mapped[datetime]
    last_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    calls: Mapped[int] = mapped_column(sa.BigInteger())
    agents: Mapped[list[Any]]
    tokens: Mapped[int] = mapped_column(sa.BigInteger())
    cost_usd: Mapped[float | None] = mapped_column(sa.Double())
    flags: Mapped[list[Any]]

    __table_args__ = (sa.Index(None, "last_at"), sa.Index(None, "status", "last_at"))


TABLES: MappingProxyType[str, sa.Table] = MappingProxyType(
    {
        "calls": CallRow.__table__,  # type: ignore[dict-item]
        "guard_events": GuardEventRow.__table__,  # type: ignore[dict-item]
        "edges": EdgeRow.__table__,  # type: ignore[dict-item]
        "agents": AgentRow.__table__,  # type: ignore[dict-item]
        "runs": RunRow.__table__,  # type: ignore[dict-item]
    }
)


# ---------------------------------------------------------------------------- escalations
# (proxy/escalation/: written directly by the escalation store, not through the batching writer,
# because SLA clocks need read-after-write and conditional updates; both tables are small.)


class EscalationRow(Base):
    """An agent's request for a human and its SLA clocks.  `status`: open → acknowledged →
    resolved.  A breach sets `*_breached_at` once (a conditional UPDATE is the claim, so one
    replica alerts); `hold` is set while a breach holds the run.  `notify_state`: pending |
    delivered | dead (no route could be reached) | none (no route)."""

    __tablename__ = "escalations"

    id: Mapped[str] = mapped_column(sa.String(ID_LEN), primary_key=True)
    rule: Mapped[str] = mapped_column(sa.String(NAME_LEN))
    source: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    status: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID_LEN))
    agent: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    call_id: Mapped[str | None] = mapped_column(sa.String(ID_LEN))
    tool_call_id: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    reason: Mapped[str] = mapped_column(sa.Text())
    details: Mapped[dict[str, Any]]
    drill: Mapped[bool]
    created_at: Mapped[datetime]
    ack_due_at: Mapped[datetime | None]
    resolve_due_at: Mapped[datetime | None]
    acked_at: Mapped[datetime | None]
    acked_by: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    ack_source: Mapped[str | None] = mapped_column(sa.String(SHORT_LEN))
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    ack_breached_at: Mapped[datetime | None]
    resolve_breached_at: Mapped[datetime | None]
    hold: Mapped[bool]
    notify_state: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    updated_at: Mapped[datetime]

    __table_args__ = (
        sa.Index(None, "status", "created_at"),
        sa.Index(None, "run_id"),
        sa.Index(None, "tool_call_id"),
        sa.Index(None, "created_at", "id"),
    )


class AlertDeliveryRow(Base):
    """One alert sent (or not) to one route: outcome, every attempt, and why it failed.
    `outcome`: delivered | failed | suppressed (deduplicated within the route's window)."""

    __tablename__ = "alert_deliveries"

    id: Mapped[str] = mapped_column(sa.String(ID_LEN), primary_key=True)
    at: Mapped[datetime]
    route: Mapped[str] = mapped_column(sa.String(NAME_LEN))
    alert_kind: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    rule: Mapped[str | None] = mapped_column(sa.String(NAME_LEN))
    escalation_id: Mapped[str | None] = mapped_column(sa.String(ID_LEN))
    run_id: Mapped[str | None] = mapped_column(sa.String(RUN_ID_LEN))
    dedup_key: Mapped[str] = mapped_column(sa.String(PATH_LEN))
    outcome: Mapped[str] = mapped_column(sa.String(SHORT_LEN))
    attempts: Mapped[list[Any]]
    http_status: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.Text())
    drill: Mapped[bool]

    __table_args__ = (
        sa.Index(None, "route", "at"),
        sa.Index(None, "escalation_id"),
        sa.Index(None, "at", "id"),
    )


ESCALATION_TABLES: MappingProxyType[str, sa.Table] = MappingProxyType(
    {
        "escalations": EscalationRow.__table__,  # type: ignore[dict-item]
        "alert_deliveries": AlertDeliveryRow.__table__,  # type: ignore[dict-item]
    }
)
