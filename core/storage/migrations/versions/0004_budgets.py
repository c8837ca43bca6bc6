"""Spending and budgets: spend records (reservations and settled costs), hourly spend buckets,
budget locks, overrides.

Revision ID: 0004_budgets
Revises: 0003_jobs
Create Date: 2026-12-04 18:00:00

Self-contained on purpose (no imports from ``schema.py``, which describes the newest schema).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_budgets"
down_revision: str | Sequence[str] | None = "0003_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "spend_records",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("platform", sa.String(64), nullable=False, server_default=""),
        sa.Column("chat", sa.String(320), nullable=False, server_default=""),
        sa.Column("user_id", sa.String(320), nullable=False, server_default=""),
        sa.Column("provider", sa.String(64), nullable=False, server_default=""),
        sa.Column("model", sa.String(255), nullable=False, server_default=""),
        sa.Column("kind", sa.String(16), nullable=False, server_default="chat"),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("images", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cost_micros", sa.BigInteger(), nullable=True),
        sa.Column("estimated", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="pk_spend_records"),
    )
    for column in ("user_id", "chat", "platform", "provider"):
        op.create_index(f"ix_spend_records_{column}_created_at", "spend_records", [column, "created_at"])
    op.create_index("ix_spend_records_created_at", "spend_records", ["created_at"])
    op.create_index(
        "ix_spend_records_reserved",
        "spend_records",
        ["expires_at"],
        sqlite_where=sa.text("state = 'reserved'"),
        postgresql_where=sa.text("state = 'reserved'"),
    )
    op.create_table(
        "spend_buckets",
        sa.Column("scope_key", sa.String(400), nullable=False),
        sa.Column("hour", TS, nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("scope_key", "hour", name="pk_spend_buckets"),
    )
    op.create_table(
        "budget_locks",
        sa.Column("key", sa.String(400), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_budget_locks"),
    )
    op.create_table(
        "budget_overrides",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(320), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("usd_micros", sa.BigInteger(), nullable=True),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(320), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("scope", "subject", name="pk_budget_overrides"),
    )


def downgrade() -> None:
    op.drop_table("budget_overrides")
    op.drop_table("budget_locks")
    op.drop_table("spend_buckets")
    op.drop_index("ix_spend_records_reserved", table_name="spend_records")
    for column in ("user_id", "chat", "platform", "provider"):
        op.drop_index(f"ix_spend_records_{column}_created_at", table_name="spend_records")
    op.drop_index("ix_spend_records_created_at", table_name="spend_records")
    op.drop_table("spend_records")
