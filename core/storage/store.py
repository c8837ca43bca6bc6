"""The conversation store: chats, conversations as paths in a message tree, usage.

Model (see :mod:`relaybot.core.storage.schema` for the tables):

* a **chat** is a :class:`~relaybot.core.contracts.models.ChatKey`; it has many conversations and at
  most one *active* conversation;
* **messages** form a tree per chat (each has a parent, roots have none);
* a **conversation** is the path from its ``root_id`` to its ``leaf_id``. Adding a message
  moves the leaf; branching (``create_conversation(branch_from=…)`` or ``add_message`` with an
  explicit ``parent_id``) shares the older messages instead of copying them.

Concurrency: every method is one short transaction. On SQLite, every call runs whole on the
store's own thread (:mod:`relaybot.core.storage.sqlite_worker`), one at a time in call order:
SQLite has a single writer anyway, and one thread hop per call costs a fraction of one per
cursor operation. Writes take the write lock at ``BEGIN IMMEDIATE`` so other processes wait up
to ``busy_timeout``; thanks to WAL, their readers never wait. On PostgreSQL, writers in different chats
run in parallel, and ``add_message`` locks its conversation row (``FOR UPDATE``) so concurrent
appends to one conversation still form a single chain.

Errors: every database failure is raised as :class:`~relaybot.core.contracts.errors.StorageError` with
an actionable message (see :func:`relaybot.core.storage.engine.translate_error`); unknown ids
raise :class:`~relaybot.core.storage.records.NotFoundError` (a ``StorageError`` and a
``LookupError``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from relaybot.core.contracts.models import ChatKey, ContentPart, ReplyStatus, Role, Usage
from relaybot.core.storage import queries as q
from relaybot.core.storage.base import translated
from relaybot.core.storage.events import EventsMixin
from relaybot.core.storage.receipts import ReceiptsMixin
from relaybot.core.storage.records import (
    USE_LEAF,
    Conversation,
    MessagePath,
    NewMessage,
    NotFoundError,
    StoredMessage,
    UseLeaf,
    export_message,
    joined_text,
    parts_from_json,
    parts_to_json,
    replace_text,
)
from relaybot.core.storage.schema import chats, conversations, messages, platform_messages, utcnow
from relaybot.core.storage.spending import SpendingStore

# one statement for a batch of checkpoints (executemany); compiled once
_CHECKPOINT_UPDATE = (
    sa.update(messages)
    .where(messages.c.id == sa.bindparam("b_id"))
    .values(parts=sa.bindparam("b_parts"), text=sa.bindparam("b_text"), updated_at=sa.bindparam("b_updated"))
)

# INSERT … ON CONFLICT DO UPDATE of platform ids, per dialect name (built on first use)
_LINK_UPSERTS: dict[str, Any] = {}

log = logging.getLogger(__name__)


class Store(SpendingStore, ReceiptsMixin, EventsMixin):
    """Async conversation storage on SQLite (default) or PostgreSQL.

    Create with ``await Store.open(url)`` (which migrates the schema) and ``await close()`` at
    shutdown, or ``async with await Store.open(url) as store:``. One instance per process is
    enough; it is safe to use from many tasks at once. Lifecycle methods (``open``, ``close``,
    ``url``, ``backend``, ``schema_revision``, ``get_or_create_chat``) come from
    :class:`~relaybot.core.storage.base.StoreBase`; storing messages on receipt (``receive``,
    ``pending_messages``) from :class:`~relaybot.core.storage.receipts.ReceiptsMixin`; recognising
    re-delivered platform events (``claim_event``) from :class:`~relaybot.core.storage.events.EventsMixin`.
    """

    # -- conversations ------------------------------------------------------------------------

    @translated
    async def active_conversation(self, chat: ChatKey) -> Conversation | None:
        """The chat's active conversation, or ``None`` (no conversation yet, or it was
        deleted)."""
        stmt = q.select_conversations().where(
            q.chat_matches(chat), conversations.c.id == chats.c.active_conversation_id
        )
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        return q.conversation_from_row(row) if row is not None else None

    @translated
    async def create_conversation(
        self,
        chat: ChatKey,
        title: str = "",
        *,
        activate: bool = True,
        branch_from: int | None = None,
    ) -> Conversation:
        """Start a conversation in ``chat`` (and make it active unless ``activate=False``).

        Without ``branch_from`` it is empty (its first message becomes a new root). With
        ``branch_from=<message id>`` it continues from that message: its leaf is that message
        and its root that message's root, so the older messages are shared, not copied.
        Raises NotFoundError if the message does not exist in this chat.
        """
        async with self._write() as conn:
            chat_id = await self._chat_id(conn, chat)
            root_id: int | None = None
            if branch_from is not None:
                await self._check_message_in_chat(conn, branch_from, chat_id)
                root_id = await conn.scalar(q.root_of(branch_from))
            now = utcnow()
            result = await conn.execute(
                sa.insert(conversations).values(
                    chat_id=chat_id,
                    title=title,
                    root_id=root_id,
                    leaf_id=branch_from,
                    created_at=now,
                    updated_at=now,
                )
            )
            conversation_id = _new_id(result)
            if activate:
                await conn.execute(
                    sa.update(chats)
                    .where(chats.c.id == chat_id)
                    .values(active_conversation_id=conversation_id)
                )
            return await self._conversation(conn, conversation_id)

    @translated
    async def conversation_ending_at(self, chat: ChatKey, message_id: int) -> Conversation | None:
        """The newest conversation of ``chat`` whose leaf is ``message_id``, or ``None``.

        A reply to the last message of a branch continues that branch instead of opening
        another one.
        """
        stmt = (
            q.select_conversations()
            .where(q.chat_matches(chat), conversations.c.leaf_id == message_id)
            .order_by(conversations.c.id.desc())
            .limit(1)
        )
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        return q.conversation_from_row(row) if row is not None else None

    @translated
    async def list_conversations(self, chat: ChatKey, *, with_counts: bool = False) -> list[Conversation]:
        """The chat's conversations, oldest first, numbered 1..n.

        ``with_counts=True`` also fills ``message_count`` (the path length); that walks every
        path, so it costs time proportional to the total length of the chat's conversations.
        """
        stmt = q.select_conversations(numbered=False).where(q.chat_matches(chat)).order_by(conversations.c.id)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
            counts: dict[int, int] = {}
            if with_counts and rows:
                chat_id = rows[0]._mapping["chat_id"]
                counts = {cid: n for cid, n in (await conn.execute(q.path_lengths(chat_id))).all()}
        return [
            q.conversation_from_row(
                row, number=i, count=counts.get(row._mapping["id"], 0) if with_counts else None
            )
            for i, row in enumerate(rows, start=1)
        ]

    @translated
    async def set_active(self, chat: ChatKey, conversation_id: int) -> Conversation:
        """Make ``conversation_id`` the chat's active conversation and return it.

        Raises NotFoundError if it does not exist or belongs to another chat.
        """
        async with self._write() as conn:
            chat_id = await self._chat_id(conn, chat)
            owner = await conn.scalar(
                sa.select(conversations.c.chat_id).where(conversations.c.id == conversation_id)
            )
            if owner != chat_id:
                raise NotFoundError(f"conversation {conversation_id} does not exist in chat {chat}")
            await conn.execute(
                sa.update(chats).where(chats.c.id == chat_id).values(active_conversation_id=conversation_id)
            )
            return await self._conversation(conn, conversation_id)

    @translated
    async def get_conversation(self, conversation_id: int) -> Conversation | None:
        """One conversation by id (numbered), or ``None``."""
        async with self._read() as conn:
            row = (
                await conn.execute(q.select_conversations().where(conversations.c.id == conversation_id))
            ).first()
        return q.conversation_from_row(row) if row is not None else None

    @translated
    async def rename_conversation(self, conversation_id: int, title: str) -> None:
        """Set the title. Raises NotFoundError for an unknown id."""
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(conversations)
                .where(conversations.c.id == conversation_id)
                .values(title=title, updated_at=utcnow())
            )
            if result.rowcount == 0:
                raise NotFoundError(f"conversation {conversation_id} does not exist")

    @translated
    async def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation and every message that no other conversation's path uses
        (its own path, branches it abandoned, and anything hanging below them).

        Messages shared with another conversation (e.g. one branched from it) stay. If it
        was the chat's active conversation, the chat has no active conversation afterwards;
        the caller decides what comes next. Raises NotFoundError for an unknown id.
        """
        async with self._write() as conn:
            row = (
                await conn.execute(
                    sa.select(conversations.c.chat_id, conversations.c.leaf_id)
                    .where(conversations.c.id == conversation_id)
                    .with_for_update()  # a concurrent add_message must not extend it meanwhile
                )
            ).first()
            if row is None:
                raise NotFoundError(f"conversation {conversation_id} does not exist")
            chat_id, leaf_id = row
            doomed = q.doomed_messages(conversation_id, chat_id, leaf_id).subquery()
            # Messages go first: once the conversation row is gone, the messages it created
            # can no longer be told apart (their conversation_id becomes NULL).
            await conn.execute(sa.delete(messages).where(messages.c.id.in_(sa.select(doomed.c.id))))
            # Explicit rather than trusting ON DELETE SET NULL alone, in case foreign keys
            # are off on a hand-opened SQLite connection.
            await conn.execute(
                sa.update(chats)
                .where(chats.c.active_conversation_id == conversation_id)
                .values(active_conversation_id=None)
            )
            await conn.execute(sa.delete(conversations).where(conversations.c.id == conversation_id))

    async def _conversation(self, conn: AsyncConnection, conversation_id: int) -> Conversation:
        row = (
            await conn.execute(q.select_conversations().where(conversations.c.id == conversation_id))
        ).first()
        if row is None:
            raise NotFoundError(f"conversation {conversation_id} does not exist")
        return q.conversation_from_row(row)

    async def _check_message_in_chat(self, conn: AsyncConnection, message_id: int, chat_id: int) -> None:
        owner = await conn.scalar(sa.select(messages.c.chat_id).where(messages.c.id == message_id))
        if owner != chat_id:
            raise NotFoundError(f"message {message_id} does not exist in this chat")

    # -- messages -----------------------------------------------------------------------------

    @translated
    async def add_message(
        self,
        conversation_id: int,
        *,
        role: Role,
        parts: list[ContentPart],
        parent_id: int | UseLeaf | None = USE_LEAF,
        token_count: int = 0,
        token_estimated: bool = False,
        status: ReplyStatus = ReplyStatus.COMPLETE,
        user_id: str = "",
        provider: str = "",
        model: str = "",
    ) -> StoredMessage:
        """Store a message and move the conversation's leaf to it, in one transaction.

        ``parent_id`` defaults to the conversation's current leaf; ``None`` starts a new root
        (the conversation then is just this message); another message id of the same chat
        branches from it (the conversation continues from there). Raises NotFoundError for an
        unknown conversation or parent.
        """
        new = NewMessage(
            role=role,
            parts=parts,
            token_count=token_count,
            token_estimated=token_estimated,
            status=status,
            user_id=user_id,
            provider=provider,
            model=model,
        )
        (stored,) = await self.add_messages(conversation_id, [new], parent_id=parent_id)
        return stored

    @translated
    async def add_messages(
        self,
        conversation_id: int,
        chain: list[NewMessage],
        *,
        parent_id: int | UseLeaf | None = USE_LEAF,
        platform_message_id: str | None = None,
        title: str | None = None,
        place: int | None = None,
        move_leaf: bool = True,
    ) -> list[StoredMessage]:
        """Append ``chain`` (each message the parent of the next) in one transaction.

        The first message attaches like :meth:`add_message`'s ``parent_id`` says; the
        conversation's leaf moves to the last one (unless ``move_leaf=False``: the messages
        then form a branch the leaf does not follow yet, see ``update_message(advance_leaf=)``).
        ``platform_message_id`` links the first message to its platform id (as
        :meth:`link_platform_message`) and raises
        :class:`~relaybot.core.storage.records.AlreadyStoredError`, writing nothing, when
        that id was stored before. ``title`` renames the conversation. ``place`` is the id
        of a message stored on receipt (:meth:`receive`): it is attached first (and becomes
        ``complete``), the chain after it, and it is returned first. A reply starts with one
        such write: the user's message and the reply's placeholder together. Raises
        NotFoundError for an unknown conversation or parent.
        """
        if not chain and place is None:
            raise ValueError("add_messages needs at least one message")
        async with self._write() as conn:
            row = (
                await conn.execute(
                    sa.select(conversations.c.chat_id, conversations.c.root_id, conversations.c.leaf_id)
                    .where(conversations.c.id == conversation_id)
                    # PostgreSQL: two appends to one conversation must not both pick the same
                    # leaf as parent (SQLite writers are serialised anyway and omits FOR UPDATE).
                    .with_for_update()
                )
            ).first()
            if row is None:
                raise NotFoundError(f"conversation {conversation_id} does not exist")
            chat_id, root_id, leaf_id = row
            parent: int | None = leaf_id if parent_id is USE_LEAF else parent_id  # type: ignore[assignment]
            if parent is None:
                root_id = None  # becomes the new message itself
            elif parent != leaf_id:
                await self._check_message_in_chat(conn, parent, chat_id)
                root_id = await conn.scalar(q.root_of(parent))
            if platform_message_id is not None:
                await self._refuse_duplicate(conn, chat_id, platform_message_id)
            now = utcnow()
            stored: list[StoredMessage] = []
            if place is not None:
                placed = await self._place(conn, place, chat_id, conversation_id, parent, now)
                if root_id is None:
                    root_id = placed.id
                stored.append(placed)
                parent = placed.id
            for new in chain:
                text = joined_text(new.parts)
                result = await conn.execute(
                    sa.insert(messages).values(
                        chat_id=chat_id,
                        conversation_id=conversation_id,
                        parent_id=parent,
                        role=Role(new.role).value,
                        parts=parts_to_json(new.parts),
                        text=text,
                        token_count=new.token_count,
                        token_estimated=new.token_estimated,
                        status=ReplyStatus(new.status).value,
                        user_id=new.user_id,
                        provider=new.provider,
                        model=new.model,
                        created_at=now,
                        updated_at=now,
                    )
                )
                message_id = _new_id(result)
                if root_id is None:
                    root_id = message_id
                stored.append(
                    StoredMessage(
                        id=message_id,
                        conversation_id=conversation_id,
                        parent_id=parent,
                        role=Role(new.role),
                        parts=list(new.parts),
                        text=text,
                        token_count=new.token_count,
                        token_estimated=new.token_estimated,
                        status=ReplyStatus(new.status),
                        usage=None,
                        user_id=new.user_id,
                        provider=new.provider,
                        model=new.model,
                        created_at=now,
                        updated_at=now,
                    )
                )
                parent = message_id
            values: dict[str, Any] = {"updated_at": now}
            if move_leaf:
                values.update(leaf_id=parent, root_id=root_id)
            if title is not None:
                values["title"] = title
            await conn.execute(
                sa.update(conversations).where(conversations.c.id == conversation_id).values(**values)
            )
            if platform_message_id is not None:
                await self._link(conn, chat_id, [platform_message_id], stored[0].id)
        return stored

    async def _place(
        self,
        conn: AsyncConnection,
        message_id: int,
        chat_id: int,
        conversation_id: int,
        parent: int | None,
        now: Any,
    ) -> StoredMessage:
        """Attach a message stored on receipt under ``parent`` (inside add_messages' write)."""
        result = await conn.execute(
            sa.update(messages)
            .where(messages.c.id == message_id, messages.c.chat_id == chat_id)
            .values(
                conversation_id=conversation_id,
                parent_id=parent,
                status=ReplyStatus.COMPLETE.value,
                updated_at=now,
            )
            .returning(*messages.c)
        )
        row = result.first()
        if row is None:
            raise NotFoundError(f"message {message_id} does not exist in this chat")
        return q.message_from_row(row)

    @translated
    async def checkpoint_texts(self, texts: Mapping[int, str]) -> int:
        """Write the partial text of several streaming replies in one transaction.

        Like ``update_message(id, text=…)`` for each entry, but one SELECT and one executemany
        UPDATE for all of them, so checkpointing hundreds of concurrent replies costs a few
        statements per interval instead of two per reply. Ids that no longer exist (the
        conversation was deleted meanwhile) are skipped. Returns how many rows were written.
        """
        if not texts:
            return 0
        now = utcnow()
        async with self._write() as conn:
            rows = await conn.execute(
                sa.select(messages.c.id, messages.c.parts).where(messages.c.id.in_(list(texts)))
            )
            params = [
                {
                    "b_id": message_id,
                    "b_parts": parts_to_json(replace_text(parts_from_json(stored), texts[message_id])),
                    "b_text": texts[message_id],
                    "b_updated": now,
                }
                for message_id, stored in rows
            ]
            if params:
                await conn.execute(_CHECKPOINT_UPDATE, params)
        return len(params)

    @translated
    async def update_message(
        self,
        message_id: int,
        *,
        text: str | None = None,
        status: ReplyStatus | None = None,
        usage: Usage | None = None,
        token_count: int | None = None,
        token_estimated: bool | None = None,
        provider: str | None = None,
        model: str | None = None,
        advance_leaf: tuple[int, int] | None = None,
    ) -> None:
        """Update a stored message in place (streaming checkpoints, the final reply).

        ``text`` replaces the message's text: its text parts become one text part (at the
        position of the first one; image parts are kept). Arguments left ``None`` are not
        changed. ``advance_leaf=(conversation id, root id)`` also makes this message that
        conversation's leaf (and ``root id`` the root of its tree): a reply of a shared chat,
        stored with ``move_leaf=False``, joins the conversation when it ends. Raises
        NotFoundError for an unknown id.
        """
        values: dict[str, Any] = {"updated_at": utcnow()}
        if status is not None:
            values["status"] = ReplyStatus(status).value
        if usage is not None:
            values["input_tokens"] = usage.input_tokens
            values["output_tokens"] = usage.output_tokens
            values["usage_estimated"] = usage.estimated
        if token_count is not None:
            values["token_count"] = token_count
        if token_estimated is not None:
            values["token_estimated"] = token_estimated
        if provider is not None:  # a fallback provider may have answered instead
            values["provider"] = provider
        if model is not None:
            values["model"] = model
        async with self._write() as conn:
            if text is not None:
                stored = await conn.scalar(sa.select(messages.c.parts).where(messages.c.id == message_id))
                if stored is None:
                    raise NotFoundError(f"message {message_id} does not exist")
                new_parts = replace_text(parts_from_json(stored), text)
                values["parts"] = parts_to_json(new_parts)
                values["text"] = text
            result = await conn.execute(
                sa.update(messages).where(messages.c.id == message_id).values(**values)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"message {message_id} does not exist")
            if advance_leaf is not None:
                conversation_id, root_id = advance_leaf
                await conn.execute(
                    sa.update(conversations)
                    .where(conversations.c.id == conversation_id)
                    .values(leaf_id=message_id, root_id=root_id, updated_at=values["updated_at"])
                )

    @translated
    async def get_message(self, message_id: int) -> StoredMessage | None:
        """One message by id, or ``None``."""
        async with self._read() as conn:
            row = (await conn.execute(sa.select(messages).where(messages.c.id == message_id))).first()
        return q.message_from_row(row) if row is not None else None

    @translated
    async def path(
        self, leaf_id: int, *, token_budget: int | None = None, limit: int | None = None
    ) -> MessagePath:
        """The path ending at ``leaf_id``, in root→leaf order.

        With ``token_budget`` only the newest messages whose ``token_count`` sum fits are
        returned: the walk from the leaf stops at the first message that would exceed the
        budget (a message is never cut). ``limit`` caps the number of messages the same way.
        The result's ``truncated`` is true when older messages were left out. The walk runs
        in the database and reads only the returned rows, so a budgeted path of a huge
        conversation stays cheap. Raises NotFoundError if ``leaf_id`` does not exist.
        """
        stmt = q.path_select(budgeted=token_budget is not None, limited=limit is not None)
        params: dict[str, int] = {"leaf": leaf_id}
        if token_budget is not None:
            params["budget"] = token_budget
        if limit is not None:
            params["limit"] = limit
        async with self._read() as conn:
            rows = (await conn.execute(stmt, params)).all()
            if not rows:
                exists = await conn.scalar(sa.select(messages.c.id).where(messages.c.id == leaf_id))
                if exists is None:
                    raise NotFoundError(f"message {leaf_id} does not exist")
                return MessagePath((), truncated=True)  # not even the leaf fits
        found = [q.message_from_row(row) for row in rows]
        return MessagePath(found, truncated=found[0].parent_id is not None)

    # -- platform message ids -----------------------------------------------------------------

    @translated
    async def link_platform_message(self, chat: ChatKey, platform_message_id: str, message_id: int) -> None:
        """Remember that the platform shows (part of) ``message_id`` as ``platform_message_id``.

        A long reply may be linked to several platform messages; linking an id again moves
        it to the new message. Raises NotFoundError if the message is not in this chat.
        """
        await self.link_platform_messages(chat, [platform_message_id], message_id)

    @translated
    async def link_platform_messages(
        self, chat: ChatKey, platform_message_ids: list[str] | tuple[str, ...], message_id: int
    ) -> None:
        """:meth:`link_platform_message` for several platform ids, in one transaction."""
        if not platform_message_ids:
            return
        async with self._write() as conn:
            chat_id = await self._chat_id(conn, chat)
            await self._check_message_in_chat(conn, message_id, chat_id)
            await self._link(conn, chat_id, platform_message_ids, message_id)

    async def _link(
        self, conn: AsyncConnection, chat_id: int, platform_ids: list[str] | tuple[str, ...], message_id: int
    ) -> None:
        stmt = _LINK_UPSERTS.get(conn.dialect.name)
        if stmt is None:
            # parameters passed per row (executemany), not as a multi-row VALUES literal: a
            # multi-row VALUES cannot be cached, so it was compiled again on every reply
            insert = q.upsert(conn.dialect, platform_messages)
            stmt = _LINK_UPSERTS[conn.dialect.name] = insert.on_conflict_do_update(
                index_elements=["chat_id", "platform_message_id"],
                set_={"message_id": insert.excluded.message_id},
            )
        await conn.execute(
            stmt,
            [{"chat_id": chat_id, "platform_message_id": p, "message_id": message_id} for p in platform_ids],
        )

    @translated
    async def find_by_platform_id(self, chat: ChatKey, platform_message_id: str) -> StoredMessage | None:
        """The stored message shown as ``platform_message_id`` in ``chat``, or ``None``."""
        stmt = (
            sa.select(messages)
            .join_from(platform_messages, chats, platform_messages.c.chat_id == chats.c.id)
            .join(messages, messages.c.id == platform_messages.c.message_id)
            .where(q.chat_matches(chat), platform_messages.c.platform_message_id == platform_message_id)
        )
        async with self._read() as conn:
            row = (await conn.execute(stmt)).first()
        return q.message_from_row(row) if row is not None else None

    # -- maintenance and reports --------------------------------------------------------------

    @translated
    async def recover_interrupted(self) -> int:
        """Mark every reply still ``streaming`` (the process died mid-reply) as
        ``interrupted``; returns how many. Call once at start-up, before serving."""
        async with self._write() as conn:
            result = await conn.execute(
                sa.update(messages)
                # A literal, not a bound parameter: only then can the planner use the
                # partial index ix_messages_streaming (WHERE status = 'streaming').
                .where(messages.c.status == sa.literal_column("'streaming'"))
                .values(status=ReplyStatus.INTERRUPTED.value, updated_at=utcnow())
            )
        if result.rowcount:
            log.info("marked %d unfinished replies as interrupted", result.rowcount)
        return int(result.rowcount)

    @translated
    async def usage_totals(self, *, user_id: str | None = None, since: datetime | None = None) -> Usage:
        """Summed token usage of replies, optionally of one user and since a time (aware
        datetime, inclusive). ``estimated`` is true if any counted reply's usage was."""
        estimated = sa.case((messages.c.usage_estimated.is_(True), 1), else_=0)
        stmt = sa.select(
            sa.func.coalesce(sa.func.sum(messages.c.input_tokens), 0),
            sa.func.coalesce(sa.func.sum(messages.c.output_tokens), 0),
            sa.func.coalesce(sa.func.max(estimated), 0),
        ).where(messages.c.input_tokens.is_not(None) | messages.c.output_tokens.is_not(None))
        if user_id is not None:
            stmt = stmt.where(messages.c.user_id == user_id)
        if since is not None:
            stmt = stmt.where(messages.c.created_at >= since)
        async with self._read() as conn:
            input_tokens, output_tokens, any_estimated = (await conn.execute(stmt)).one()
        return Usage(int(input_tokens), int(output_tokens), estimated=bool(any_estimated))

    @translated
    async def usage_by_model(
        self, *, user_id: str | None = None, since: datetime | None = None
    ) -> dict[str, Usage]:
        """Summed token usage per model (``{model: Usage}``), optionally of one user and since
        a time (aware datetime, inclusive); models without recorded usage are absent.

        A reply counts for ``user_id`` when it is stored with that user id, or when it is
        stored without one and answers (is the child of) a message of that user — replies
        stored by older versions carry no user id. ``estimated`` is true for a model if any
        counted reply's usage was an estimate.
        """
        asked = messages.alias("asked")
        estimated = sa.case((messages.c.usage_estimated.is_(True), 1), else_=0)
        stmt = (
            sa.select(
                messages.c.model,
                sa.func.coalesce(sa.func.sum(messages.c.input_tokens), 0),
                sa.func.coalesce(sa.func.sum(messages.c.output_tokens), 0),
                sa.func.coalesce(sa.func.max(estimated), 0),
            )
            .where(messages.c.input_tokens.is_not(None) | messages.c.output_tokens.is_not(None))
            .group_by(messages.c.model)
        )
        if user_id is not None:
            answered = (messages.c.user_id == "") & (asked.c.user_id == user_id)
            stmt = stmt.select_from(messages.outerjoin(asked, asked.c.id == messages.c.parent_id)).where(
                (messages.c.user_id == user_id) | answered
            )
        if since is not None:
            stmt = stmt.where(messages.c.created_at >= since)
        async with self._read() as conn:
            rows = (await conn.execute(stmt)).all()
        return {
            str(model): Usage(int(tokens_in), int(tokens_out), estimated=bool(any_estimated))
            for model, tokens_in, tokens_out, any_estimated in rows
        }

    @translated
    async def export_conversation(self, conversation_id: int) -> dict[str, Any]:
        """The conversation as JSON-ready data: id, title, chat, timestamps (ISO 8601 UTC)
        and its messages root→leaf. Raises NotFoundError for an unknown id."""
        conversation = await self.get_conversation(conversation_id)
        if conversation is None:
            raise NotFoundError(f"conversation {conversation_id} does not exist")
        leaf = conversation.leaf_id
        path = await self.path(leaf) if leaf is not None else MessagePath()
        return {
            "id": conversation.id,
            "title": conversation.title,
            "chat": {
                "platform": conversation.chat.platform,
                "chat": conversation.chat.chat,
                "thread": conversation.chat.thread,
            },
            "created_at": conversation.created_at.isoformat(),
            "updated_at": conversation.updated_at.isoformat(),
            "messages": [export_message(m) for m in path],
        }


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None  # single-row INSERT into a table with an integer primary key
    return int(key[0])
