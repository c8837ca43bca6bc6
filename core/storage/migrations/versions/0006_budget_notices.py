"""Budget reset notices still to send (``budget_notices``).

Revision ID: 0006_budget_notices
Revises: 0005_events
Create Date: 2026-12-07 00:00:00

When a budget refuses a user's call, the refusal is remembered (one row per user and budget);
the ``budget_reset_notices`` job tells the user in that chat once the budget's period has reset
(or, for a rolling window, once it has room again) and deletes the row as it does, so the
notice goes out once even with several processes on one database.

Self-contained on purpose (no imports from ``schema.py``, which describes the newest schema).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_budget_notices"
down_revision: str | Sequence[str] | None = "0005_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "budget_notices",
        sa.Column("user_id", sa.String(320), nullable=False),
        sa.Column("budget_key", sa.String(400), nullable=False),
        sa.Column("platform", sa.String(64), nullable=False),
        sa.Column("chat", sa.String(255), nullable=False),
        sa.Column("thread", sa.String(255), nullable=False, server_default=""),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("hit_at", TS, nullable=False),
        sa.Column("resets_at", TS, nullable=True),
        sa.Column("scope_column", sa.String(16), nullable=True),
        sa.Column("scope_value", sa.String(320), nullable=False, server_default=""),
        sa.Column("window_seconds", sa.BigInteger(), nullable=True),
        sa.Column("token_limit", sa.BigInteger(), nullable=True),
        sa.Column("micros_limit", sa.BigInteger(), nullable=True),
        sa.Column("needed_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("needed_micros", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("user_id", "budget_key", name="pk_budget_notices"),
    )
    op.create_index("ix_budget_notices_resets_at", "budget_notices", ["resets_at"])


def downgrade() -> None:
    op.drop_index("ix_budget_notices_resets_at", table_name="budget_notices")
    op.drop_table("budget_notices")
