"""The conversation API commands use (``ctx.conversations``): new, list, switch, rename,
delete, history, export, stop — always for one chat.

Who is answered when (the busy policy, concurrent replies in shared chats) is
:mod:`relaybot.core.turns`; changing the conversation (``new``, ``switch``, deleting the
active one) first stops the chat's running replies, which keeps their partial text.
"""

from __future__ import annotations

import builtins
import json
import logging
from typing import TYPE_CHECKING, Any

from .errors import CommandError
from .models import ChatKey, IncomingMessage

if TYPE_CHECKING:
    from .storage import Conversation, Store, StoredMessage
    from .turns import TurnManager

log = logging.getLogger("relaybot.conversations")


class ConversationService:
    """The conversations of one chat, as commands see them (``ctx.conversations``)."""

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

    async def list(self) -> list[Conversation]:
        """All conversations of the chat, oldest first, numbered from 1."""
        return await self.store.list_conversations(self.chat)

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
            from .storage import NotFoundError

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
