"""The relational schema of conversation storage (SQLAlchemy Core tables).

::

    chats ──< conversations          a chat (ChatKey) has many conversations, one active
      │            │ root_id, leaf_id ──> messages   (a conversation is a root→leaf path)
      └──< messages ┘ parent_id ──> messages         (messages form one tree per chat)
              └──< platform_messages                 (platform ids → stored message)

This module is the source of truth for Alembic autogenerate; every change here needs a
migration under ``migrations/versions`` (the initial one spells these tables out by hand).

Conventions:

* ``chats.thread`` stores "no thread" as ``''`` rather than NULL, because SQL treats NULLs as
  distinct in unique constraints and two rows for the same thread-less chat could appear.
* Foreign keys that close a cycle (``chats.active_conversation_id``,
  ``conversations.root_id``/``leaf_id``) are ``use_alter`` so tables can be created in order.
* Timestamps are timezone-aware UTC in Python on every backend (:class:`UTCDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

# 64-bit ids on PostgreSQL; SQLite only auto-increments a column declared exactly INTEGER.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that is always an aware UTC ``datetime`` in Python.

    SQLite has no time zones: values are stored as naive UTC text (which sorts and compares
    correctly) and made aware again on the way out. PostgreSQL uses ``timestamptz``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to storage; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (what every timestamp column stores)."""
    return datetime.now(UTC)


