"""SQL statement builders and row converters used by :class:`~relaybot.core.storage.Store`.

Everything here is portable SQLAlchemy Core: the recursive CTEs (``WITH RECURSIVE``) run on
SQLite and PostgreSQL alike, and the upserts pick the dialect's ``INSERT … ON CONFLICT``.
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from relaybot.core.contracts.models import ChatKey, ReplyStatus, Role, Usage
from relaybot.core.storage.records import Conversation, StoredMessage, parts_from_json
from relaybot.core.storage.schema import chats, conversations, messages

# Type of bound message ids (BIGINT on PostgreSQL, so comparisons need no cast).
ID_TYPE = sa.BigInteger()


# -- chats ------------------------------------------------------------------------------------


def chat_key_values(chat: ChatKey) -> tuple[str, str, str]:
    """(platform, chat, thread) as stored: no thread is ``''`` (see schema docstring)."""
    return (chat.platform, chat.chat, chat.thread or "")


def chat_matches(chat: ChatKey) -> sa.ColumnElement[bool]:
    """WHERE clause selecting the ``chats`` row of ``chat``."""
    platform, chat_id, thread = chat_key_values(chat)
    return sa.and_(chats.c.platform == platform, chats.c.chat == chat_id, chats.c.thread == thread)


def upsert(dialect: Dialect, table: sa.Table) -> Any:
    """The dialect's INSERT with ``on_conflict_do_nothing``/``on_conflict_do_update``."""
    if dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# -- conversations ----------------------------------------------------------------------------

_numbering = conversations.alias("numbering")

# 1-based position among the chat's conversations, oldest (lowest id) first.
_number = (
    sa.select(sa.func.count())
    .where(_numbering.c.chat_id == conversations.c.chat_id, _numbering.c.id <= conversations.c.id)
    .scalar_subquery()
    .label("number")
)

CONVERSATION_COLUMNS = (
    conversations.c.id,
    conversations.c.chat_id,
    conversations.c.title,
    conversations.c.root_id,
    conversations.c.leaf_id,
    conversations.c.created_at,
    conversations.c.updated_at,
    chats.c.platform,
    chats.c.chat,
    chats.c.thread,
)


def select_conversations(*, numbered: bool = True) -> sa.Select[Any]:
    """SELECT conversations joined with their chat (and their number when ``numbered``)."""
    columns: list[Any] = list(CONVERSATION_COLUMNS)
    if numbered:
        columns.append(_number)
    return sa.select(*columns).join_from(conversations, chats, conversations.c.chat_id == chats.c.id)


def conversation_from_row(row: Any, *, number: int | None = None, count: int | None = None) -> Conversation:
    """Build a :class:`Conversation` from a :func:`select_conversations` row."""
    mapping = row._mapping
    return Conversation(
        id=mapping["id"],
        chat=ChatKey(mapping["platform"], mapping["chat"], mapping["thread"] or None),
        title=mapping["title"],
        root_id=mapping["root_id"],
        leaf_id=mapping["leaf_id"],
        number=number if number is not None else int(mapping.get("number") or 0),
        created_at=mapping["created_at"],
        updated_at=mapping["updated_at"],
        message_count=count,
    )


def path_lengths(chat_id: int) -> sa.Select[Any]:
    """(conversation id, path length) for every non-empty conversation of a chat."""
    start = (
        sa.select(
            conversations.c.id.label("conv_id"),
            messages.c.id.label("id"),
            messages.c.parent_id.label("parent_id"),
        )
        .join_from(conversations, messages, messages.c.id == conversations.c.leaf_id)
        .where(conversations.c.chat_id == chat_id)
        .cte("lengths_walk", recursive=True)
    )
    walk = start.union_all(
        sa.select(start.c.conv_id, messages.c.id, messages.c.parent_id).join_from(
            messages, start, messages.c.id == start.c.parent_id
        )
    )
    return sa.select(walk.c.conv_id, sa.func.count()).group_by(walk.c.conv_id)


# -- messages ---------------------------------------------------------------------------------


