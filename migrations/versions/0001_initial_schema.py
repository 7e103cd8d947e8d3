"""initial schema: calls, guard_events, edges, agents, runs

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("first_byte_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("ttfb_ms", sa.Double(), nullable=True),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("upstream", sa.String(length=100), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=2048), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=True),
        sa.Column("agent_source", sa.String(length=32), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("run_hint", sa.String(length=200), nullable=True),
        sa.Column("api_key_hash", sa.String(length=16), nullable=True),
        sa.Column("model_requested", sa.String(length=200), nullable=True),
        sa.Column("model_served", sa.String(length=200), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("finish_reason", sa.String(length=32), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("cached_tokens", sa.Integer(), nullable=True),
        sa.Column("reasoning_tokens", sa.Integer(), nullable=True),
        sa.Column("input_tokens_counted", sa.Integer(), nullable=True),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("request_content", sa.Text(), nullable=True),
        sa.Column("response_content", sa.Text(), nullable=True),
        sa.Column("content_truncated", sa.Boolean(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("tainted_by", sa.JSON(), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
    )
    op.create_index(op.f("ix_calls_started_at_id"), "calls", ["started_at", "id"])
    op.create_index(op.f("ix_calls_agent_started_at"), "calls", ["agent", "started_at"])
    op.create_index(op.f("ix_calls_run_id_started_at"), "calls", ["run_id", "started_at"])
    op.create_index(op.f("ix_calls_model_requested_started_at"), "calls", ["model_requested", "started_at"])
    op.create_index(op.f("ix_calls_outcome_started_at"), "calls", ["outcome", "started_at"])
    op.create_index(op.f("ix_calls_status_started_at"), "calls", ["status", "started_at"])
    op.create_index(op.f("ix_calls_api_key_hash"), "calls", ["api_key_hash"])

    op.create_table(
        "guard_events",
        sa.Column("id", sa.String(length=48), nullable=False),
        sa.Column("call_id", sa.String(length=26), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guard_events")),
    )
    op.create_index(op.f("ix_guard_events_call_id"), "guard_events", ["call_id"])
    op.create_index(op.f("ix_guard_events_at"), "guard_events", ["at"])
    op.create_index(op.f("ix_guard_events_rule_at"), "guard_events", ["rule", "at"])

    op.create_table(
        "edges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("source_call_id", sa.String(length=26), nullable=False),
        sa.Column("target_call_id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edges")),
        sa.UniqueConstraint(
            "source_call_id",
            "target_call_id",
            "kind",
            name=op.f("uq_edges_source_call_id_target_call_id_kind"),
        ),
    )
    op.create_index(op.f("ix_edges_run_id"), "edges", ["run_id"])
    op.create_index(op.f("ix_edges_target_call_id"), "edges", ["target_call_id"])

    op.create_table(
        "agents",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("display_name", sa.String(length=200), nullable=True),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_agents")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_agents_fingerprint")),
    )
    op.create_index(op.f("ix_agents_last_seen"), "agents", ["last_seen"])

    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("last_at", TS, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("agents", sa.JSON(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_last_at"), "runs", ["last_at"])
    op.create_index(op.f("ix_runs_status_last_at"), "runs", ["status", "last_at"])


def downgrade() -> None:
    for table in ("runs", "agents", "edges", "guard_events", "calls"):
        op.drop_table(table)
