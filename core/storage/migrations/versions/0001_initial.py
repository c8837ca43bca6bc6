"""Initial schema: chats, conversations, messages (a tree per chat), platform message ids.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

Self-contained on purpose (no imports from ``schema.py``, which describes the newest schema).
The foreign keys that close cycles (chats → conversations → messages → …) are declared inline
on SQLite, which accepts forward references and cannot ALTER ADD CONSTRAINT, and added after
the tables on PostgreSQL, which needs the referenced table to exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)

# (table, column, referred table, ondelete) of the cycle-closing foreign keys
_CYCLIC = [
    ("chats", "active_conversation_id", "conversations", "SET NULL"),
    ("conversations", "root_id", "messages", "SET NULL"),
    ("conversations", "leaf_id", "messages", "SET NULL"),
]


def _fk_name(table: str, column: str, referred: str) -> str:
    return f"fk_{table}_{column}_{referred}"


def upgrade() -> None:
    inline = op.get_bind().dialect.name == "sqlite"

    def cyclic(table: str) -> list[sa.ForeignKeyConstraint]:
        if not inline:
            return []
        return [
            sa.ForeignKeyConstraint(
                [column], [f"{referred}.id"], name=_fk_name(t, column, referred), ondelete=ondel
            )
            for t, column, referred, ondel in _CYCLIC
            if t == table
        ]

    op.create_table(
        "chats",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("platform", sa.String(64), nullable=False),
        sa.Column("chat", sa.String(255), nullable=False),
        sa.Column("thread", sa.String(255), nullable=False, server_default=""),
        sa.Column("active_conversation_id", ID, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_chats"),
        sa.UniqueConstraint("platform", "chat", "thread", name="uq_chats_key"),
        *cyclic("chats"),
    )
    op.create_table(
        "conversations",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("chat_id", ID, nullable=False),
        sa.Column("title", sa.String(500), nullable=False, server_default=""),
        sa.Column("root_id", ID, nullable=True),
        sa.Column("leaf_id", ID, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name="fk_conversations_chat_id_chats", ondelete="CASCADE"
        ),
        *cyclic("conversations"),
    )
    op.create_index("ix_conversations_chat_id_id", "conversations", ["chat_id", "id"])
    op.create_index("ix_conversations_leaf_id", "conversations", ["leaf_id"])
    op.create_index("ix_conversations_root_id", "conversations", ["root_id"])

    op.create_table(
        "messages",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("chat_id", ID, nullable=False),
        sa.Column("conversation_id", ID, nullable=True),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("parts", JSONType, nullable=False),
        sa.Column("text", sa.Text(), nullable=False, server_default=""),
        sa.Column("token_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("token_estimated", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("status", sa.String(16), nullable=False, server_default="complete"),
        sa.Column("user_id", sa.String(255), nullable=False, server_default=""),
        sa.Column("provider", sa.String(64), nullable=False, server_default=""),
        sa.Column("model", sa.String(255), nullable=False, server_default=""),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.Column("usage_estimated", sa.Boolean(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name="fk_messages_chat_id_chats", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_messages_conversation_id_conversations",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["messages.id"], name="fk_messages_parent_id_messages", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_messages_parent_id", "messages", ["parent_id"])
    op.create_index("ix_messages_conversation_id", "messages", ["conversation_id"])
    op.create_index("ix_messages_chat_id", "messages", ["chat_id"])
    op.create_index("ix_messages_user_id_created_at", "messages", ["user_id", "created_at"])
    op.create_index("ix_messages_created_at", "messages", ["created_at"])
    op.create_index(
        "ix_messages_streaming",
        "messages",
        ["status"],
        sqlite_where=sa.text("status = 'streaming'"),
        postgresql_where=sa.text("status = 'streaming'"),
    )

    op.create_table(
        "platform_messages",
        sa.Column("chat_id", ID, nullable=False),
        sa.Column("platform_message_id", sa.String(255), nullable=False),
        sa.Column("message_id", ID, nullable=False),
        sa.PrimaryKeyConstraint("chat_id", "platform_message_id", name="pk_platform_messages"),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name="fk_platform_messages_chat_id_chats", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name="fk_platform_messages_message_id_messages",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_platform_messages_message_id", "platform_messages", ["message_id"])

    if not inline:
        for table, column, referred, ondelete in _CYCLIC:
            op.create_foreign_key(
                _fk_name(table, column, referred),
                table,
                referred,
                [column],
                ["id"],
                ondelete=ondelete,
            )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        for table, column, referred, _ in _CYCLIC:
            op.drop_constraint(_fk_name(table, column, referred), table, type_="foreignkey")
    op.drop_table("platform_messages")
    op.drop_table("messages")
    op.drop_table("conversations")
    op.drop_table("chats")
