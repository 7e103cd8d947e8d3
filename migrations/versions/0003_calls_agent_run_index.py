"""calls (agent, run_id): GET /api/runs?agent= probes it per run, without reading calls rows

At 5 million calls the agent filter read ~25k call rows to find 50 runs (p99 249 ms,
bench/pg_volume.py); with this index it reads index entries only (3 ms).  Building it locks
calls against writes (about 10 s at 5 million calls on 2 cores; the writer spools meanwhile if it
waits past INTERLOCK_WRITER_TIMEOUT_S).  On a large PostgreSQL database, build it beforehand
without blocking writers, and this migration then leaves it alone:

    CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_calls_agent_run_id ON calls (agent, run_id);

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_calls_agent_run_id"


def upgrade() -> None:
    op.create_index(NAME, "calls", ["agent", "run_id"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index(NAME, table_name="calls")
