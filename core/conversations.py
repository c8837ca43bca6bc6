"""Per-chat conversation state: one writer per chat, busy policy, and the conversation API.

:class:`ConversationManager` owns, for every :class:`~relaybot.core.models.ChatKey`, a FIFO lock
(one reply at a time per chat, so replies never mix) and the task of the reply now streaming.
A new message while a reply streams follows ``bot.busy_policy``: ``interrupt`` cancels the
running reply (its partial text is kept, marked interrupted) or ``queue`` waits its turn.
Different chats never block each other.

:class:`ConversationService` is the public API commands use (``ctx.conversations``): new,
list, switch, rename, delete, history, export, stop — always for one chat.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import CommandError
from .models import ChatKey, IncomingMessage

if TYPE_CHECKING:
    from .storage import Conversation, Store, StoredMessage

log = logging.getLogger("relaybot.conversations")


@dataclass
class ChatState:
    """Live state of one chat (in memory only; storage holds everything durable)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: the reply task streaming now, if any
    current: asyncio.Task[Any] | None = None
    #: conversations whose user was already told that old turns were left out
    truncation_noticed: set[int] = field(default_factory=set)


class ConversationManager:
    """Serialises replies per chat and applies the busy policy."""

    def __init__(self, busy_policy: str = "interrupt") -> None:
        self.busy_policy = busy_policy
        self._chats: dict[ChatKey, ChatState] = {}

    def state(self, chat: ChatKey) -> ChatState:
        """The live state of ``chat`` (created on first use)."""
        state = self._chats.get(chat)
        if state is None:
            state = self._chats[chat] = ChatState()
        return state

    def is_streaming(self, chat: ChatKey) -> bool:
        """True while a reply runs in ``chat``."""
        task = self.state(chat).current
        return task is not None and not task.done()

    async def cancel_current(self, chat: ChatKey) -> bool:
        """Cancel the reply streaming in ``chat`` and wait until its partial text is saved.

        Returns True if there was one.
        """
        task = self.state(chat).current
        if task is None or task.done():
            return False
        task.cancel()
        # the reply task saves its partial text before it ends; wait for that, not for more
        await asyncio.gather(task, return_exceptions=True)
        return True

    async def run_exclusive(self, chat: ChatKey, reply: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``reply`` as the chat's only writer, applying the busy policy first."""
        state = self.state(chat)
        if self.busy_policy == "interrupt" and self.is_streaming(chat):
            await self.cancel_current(chat)
        async with state.lock:
            task = asyncio.create_task(reply())
            state.current = task
            try:
                # shield: cancelling *this* waiter (e.g. shutdown of the dispatcher task) cancels
                # the reply below explicitly, so the partial text is always saved first
                await asyncio.shield(task)
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    raise
                # only the reply was cancelled (interrupt, /stop, switch): the message has been
                # handled — its partial answer is saved and marked — so this is no error
            finally:
                if state.current is task:
                    state.current = None

    async def cancel_all(self) -> None:
        """Cancel every live reply (shutdown): partial texts are saved as interrupted."""
        tasks = [s.current for s in self._chats.values() if s.current and not s.current.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def conversation_title(conv: Conversation) -> str:
    """A display title: the stored title, or a placeholder."""
    return conv.title or "(untitled)"


class ConversationService:
    """The conversations of one chat, as commands see them (``ctx.conversations``)."""

    def __init__(
        self,
        store: Store,
        manager: ConversationManager,
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
        await self.manager.cancel_current(self.chat)
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
        await self.manager.cancel_current(self.chat)
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
        await self.manager.cancel_current(self.chat)
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
            await self.manager.cancel_current(self.chat)
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
        """Stop the reply streaming in this chat; True if there was one."""
        return await self.manager.cancel_current(self.chat)


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
