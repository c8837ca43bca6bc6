"""Messages stored on receipt: a partial index over user messages still ``pending``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 00:00:00

A user message is stored the moment it arrives, with status ``pending`` until its answer
starts (see ``Store.receive``). Start-up looks for the ones a stop or crash left unanswered;
like ``ix_messages_streaming``, a partial index keeps that lookup instant however large the
table is, and costs nothing for the ``complete`` rows that make up almost all of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_messages_pending",
        "messages",
        ["status"],
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_pending", table_name="messages")
