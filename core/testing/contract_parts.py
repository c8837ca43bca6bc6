"""The parts of the connector contract kit the suite is built from (:mod:`.connector_contract`):
how a chat is addressed (:class:`ContractChat`), what the platform shows (:class:`Shown`), the
running bot under test (:class:`ContractBot`), and the helpers the checks use. Exported from
:mod:`relaybot.testing` with the suite.
"""


from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from relaybot.core.contracts.hookspecs import hookimpl
from relaybot.core.contracts.hooktypes import AccessDecision
from relaybot.core.contracts.models import ChatKey, IncomingMessage
from relaybot.core.storage import StoredMessage
from relaybot.core.streaming import INTERRUPTED_MARKER

#: generous: the checks wait for events, never for time, but a loaded machine is slow
WAIT = 20.0
#: how long "nothing more happens" is watched after a result (a late duplicate would show)
SETTLE = 0.4
#: what the suite's access plugin tells a denied person
DENIED_TEXT = "Sorry, this bot is private."


@dataclass(frozen=True, slots=True)
class ContractChat:
    """A chat on the platform, as the adapter addresses it.

    ``key`` is the :class:`~relaybot.ChatKey` relaybot stores it under; ``ref`` whatever the
    adapter needs to reach it on the fake (a chat id, a browser's client id); ``users`` the
    relaybot user ids (``IncomingMessage.user.id``) of the people who write in it, by
    ``person`` index; ``group`` whether it is a group chat.
    """

    key: ChatKey
    ref: Any
    users: tuple[str, ...]
    group: bool = False


@dataclass(frozen=True, slots=True)
class Shown:
    """One bot message as the platform shows it now.

    ``text`` without the interruption marker (``interrupted`` says it was there); ``id`` the
    platform's message id; ``reply_to`` the platform id of the message it replies to (None
    where the platform has no replies); ``image`` whether it is a picture (``text`` is then its
    caption).
    """

    text: str
    id: str | None = None
    reply_to: str | None = None
    image: bool = False
    interrupted: bool = False


def split_interrupted(text: str, marker: str = INTERRUPTED_MARKER) -> tuple[str, bool]:
    """``(text without the marker paragraph, whether it was there)`` — the inverse of
    :func:`~relaybot.mark_interrupted`, for platforms that show the marker as text."""
    if text == marker:
        return "", True
    if text.endswith("\n\n" + marker):
        return text[: -len(marker) - 2], True
    return text, False


def joins_to(parts: Sequence[str], text: str) -> bool:
    """True when ``parts`` are ``text`` cut at whitespace, in order, with nothing lost or added.

    Each part is a non-empty piece of ``text`` as it stands; between two parts there is at least
    one whitespace character of ``text`` (a split never falls inside a word, and the whitespace
    at a cut is the platform's to trim); only whitespace may precede the first or follow the last.
    """
    pos = 0
    for index, part in enumerate(parts):
        if not part:
            return False
        start = pos
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if index and pos == start:
            return False  # cut inside a word
        if not text.startswith(part, pos):
            return False
        pos += len(part)
    return bool(parts) and not text[pos:].strip()


def long_text(length: int) -> str:
    """Plain prose of about ``length`` characters in paragraphs (no Markdown: every platform
    shows it as it is), with accents and an emoji so that UTF-16 counting matters."""
    sentences: list[str] = []
    size = 0
    i = 0
    while size < length:
        sentence = f"Sentence {i} of the long answer says café, naïve and 😀 in plain words."
        sentences.append(sentence)
        size += len(sentence) + 1
        i += 1
    paragraphs = [" ".join(sentences[j : j + 7]) for j in range(0, len(sentences), 7)]
    return "\n\n".join(paragraphs)


async def wait_until(
    check: Callable[[], Any] | Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.02)


class DenyUserPlugin:
    """The suite's access plugin: one person in one chat is denied, politely."""

    def __init__(self, chat: ChatKey, user: str) -> None:
        self.chat = chat
        self.user = user

    @hookimpl
    def check_access(self, message: IncomingMessage) -> AccessDecision | None:
        if message.chat == self.chat and message.user.id == self.user:
            return AccessDecision.deny(DENIED_TEXT)
        return None


async def chat_messages(store: Any, chat: ChatKey) -> list[StoredMessage]:
    """Every message stored for ``chat``, by id (the store's API walks one path at a time)."""
    import sqlalchemy as sa

    from relaybot.core.storage import queries
    from relaybot.core.storage.schema import chats, messages

    stmt = (
        sa.select(messages)
        .join_from(messages, chats, messages.c.chat_id == chats.c.id)
        .where(queries.chat_matches(chat))
        .order_by(messages.c.id)
    )

    def read(conn: sa.Connection) -> list[StoredMessage]:
        return [queries.message_from_row(row) for row in conn.execute(stmt)]

    return list(await store.run_sync(read))


def png(size: int = 32, color: str = "red") -> bytes:
    """A small PNG (Pillow)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()