def message_from_row(row: Any) -> StoredMessage:
    """Build a :class:`StoredMessage` from a row holding the ``messages`` columns."""
    m = row._mapping
    usage = None
    if m["input_tokens"] is not None or m["output_tokens"] is not None:
        usage = Usage(
            input_tokens=m["input_tokens"] or 0,
            output_tokens=m["output_tokens"] or 0,
            estimated=bool(m["usage_estimated"]),
        )
    return StoredMessage(
        id=m["id"],
        conversation_id=m["conversation_id"],
        parent_id=m["parent_id"],
        role=Role(m["role"]),
        parts=parts_from_json(m["parts"] or []),
        text=m["text"],
        token_count=m["token_count"],
        token_estimated=bool(m["token_estimated"]),
        status=ReplyStatus(m["status"]),
        usage=usage,
        user_id=m["user_id"],
        provider=m["provider"],
        model=m["model"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


def ancestors(start_ids: sa.Select[Any], name: str) -> sa.CTE:
    """Recursive CTE with column ``id``: the messages selected by ``start_ids`` (one column)
    and all their ancestors."""
    first = sa.select(messages.c.id, messages.c.parent_id).where(messages.c.id.in_(start_ids))
    cte = first.cte(name, recursive=True)
    return cte.union_all(
        sa.select(messages.c.id, messages.c.parent_id).join_from(
            messages, cte, messages.c.id == cte.c.parent_id
        )
    )


def root_of(message_id: int) -> sa.Select[Any]:
    """SELECT the root id of the tree that holds ``message_id``."""
    walk = ancestors(sa.select(sa.literal(message_id, ID_TYPE)), "root_walk")
    return sa.select(walk.c.id).where(walk.c.parent_id.is_(None))


@functools.cache
def path_select(*, budgeted: bool, limited: bool) -> sa.Select[Any]:
    """SELECT the messages of the path ending at the bind parameter ``leaf``, leaf first last.

    Built once per variant and reused: constructing a recursive CTE costs far more than running
    it (most of ``Store.path``'s time), and a reused statement also keeps its cache key.
    ``budgeted`` adds the bind parameter ``budget`` (a token budget), ``limited`` adds
    ``limit`` (a message count); see :func:`path_walk`.
    """
    walk = path_walk(
        sa.bindparam("leaf", type_=ID_TYPE),
        token_budget=sa.bindparam("budget", type_=sa.Integer) if budgeted else None,
        limit=sa.bindparam("limit", type_=sa.Integer) if limited else None,
    )
    return (
        sa.select(messages)
        .join_from(messages, walk, messages.c.id == walk.c.id)
        .order_by(walk.c.depth.desc())
    )


def path_walk(leaf_id: Any, *, token_budget: Any, limit: Any) -> sa.CTE:
    """Recursive CTE walking from ``leaf_id`` towards the root.

    Columns: ``id``, ``parent_id``, ``total`` (tokens of this message and every newer one on
    the path) and ``depth`` (1 = the leaf). The walk stops *before* the first message that
    would push ``total`` over ``token_budget`` or ``depth`` over ``limit``, so the database
    only touches the rows that are returned (plus one index probe). Arguments are values or
    bind parameters; ``None`` leaves that bound out.
    """
    one = sa.literal_column("1", sa.Integer)
    anchor = sa.select(
        messages.c.id,
        messages.c.parent_id,
        messages.c.token_count.label("total"),
        one.label("depth"),
    ).where(messages.c.id == leaf_id)
    if token_budget is not None:
        anchor = anchor.where(messages.c.token_count <= token_budget)
    walk = anchor.cte("path_walk", recursive=True)
    step = sa.select(
        messages.c.id,
        messages.c.parent_id,
        walk.c.total + messages.c.token_count,
        walk.c.depth + one,
    ).join_from(messages, walk, messages.c.id == walk.c.parent_id)
    if token_budget is not None:
        step = step.where(walk.c.total + messages.c.token_count <= token_budget)
    if limit is not None:
        step = step.where(walk.c.depth < limit)
    return walk.union_all(step)


def doomed_messages(conversation_id: int, chat_id: int, leaf_id: int | None) -> sa.CompoundSelect[Any]:
    """SELECT the ids of messages to delete with a conversation.

    Candidates are the conversation's path and every message it created (including branches
    it left behind); a candidate survives when it lies on the path of another conversation of
    the same chat (an ancestor-or-self of that conversation's leaf).
    """
    created = sa.select(messages.c.id).where(messages.c.conversation_id == conversation_id)
    if leaf_id is not None:
        own = ancestors(sa.select(sa.literal(leaf_id, ID_TYPE)), "own_path")
        candidates: Any = sa.union(sa.select(own.c.id), created)
    else:
        candidates = created
    other_leaves = sa.select(conversations.c.leaf_id).where(
        conversations.c.chat_id == chat_id,
        conversations.c.id != conversation_id,
        conversations.c.leaf_id.is_not(None),
    )
    live = ancestors(other_leaves, "live_paths")
    return sa.select(candidates.subquery().c.id).except_(sa.select(live.c.id))
