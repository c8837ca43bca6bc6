"""The conversations of one chat (:class:`ChatConversations`), as commands (``ctx.conversations``)
and connectors with their own UI (``host.conversations(chat)``) see them: new, list, switch,
rename, delete, history pages, export, stop — always for one chat, never another's.

Who is answered when (the busy policy, concurrent replies in shared chats) is
:mod:`relaybot.core.runtime.turns`; changing the conversation (``new``, ``switch``, deleting the
active one) first stops the chat's running replies, which keeps their partial text.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relaybot.core.contracts.errors import CommandError
from relaybot.core.contracts.models import ChatKey, ContentPart, IncomingMessage, Role, TextPart, Usage

if TYPE_CHECKING:
    from relaybot.core.runtime.turns import TurnManager
    from relaybot.core.storage import Conversation, Store, StoredMessage

#: ids are 64-bit signed integers in both databases; anything outside cannot exist
MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Messages of a conversation, oldest first (:meth:`ChatConversations.page`).

    ``has_more`` says whether older messages exist (ask again with ``before`` = the first id).
    """

    conversation_id: int
    messages: list[StoredMessage]
    has_more: bool

log = logging.getLogger("relaybot.conversations")


class ChatConversations:
    """The conversations of one chat (``ctx.conversations``, ``host.conversations(chat)``).

    Every method works on this chat only: an id of another chat's conversation or message
    answers exactly like a missing one (``None`` or ``NotFoundError``), so ids reveal nothing.
    """

    def __init__(
        self,
        store: Store,
        manager: TurnManager,
        chat: ChatKey,
        message: IncomingMessage | None = None,
    ) -> None:
        self.store = store
        self.manager = manager
        self.chat = chat
        self.message = message

    async def active(self) -> Conversation | None:
        """The active conversation, or None before the first message."""
        return await self.store.active_conversation(self.chat)

    async def new(self, title: str = "") -> Conversation:
        """Start a new, empty conversation and make it active (a running reply is stopped)."""
        await self.manager.stop(self.chat)
        return await self.store.create_conversation(self.chat, title.strip()[:200], activate=True)

    async def list(self, *, with_counts: bool = False) -> builtins.list[Conversation]:
        """All conversations of the chat, oldest first, numbered from 1 (``with_counts``: with
        their ``message_count``)."""
        return await self.store.list_conversations(self.chat, with_counts=with_counts)

    async def get(self, conversation_id: int) -> Conversation | None:
        """The conversation with this id if it is one of this chat's, else ``None``."""
        if not _valid_id(conversation_id):
            return None
        conv = await self.store.get_conversation(conversation_id)
        return conv if conv is not None and conv.chat == self.chat else None

    async def page(
        self, conversation_id: int, *, before: int | None = None, limit: int = 50
    ) -> HistoryPage | None:
        """The newest ``limit`` messages of a conversation before message ``before`` (default:
        up to its leaf), oldest first; ``None`` when the conversation is not this chat's or
        ``before`` is not on its path."""
        conv = await self.get(conversation_id)
        if conv is None:
            return None
        start: int | None = conv.leaf_id
        if before is not None:
            anchor = await self.store.get_message(before) if _valid_id(before) else None
            if anchor is None or not await self._on_path(conv, anchor):
                return None
            start = anchor.parent_id
        if start is None:
            return HistoryPage(conv.id, [], False)
        path = await self.store.path(start, limit=max(1, limit))
        return HistoryPage(conv.id, list(path.messages), path.truncated)

    async def _on_path(self, conv: Conversation, message: StoredMessage) -> bool:
        """True if ``message`` is on ``conv``'s path (so paging cannot read other chats)."""
        if message.conversation_id is not None:
            origin = await self.store.get_conversation(message.conversation_id)
            if origin is None or origin.chat != conv.chat:
                return False
            if origin.id == conv.id:
                return True
        if conv.leaf_id is None:
            return False
        # a message of a branch's parent conversation (or of a deleted one): check the path itself
        return any(m.id == message.id for m in await self.store.path(conv.leaf_id))

    async def context_path(
        self, conversation_id: int | None, token_budget: int
    ) -> builtins.list[StoredMessage]:
        """The newest messages of a conversation (default: the active one) within about
        ``token_budget`` tokens, oldest first: what the context builder would consider."""
        conv = await (self.active() if conversation_id is None else self.get(conversation_id))
        if conversation_id is not None and conv is None:
            from relaybot.core.storage import NotFoundError

            raise NotFoundError(f"conversation {conversation_id} does not exist in {self.chat}")
        if conv is None or conv.leaf_id is None:
            return []
        return list((await self.store.path(conv.leaf_id, token_budget=token_budget)).messages)

    async def add_exchange(
        self,
        request: str,
        reply: Sequence[ContentPart],
        *,
        user_id: str,
        platform_message_id: str | None = None,
        provider: str = "",
        model: str = "",
        usage: Usage | None = None,
    ) -> tuple[int, int]:
        """Add a finished exchange that did not go through the model's streaming path (``/imagine``
        and its picture) to the active conversation (a new one when there is none yet); return
        ``(reply id, conversation id)``. ``platform_message_id`` links the person's message."""
        store = self.store
        conversation = await self.active()
        if conversation is None:
            conversation = await store.create_conversation(self.chat, request[:48], activate=True)
        user_row = await store.add_message(
            conversation.id, role=Role.USER, parts=[TextPart(request)], user_id=user_id
        )
        if platform_message_id:
            await store.link_platform_message(self.chat, platform_message_id, user_row.id)
        row = await store.add_message(
            conversation.id,
            role=Role.ASSISTANT,
            parts=list(reply),
            parent_id=user_row.id,
            user_id=user_id,
            provider=provider,
            model=model,
        )
        if usage is not None:
            await store.update_message(row.id, usage=usage)
        return int(row.id), int(conversation.id)

    async def link_platform_message(self, platform_message_id: str, message_id: int) -> None:
        """Record that the platform's message ``platform_message_id`` shows stored message
        ``message_id`` (a reply to it then continues from there)."""
        await self.store.link_platform_message(self.chat, platform_message_id, message_id)

    async def _by_number(self, number: int) -> Conversation:
        conversations = await self.list()
        if not 1 <= number <= len(conversations):
            raise CommandError(
                f"There is no conversation {number}. Use /list to see the {len(conversations)} there are."
            )
        return conversations[number - 1]

    async def switch(self, number: int) -> Conversation:
        """Make conversation ``number`` active. A reply streaming now is stopped and kept."""
        target = await self._by_number(number)
        await self.manager.stop(self.chat)
        return await self.store.set_active(self.chat, target.id)

    async def activate(self, conversation_id: int) -> Conversation:
        """Make the conversation with this id active (for UIs that address conversations by id).

        A reply streaming now is stopped and kept. Raises ``NotFoundError`` for an id of another
        chat or an unknown one.
        """
        conv = await self.store.get_conversation(conversation_id)
        if conv is None or conv.chat != self.chat:
            from relaybot.core.storage import NotFoundError

            raise NotFoundError(f"conversation {conversation_id} does not exist in {self.chat}")
        await self.manager.stop(self.chat)
        return await self.store.set_active(self.chat, conversation_id)

    async def rename(self, title: str, number: int | None = None) -> Conversation:
        """Rename conversation ``number`` (default: the active one)."""
        title = title.strip()
        if not title:
            raise CommandError("Give the new title, e.g. /rename Trip planning")
        conv = await self._by_number(number) if number else await self.active()
        if conv is None:
            raise CommandError("There is no conversation yet; send a message first.")
        await self.store.rename_conversation(conv.id, title[:200])
        return conv

    async def delete(self, number: int) -> Conversation:
        """Delete conversation ``number`` (its messages go unless another branch uses them)."""
        conv = await self._by_number(number)
        active = await self.active()
        if active is not None and active.id == conv.id:
            await self.manager.stop(self.chat)
        await self.store.delete_conversation(conv.id)
        return conv

    async def history(self, count: int = 10) -> builtins.list[StoredMessage]:
        """The last ``count`` messages of the active conversation, oldest first."""
        conv = await self.active()
        if conv is None or conv.leaf_id is None:
            return []
        path = await self.store.path(conv.leaf_id, limit=max(1, count))
        return list(path.messages)

    async def export(self, fmt: str = "md", number: int | None = None) -> str:
        """The conversation as Markdown (``md``) or JSON (``json``)."""
        conv = await self._by_number(number) if number else await self.active()
        if conv is None:
            raise CommandError("There is no conversation to export yet.")
        data = await self.store.export_conversation(conv.id)
        if fmt == "json":
            return json.dumps(data, ensure_ascii=False, indent=2, default=str)
        if fmt not in ("md", "markdown"):
            raise CommandError("Export format must be md or json, e.g. /export json")
        return export_markdown(data)

    async def stop(self) -> bool:
        """Stop the reply being written; True if there was one.

        In a shared chat only the sender's own reply is stopped (other people's replies go
        on); in a private chat, the chat's reply.
        """
        message = self.message
        person = None if message is None or message.is_private else message.user.id
        return await self.manager.stop(self.chat, person)


def _valid_id(value: Any) -> bool:
    """True when ``value`` is an int that could be a stored id (bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def export_markdown(data: dict[str, Any]) -> str:
    """Render an exported conversation (see ``Store.export_conversation``) as Markdown."""
    lines = [f"# {data.get('title') or '(untitled)'}", ""]
    for msg in data.get("messages", []):
        role = str(msg.get("role", "")).capitalize()
        status = msg.get("status", "complete")
        flag = "" if status in ("complete", None) else f" _({status})_"
        lines.append(f"**{role}**{flag} — {msg.get('created_at', '')}")
        lines.append("")
        lines.append(str(msg.get("text", "")))
        for part in msg.get("parts", []):
            if part.get("type") == "image":
                lines.append(f"![image]({part.get('uri', '')})")
            elif part.get("type") == "video":
                lines.append(f"[video]({part.get('uri', '')})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
