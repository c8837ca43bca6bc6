"""The connector contract: how a chat platform plugs into the core.

A connector plugin registers a :class:`ConnectorType` through the ``register_connectors``
hook. The core builds one instance per ``[connectors.NAME]`` table and calls :meth:`start`
with a handler; the connector turns platform updates into
:class:`~relaybot.core.models.IncomingMessage` values and awaits the handler for each.

Outgoing, the connector offers a few *primitives* (send, edit, draft, typing). It never decides
when to call them for a streamed reply: the core's streaming scheduler does, within the
:class:`StreamPolicy` the connector declares.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .models import ChatKey, IncomingMessage

#: What connectors call for each incoming message. It returns quickly with a future that is done
#: when the message has been fully answered (connectors may ignore it; the terminal waits on it).
MessageHandler = Callable[[IncomingMessage], Awaitable["asyncio.Future[None] | None"]]


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """A platform's streaming limits and abilities, as data.

    Intervals are the minimum seconds between two requests (send or edit) into one chat;
    every reply streaming in that chat shares that budget. ``global_rate`` caps requests per
    second across all chats of this connector. Admins may override these in config because
    platforms rarely publish exact numbers.
    """

    #: maximum length of one message, counted in ``length_unit``
    max_length: int = 4096
    #: "chars" (code points) or "utf16" (UTF-16 code units, as Telegram and Discord count)
    length_unit: Literal["chars", "utf16"] = "chars"
    #: minimum seconds between requests into one private chat
    private_interval: float = 1.0
    #: minimum seconds between requests into one group chat
    group_interval: float = 3.0
    #: requests per second across all chats (0 = unlimited)
    global_rate: float = 30.0
    #: the platform can edit a sent message (progressive editing)
    can_edit: bool = True
    #: the platform has native draft streaming in private chats (Telegram sendMessageDraft)
    native_draft: bool = False
    #: refresh the typing indicator every N seconds until the first frame (None: no indicator)
    typing_interval: float | None = 4.5


class BaseConnectorConfig(BaseModel):
    """Keys every ``[connectors.NAME]`` table accepts. Connector plugins subclass this."""

    model_config = ConfigDict(extra="forbid")

    #: which connector plugin serves this table; defaults to the table name
    type: str = ""
    enabled: bool = True


class BaseConnector(abc.ABC):
    """A chat platform connection.

    Primitives raise :class:`~relaybot.core.errors.PlatformRateLimitError` on 429 (with the
    platform's ``retry_after``), :class:`~relaybot.core.errors.MessageNotModifiedError` when an
    edit changes nothing, and :class:`~relaybot.core.errors.MessageGoneError` when the chat or
    message is gone. They must not retry 429s themselves: the scheduler owns pacing.
    """

    #: the config name (``[connectors.NAME]``); also the ``platform`` of its ChatKeys
    name: str
    policy: StreamPolicy = StreamPolicy()
    #: the running :class:`~relaybot.core.app.Relaybot`, set before :meth:`start`. Connectors with
    #: their own UI for conversations (the web chat) use ``app.dispatcher.conversations(chat)``,
    #: ``app.media`` for uploads and ``app.plugins`` to register per-instance hook objects.
    app: Any = None

    @abc.abstractmethod
    async def start(self, handler: MessageHandler) -> None:
        """Connect and start delivering messages to ``handler``; return once running.

        The handler returns quickly (the core answers in background tasks).
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop receiving and close connections. Must return even if the platform hangs."""

    async def aclose(self) -> None:  # noqa: B027 - optional: most connectors close in stop()
        """Release clients after the last reply was delivered (called after :meth:`stop` and after
        the schedulers finished, so final "interrupted" edits can still go out). Idempotent."""

    @abc.abstractmethod
    async def send_text(
        self, chat: ChatKey, text: str, *, final: bool = True, reply_to: str | None = None
    ) -> str:
        """Send a new message and return its platform id.

        ``final=False`` marks a mid-stream frame: send it as plain/safe text that cannot fail
        on half-written Markdown. ``final=True`` may be fully formatted, and must fall back to
        plain text if the platform rejects the formatting.
        """

    async def edit_text(self, chat: ChatKey, message_id: str, text: str, *, final: bool) -> None:
        """Replace the text of a message this connector sent (same ``final`` rules)."""
        raise NotImplementedError(f"{type(self).__name__} cannot edit messages")

    async def send_draft(self, chat: ChatKey, draft_id: int, text: str) -> None:
        """Show ``text`` as an animated draft (native streaming). Empty text: a placeholder.

        Raise :class:`~relaybot.core.errors.PlatformError` when drafts are not possible in this
        chat; the scheduler then falls back to send-then-edit for this stream.
        """
        raise NotImplementedError(f"{type(self).__name__} has no drafts")

    async def send_typing(self, chat: ChatKey) -> None:  # noqa: B027 - optional primitive
        """Show a typing indicator (best effort; errors are ignored by the caller)."""

    async def send_image(
        self, chat: ChatKey, image: bytes, *, caption: str = "", mime_type: str = "image/png"
    ) -> str:
        """Send an image with an optional caption; return the platform message id."""
        raise NotImplementedError(f"{type(self).__name__} cannot send images")


ConnectorFactory = Callable[[str, Any], BaseConnector]


@dataclass(frozen=True, slots=True)
class ConnectorType:
    """A kind of connector a plugin offers, selected by the ``[connectors.NAME]`` table."""

    type: str
    config_model: builtins.type[BaseConnectorConfig]
    factory: ConnectorFactory
    description: str = ""
