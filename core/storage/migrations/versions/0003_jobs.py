"""Scheduled jobs: one row per job with its next run, its last outcome and its lease.

Revision ID: 0003_jobs
Revises: 0002
Create Date: 2026-12-04 18:30:00

The row is both the persistent schedule (the next run survives restarts) and the lease that
makes a run happen once across processes: a process runs a job only after an UPDATE that moves
``next_run_at`` past the run and takes ``lease_until`` changed exactly one row (see
``relaybot.core.storage.job_state``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_jobs"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scheduled_jobs",
        sa.Column("name", sa.String(255), nullable=False),
        # the schedule the next run was computed from: a changed schedule recomputes it
        sa.Column("schedule", sa.String(255), nullable=False, server_default=""),
        sa.Column("next_run_at", TS, nullable=True),
        sa.Column("last_run_at", TS, nullable=True),
        sa.Column("last_finished_at", TS, nullable=True),
        sa.Column("last_status", sa.String(16), nullable=False, server_default=""),
        sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
        sa.Column("lease_owner", sa.String(255), nullable=False, server_default=""),
        sa.Column("lease_until", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_scheduled_jobs"),
    )


def downgrade() -> None:
    op.drop_table("scheduled_jobs")
