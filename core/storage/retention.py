"""Deleting old conversations (the built-in ``retention`` job), as synchronous functions for
:meth:`Store.run_sync <relaybot.core.storage.Store.run_sync>`.

A conversation is *old* when it was last changed (``updated_at``: a message added, renamed)
before the cutoff. Deleting one follows :meth:`Store.delete_conversation
<relaybot.core.storage.Store.delete_conversation>`: messages another conversation's path still
uses stay. Work is done in batches (one transaction each) so a first run over years of history
never holds SQLite's write lock for long.
"""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa

from relaybot.core.storage import queries as q
from relaybot.core.storage.schema import chats, conversations, messages

__all__ = ["delete_conversations", "media_in_use", "old_conversations"]

_MEDIA_REF = re.compile(r"media:([0-9a-f]{64})")


def old_conversations(conn: sa.Connection, cutoff: datetime, *, limit: int = 100) -> list[int]:
    """Ids of up to ``limit`` conversations last changed before ``cutoff`` (oldest ids first)."""
    stmt = (
        sa.select(conversations.c.id)
        .where(conversations.c.updated_at < cutoff)
        .order_by(conversations.c.id)
        .limit(limit)
    )
    return [int(row[0]) for row in conn.execute(stmt)]


def delete_conversations(conn: sa.Connection, ids: list[int]) -> int:
    """Delete these conversations and the messages only they use; returns how many went."""
    deleted = 0
    for conversation_id in ids:
        row = conn.execute(
            sa.select(conversations.c.chat_id, conversations.c.leaf_id)
            .where(conversations.c.id == conversation_id)
            .with_for_update()
        ).first()
        if row is None:
            continue  # deleted meanwhile
        chat_id, leaf_id = row
        doomed = q.doomed_messages(conversation_id, chat_id, leaf_id).subquery()
        conn.execute(sa.delete(messages).where(messages.c.id.in_(sa.select(doomed.c.id))))
        conn.execute(
            sa.update(chats)
            .where(chats.c.active_conversation_id == conversation_id)
            .values(active_conversation_id=None)
        )
        conn.execute(sa.delete(conversations).where(conversations.c.id == conversation_id))
        deleted += 1
    return deleted


def media_in_use(conn: sa.Connection) -> set[str]:
    """SHA-256 digests of every ``media:`` file a stored message still refers to."""
    stmt = sa.select(messages.c.parts).where(sa.cast(messages.c.parts, sa.Text).like("%media:%"))
    used: set[str] = set()
    for (parts,) in conn.execute(stmt):
        used.update(_MEDIA_REF.findall(str(parts)))
    return used