chats = sa.Table(
    "chats",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("platform", sa.String(64), nullable=False),
    sa.Column("chat", sa.String(255), nullable=False),
    sa.Column("thread", sa.String(255), nullable=False, server_default=""),
    sa.Column(
        "active_conversation_id",
        ID,
        sa.ForeignKey("conversations.id", ondelete="SET NULL", use_alter=True),
        nullable=True,
    ),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # The unique constraint doubles as the index for ChatKey → chat id lookups.
    sa.UniqueConstraint("platform", "chat", "thread", name="uq_chats_key"),
)

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("chat_id", ID, sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    sa.Column("title", sa.String(500), nullable=False, server_default=""),
    sa.Column(
        "root_id",
        ID,
        sa.ForeignKey("messages.id", ondelete="SET NULL", use_alter=True),
        nullable=True,
    ),
    sa.Column(
        "leaf_id",
        ID,
        sa.ForeignKey("messages.id", ondelete="SET NULL", use_alter=True),
        nullable=True,
    ),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # Listing a chat's conversations oldest first, and numbering them.
    sa.Index("ix_conversations_chat_id_id", "chat_id", "id"),
    sa.Index("ix_conversations_leaf_id", "leaf_id"),
    sa.Index("ix_conversations_root_id", "root_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("chat_id", ID, sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    # The conversation that created the message; NULL once that conversation is deleted while
    # another conversation's path still uses the message.
    sa.Column(
        "conversation_id",
        ID,
        sa.ForeignKey("conversations.id", ondelete="SET NULL"),
        nullable=True,
    ),
    # CASCADE: deleting a message no path uses also removes its (equally unused) descendants.
    sa.Column("parent_id", ID, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=True),
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
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_messages_parent_id", "parent_id"),
    sa.Index("ix_messages_conversation_id", "conversation_id"),
    sa.Index("ix_messages_chat_id", "chat_id"),
    # Usage reports: per user and period, and per period for everyone.
    sa.Index("ix_messages_user_id_created_at", "user_id", "created_at"),
    sa.Index("ix_messages_created_at", "created_at"),
    # Start-up recovery looks for 'streaming' rows only; a partial index keeps that instant.
    sa.Index(
        "ix_messages_streaming",
        "status",
        sqlite_where=sa.text("status = 'streaming'"),
        postgresql_where=sa.text("status = 'streaming'"),
    ),
    # … and for user messages stored on receipt but not answered yet (migration 0002)
    sa.Index(
        "ix_messages_pending",
        "status",
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    ),
)

platform_messages = sa.Table(
    "platform_messages",
    metadata,
    sa.Column("chat_id", ID, sa.ForeignKey("chats.id", ondelete="CASCADE"), nullable=False),
    sa.Column("platform_message_id", sa.String(255), nullable=False),
    sa.Column("message_id", ID, sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    sa.PrimaryKeyConstraint("chat_id", "platform_message_id", name="pk_platform_messages"),
    sa.Index("ix_platform_messages_message_id", "message_id"),
)

# Platform events already taken in, per connector (migration 0005_events): a platform that
# re-delivers an event (Slack without an ack in 3 s) is recognised by its key, also after a
# restart and across processes. Rows older than a day are swept (platforms re-deliver within
# minutes).
seen_events = sa.Table(
    "seen_events",
    metadata,
    sa.Column("connector", sa.String(255), nullable=False),
    sa.Column("event_key", sa.String(255), nullable=False),
    sa.Column("seen_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("connector", "event_key", name="pk_seen_events"),
    sa.Index("ix_seen_events_seen_at", "seen_at"),
)

# One row per scheduled job: its persisted next run, last outcome and lease (see job_state.py).
scheduled_jobs = sa.Table(
    "scheduled_jobs",
    metadata,
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("schedule", sa.String(255), nullable=False, server_default=""),
    sa.Column("next_run_at", UTCDateTime(), nullable=True),
    sa.Column("last_run_at", UTCDateTime(), nullable=True),
    sa.Column("last_finished_at", UTCDateTime(), nullable=True),
    sa.Column("last_status", sa.String(16), nullable=False, server_default=""),
    sa.Column("last_error", sa.Text(), nullable=False, server_default=""),
    sa.Column("lease_owner", sa.String(255), nullable=False, server_default=""),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint("name", name="pk_scheduled_jobs"),
)

# ── spending and budgets (migration 0004_budgets) ───────────────────────────────────────────
#
#   spend_records      one row per provider call: reserved (worst case, expires) → settled
#   spend_buckets      settled spend per budget scope and UTC hour (what budget checks sum)
#   budget_locks       one row per budget; PostgreSQL reservations lock theirs FOR UPDATE
#   budget_overrides   budgets admins set with /budget (per user or chat), over config defaults

spend_records = sa.Table(
    "spend_records",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    # when the call was reserved: the budget period it counts in
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # a reservation stops counting after this (a crashed process leaks nothing); NULL once settled
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),  # reserved | settled
    sa.Column("platform", sa.String(64), nullable=False, server_default=""),
    sa.Column("chat", sa.String(320), nullable=False, server_default=""),  # platform:chat
    sa.Column("user_id", sa.String(320), nullable=False, server_default=""),  # platform:user
    sa.Column("provider", sa.String(64), nullable=False, server_default=""),
    sa.Column("model", sa.String(255), nullable=False, server_default=""),
    sa.Column("kind", sa.String(16), nullable=False, server_default="chat"),
    sa.Column("input_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("images", sa.Integer(), nullable=False, server_default="0"),
    # what token budgets count: input + output (the worst case while reserved)
    sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
    # micro-dollars (the worst case while reserved); NULL: the model has no price
    sa.Column("cost_micros", sa.BigInteger(), nullable=True),
    sa.Column("estimated", sa.Boolean(), nullable=False, server_default=sa.false()),
    # one index per budget scope: a budget's spend is a sum over its scope and period
    sa.Index("ix_spend_records_user_id_created_at", "user_id", "created_at"),
    sa.Index("ix_spend_records_chat_created_at", "chat", "created_at"),
    sa.Index("ix_spend_records_platform_created_at", "platform", "created_at"),
    sa.Index("ix_spend_records_provider_created_at", "provider", "created_at"),
    sa.Index("ix_spend_records_created_at", "created_at"),
    # live reservations only: what a budget check adds to the settled buckets
    sa.Index(
        "ix_spend_records_reserved",
        "expires_at",
        sqlite_where=sa.text("state = 'reserved'"),
        postgresql_where=sa.text("state = 'reserved'"),
    ),
)

spend_buckets = sa.Table(
    "spend_buckets",
    metadata,
    # a budget's key: "user:telegram:42", "chat:…", "platform:telegram", "provider:openai", "global"
    sa.Column("scope_key", sa.String(400), nullable=False),
    sa.Column("hour", UTCDateTime(), nullable=False),  # the UTC hour the calls were reserved in
    sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("cost_micros", sa.BigInteger(), nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("scope_key", "hour", name="pk_spend_buckets"),
)

budget_locks = sa.Table(
    "budget_locks",
    metadata,
    sa.Column("key", sa.String(400), primary_key=True),
)

budget_overrides = sa.Table(
    "budget_overrides",
    metadata,
    sa.Column("scope", sa.String(16), nullable=False),  # user | chat
    sa.Column("subject", sa.String(320), nullable=False),  # platform:user or platform:chat
    sa.Column("tokens", sa.BigInteger(), nullable=True),
    sa.Column("usd_micros", sa.BigInteger(), nullable=True),
    sa.Column("period", sa.String(16), nullable=False),  # day | week | month | rolling
    sa.Column("window_seconds", sa.Integer(), nullable=True),  # rolling only
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("updated_by", sa.String(320), nullable=False, server_default=""),
    sa.PrimaryKeyConstraint("scope", "subject", name="pk_budget_overrides"),
)

# ── budget reset notices (migration 0006_budget_notices) ────────────────────────────────────
#
# One row per user and budget that refused them and whose reset they have not been told of
# yet: where to tell them, how the budget is named, when its period resets (NULL: a rolling
# window, due once it has room for the refused call again). The row is deleted when the notice
# is claimed for sending, so a notice is sent at most once (across processes, after restarts);
# a refusal after that makes a new row.
budget_notices = sa.Table(
    "budget_notices",
    metadata,
    sa.Column("user_id", sa.String(320), nullable=False),  # platform:user
    sa.Column("budget_key", sa.String(400), nullable=False),  # user:…, chat:…, global …
    # the chat to tell (where the user was last refused)
    sa.Column("platform", sa.String(64), nullable=False),
    sa.Column("chat", sa.String(255), nullable=False),
    sa.Column("thread", sa.String(255), nullable=False, server_default=""),
    sa.Column("label", sa.String(255), nullable=False),  # "your daily budget"
    sa.Column("hit_at", UTCDateTime(), nullable=False),  # the latest refusal
    sa.Column("resets_at", UTCDateTime(), nullable=True),  # NULL: rolling window
    # rolling windows: the budget's check, to see whether the refused call fits again
    sa.Column("scope_column", sa.String(16), nullable=True),  # user_id | chat | … ; NULL: all
    sa.Column("scope_value", sa.String(320), nullable=False, server_default=""),
    sa.Column("window_seconds", sa.BigInteger(), nullable=True),
    sa.Column("token_limit", sa.BigInteger(), nullable=True),
    sa.Column("micros_limit", sa.BigInteger(), nullable=True),
    sa.Column("needed_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("needed_micros", sa.BigInteger(), nullable=True),
    # failed deliveries so far (the notice is dropped after a few)
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.PrimaryKeyConstraint("user_id", "budget_key", name="pk_budget_notices"),
    sa.Index("ix_budget_notices_resets_at", "resets_at"),
)
