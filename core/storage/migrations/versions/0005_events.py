"""Platform events already taken in, per connector (``seen_events``).

Revision ID: 0005_events
Revises: 0004_budgets
Create Date: 2026-12-06 23:40:00

Platforms re-deliver events they think were lost (Slack when an event was not acknowledged
within 3 s, with the same ``event_id``). A connector claims each event's key before handling it
(``ConnectorHost.claim_event``); the primary key makes the claim atomic, so a re-delivery is
recognised even after a restart or by another process sharing the database.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_events"
down_revision: str | Sequence[str] | None = "0004_budgets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "seen_events",
        sa.Column("connector", sa.String(255), nullable=False),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connector", "event_key", name="pk_seen_events"),
    )
    op.create_index("ix_seen_events_seen_at", "seen_events", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_seen_events_seen_at", table_name="seen_events")
    op.drop_table("seen_events")
