"""Messages stored on receipt, before they have a place in a conversation.

The core stores every accepted user message the moment it arrives — before the platform or
the web client is told it was received, and before anything can cancel it. Usually it can go
straight into its conversation (``Store.add_messages`` with the reply's placeholder, one
write). When it must wait — behind the sender's running reply, behind an ``/new`` still
running, behind the chat's cap on concurrent replies, or because the bot is shutting down —
it is stored *unplaced* by :meth:`ReceiptsMixin.receive`: status ``pending``, no
conversation, no parent (so no path shows it yet). When its turn comes,
``Store.add_messages(place=<id>)`` attaches it where the conversation is by then and turns it
``complete`` in the same write as the reply's placeholder.

A message still ``pending`` at start-up was never answered (a stop or a crash came first):
:meth:`ReceiptsMixin.pending_messages` lists them so the bot answers them after the restart.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from relaybot.core.contracts.models import ChatKey, ReplyStatus, Role
from relaybot.core.storage import queries as q
from relaybot.core.storage.base import StoreBase, translated
from relaybot.core.storage.records import (
    AlreadyStoredError,
    NewMessage,
    StoredMessage,
    joined_text,
    parts_to_json,
)
from relaybot.core.storage.schema import chats, messages, platform_messages, utcnow


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """A user message stored on receipt and never answered (:meth:`ReceiptsMixin.pending_messages`).

    ``platform_message_id`` is the id it had on the platform (the answer replies to it), if any.
    """

    chat: ChatKey
    message: StoredMessage
    platform_message_id: str | None


class ReceiptsMixin(StoreBase):
    """Receipt storage of :class:`~relaybot.core.storage.Store` (see the module docstring)."""

    async def _refuse_duplicate(self, conn: AsyncConnection, chat_id: int, platform_message_id: str) -> None:
        """Raise AlreadyStoredError if ``platform_message_id`` is linked in this chat already.

        Platforms re-deliver events they think were lost (Slack without an ack in 3 s, a web
        client retrying a POST): the platform id is how a second delivery is recognised, also
        after a restart, so it is never stored or answered twice.
        """
        existing = await conn.scalar(
            sa.select(platform_messages.c.message_id).where(
                platform_messages.c.chat_id == chat_id,
                platform_messages.c.platform_message_id == platform_message_id,
            )
        )
        if existing is not None:
            raise AlreadyStoredError(
                f"platform message {platform_message_id!r} was stored before", message_id=existing
            )

    @translated
    async def receive(
        self, chat: ChatKey, message: NewMessage, *, platform_message_id: str | None = None
    ) -> StoredMessage:
        """Store a user message *unplaced* (status ``pending``, no conversation yet), in one write.

        ``platform_message_id`` links it like ``link_platform_message``. Raises
        :class:`AlreadyStoredError` when that platform id was stored before (nothing is written).
        """
        async with self._write() as conn:
            chat_id = await self._chat_id(conn, chat)
            if platform_message_id is not None:
                await self._refuse_duplicate(conn, chat_id, platform_message_id)
            now = utcnow()
            text = joined_text(message.parts)
            result = await conn.execute(
                sa.insert(messages).values(
                    chat_id=chat_id,
                    conversation_id=None,
                    parent_id=None,
                    role=Role(message.role).value,
                    parts=parts_to_json(message.parts),
                    text=text,
                    token_count=message.token_count,
                    token_estimated=message.token_estimated,
                    status=ReplyStatus.PENDING.value,
                    user_id=message.user_id,
                    created_at=now,
                    updated_at=now,
                )
            )
            message_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            if platform_message_id is not None:
                await self._link(conn, chat_id, [platform_message_id], message_id)  # type: ignore[attr-defined]
        return StoredMessage(
            id=message_id,
            conversation_id=None,
            parent_id=None,
            role=Role(message.role),
            parts=list(message.parts),
            text=text,
            token_count=message.token_count,
            token_estimated=message.token_estimated,
            status=ReplyStatus.PENDING,
            usage=None,
            user_id=message.user_id,
            provider="",
            model="",
            created_at=now,
            updated_at=now,
        )

    @translated
    async def pending_messages(self) -> list[PendingMessage]:
        """Every user message still ``pending`` (never answered), oldest first, with its chat."""
        stmt = (
            sa.select(messages, chats.c.platform, chats.c.chat, chats.c.thread)
            .add_columns(platform_messages.c.platform_message_id)
            .join_from(messages, chats, messages.c.chat_id == chats.c.id)
            .outerjoin(platform_messages, platform_messages.c.message_id == messages.c.id)
            # a literal: the planner can then use the partial index ix_messages_pending
            .where(messages.c.status == sa.literal_column("'pending'"))
            .order_by(messages.c.id)
        )
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        seen: set[int] = set()
        found = []
        for row in rows:
            stored = q.message_from_row(row)
            if stored.id in seen:  # two platform ids for one message: keep the first
                continue
            seen.add(stored.id)
            m = row._mapping
            key = ChatKey(m["platform"], m["chat"], m["thread"] or None)
            found.append(PendingMessage(key, stored, m["platform_message_id"]))
        return found
