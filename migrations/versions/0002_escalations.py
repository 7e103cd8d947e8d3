"""escalations and alert deliveries (proxy/escalation/)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "escalations",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("agent", sa.String(length=200), nullable=True),
        sa.Column("call_id", sa.String(length=26), nullable=True),
        sa.Column("tool_call_id", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("drill", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("ack_due_at", TS, nullable=True),
        sa.Column("resolve_due_at", TS, nullable=True),
        sa.Column("acked_at", TS, nullable=True),
        sa.Column("acked_by", sa.String(length=200), nullable=True),
        sa.Column("ack_source", sa.String(length=32), nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.Column("resolved_by", sa.String(length=200), nullable=True),
        sa.Column("ack_breached_at", TS, nullable=True),
        sa.Column("resolve_breached_at", TS, nullable=True),
        sa.Column("hold", sa.Boolean(), nullable=False),
        sa.Column("notify_state", sa.String(length=32), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalations")),
    )
    op.create_index(op.f("ix_escalations_status_created_at"), "escalations", ["status", "created_at"])
    op.create_index(op.f("ix_escalations_run_id"), "escalations", ["run_id"])
    op.create_index(op.f("ix_escalations_tool_call_id"), "escalations", ["tool_call_id"])
    op.create_index(op.f("ix_escalations_created_at_id"), "escalations", ["created_at", "id"])

    op.create_table(
        "alert_deliveries",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("alert_kind", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=200), nullable=True),
        sa.Column("escalation_id", sa.String(length=26), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("dedup_key", sa.String(length=2048), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("attempts", sa.JSON(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("drill", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_deliveries")),
    )
    op.create_index(op.f("ix_alert_deliveries_route_at"), "alert_deliveries", ["route", "at"])
    op.create_index(op.f("ix_alert_deliveries_escalation_id"), "alert_deliveries", ["escalation_id"])
    op.create_index(op.f("ix_alert_deliveries_at_id"), "alert_deliveries", ["at", "id"])


def downgrade() -> None:
    for table in ("alert_deliveries", "escalations"):
        op.drop_table(table)
