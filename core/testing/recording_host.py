"""RecordingHost: a :class:`~relaybot.ConnectorHost` with no bot behind it, for connector tests.

A connector's platform side (its login, its primitives against a fake server, what it makes of
platform events) can be tested without a running bot: start it with a ``RecordingHost``, drive
the fake platform, then look at what the connector handed in (:attr:`RecordingHost.delivered`),
the notices it sent (:attr:`RecordingHost.sent`) and the hook objects it added. Nothing is
answered: for end-to-end tests start a real bot (``relaybot.testing.BotHarness`` or
``Relaybot``) instead. What needs a bot (providers, conversations, cost estimates) raises
:class:`~relaybot.CapabilityError` saying so.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from relaybot.core.cli.config import RelaybotConfig, parse_config
from relaybot.core.contracts.commands import Command
from relaybot.core.contracts.connector import OutgoingKind
from relaybot.core.contracts.errors import CapabilityError
from relaybot.core.contracts.hooktypes import ReplyRecord
from relaybot.core.contracts.host import (
    ConnectorHost,
    CostEstimate,
    Handover,
    ReplyCost,
    SpendLedger,
    UsageLedger,
)
from relaybot.core.contracts.models import ChatKey, IncomingMessage, RequestOrigin, User
from relaybot.core.contracts.provider import BaseProvider, GeneratedImage, ImageRequest
from relaybot.core.contracts.spending import BaseSpendGuard
from relaybot.core.modelio.media import MediaStore
from relaybot.core.modelio.pricing import PriceTable, price_table
from relaybot.core.modelio.tokens import TokenCounter
from relaybot.core.runtime.conversations import ChatConversations
from relaybot.core.streaming import ReplyStream


class RecordingHost(ConnectorHost):
    """Records what a connector hands the core; see the module docstring.

    ``commands`` are what :attr:`commands` offers (for command menus); ``media_dir`` holds the
    media store (a temporary folder by default); ``config`` defaults to an empty bot config.
    """

    def __init__(
        self,
        connector_name: str = "test",
        *,
        commands: Sequence[Command] = (),
        media_dir: Path | None = None,
        config: RelaybotConfig | None = None,
    ) -> None:
        self._name = connector_name
        self._commands = sorted(commands, key=lambda c: c.name)
        self._tmp = None if media_dir is not None else tempfile.TemporaryDirectory(prefix="relaybot-host-")
        self._media = MediaStore(media_dir or Path(self._tmp.name if self._tmp else "."))
        self._config = config or parse_config({}, "<RecordingHost>")
        self._claimed: set[str] = set()
        #: every message handed in, in the order it was handed over (after its preparation)
        self.delivered: list[IncomingMessage] = []
        #: ``(chat, text, kind)`` of every :meth:`send`
        self.sent: list[tuple[ChatKey, str, OutgoingKind]] = []
        #: hook objects added with :meth:`add_hooks`, by name
        self.hooks: dict[str, object] = {}
        self._tails: dict[ChatKey, asyncio.Future[Handover]] = {}
        self._event = asyncio.Event()

    # ── what a connector uses ───────────────────────────────────────────────────────────────

    @property
    def connector_name(self) -> str:
        return self._name

    @property
    def config(self) -> RelaybotConfig:
        return self._config

    @property
    def media(self) -> MediaStore:
        return self._media

    @property
    def prices(self) -> PriceTable:
        return price_table(self._config)

    @property
    def commands(self) -> Sequence[Command]:
        return list(self._commands)

    def command(self, name: str) -> Command | None:
        return next((c for c in self._commands if c.name == name), None)

    def deliver(
        self, chat: ChatKey, message: IncomingMessage | Awaitable[IncomingMessage | None]
    ) -> asyncio.Future[Handover]:
        previous = self._tails.get(chat)
        prepared = None if isinstance(message, IncomingMessage) else asyncio.ensure_future(message)

        async def hand_over() -> Handover:
            ready = message if prepared is None else await prepared
            if previous is not None:
                await asyncio.wait([previous])
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            if not isinstance(ready, IncomingMessage):
                return Handover(False, done)
            self.delivered.append(ready)
            self._event.set()
            return Handover(True, done)

        future = asyncio.ensure_future(hand_over())
        self._tails[chat] = future
        return future

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[IncomingMessage]:
        """Wait until at least ``count`` messages were delivered; return them all."""

        async def enough() -> None:
            while len(self.delivered) < count:
                self._event.clear()
                await self._event.wait()

        await asyncio.wait_for(enough(), timeout)
        return list(self.delivered)

    async def claim_event(self, key: str) -> bool:
        if key in self._claimed:
            return False
        self._claimed.add(key)
        return True

    def add_hooks(self, plugin: object, name: str = "") -> None:
        self.hooks[name or f"{self._name}:{type(plugin).__name__}"] = plugin

    async def send(
        self,
        chat: ChatKey,
        text: str,
        *,
        private: bool = True,
        reply_to: str | None = None,
        kind: OutgoingKind = "notice",
    ) -> list[str]:
        self.sent.append((chat, text, kind))
        return []

    def is_admin(self, message: IncomingMessage) -> bool:
        admins = self._config.bot.admins
        return message.user.is_admin or f"{message.chat.platform}:{message.user.id}" in admins

    def admin_chats(self) -> tuple[ChatKey, ...]:
        return ()

    # ── what needs a running bot ────────────────────────────────────────────────────────────

    def _no_bot(self, what: str) -> NoReturn:
        raise CapabilityError(f"{what} needs a running bot; RecordingHost only records deliveries")

    @property
    def usage(self) -> UsageLedger:
        self._no_bot("usage records")

    @property
    def spending(self) -> SpendLedger:
        self._no_bot("spend records")

    @property
    def spend_guard(self) -> BaseSpendGuard | None:
        return None

    @property
    def plugin_settings(self) -> Mapping[str, Any]:
        return {}

    def provider(self, name: str | None = None) -> BaseProvider:
        self._no_bot("a provider")

    def provider_type(self, name: str) -> str:
        return self._config.provider_type(name)

    def token_counter(self, provider: str) -> TokenCounter:
        self._no_bot("a token counter")

    async def generate_image(
        self, provider: str, request: ImageRequest, *, origin: RequestOrigin | None
    ) -> GeneratedImage:
        self._no_bot("image generation")

    def conversations(self, chat: ChatKey, message: IncomingMessage | None = None) -> ChatConversations:
        self._no_bot("conversations")

    def open_stream(
        self,
        chat: ChatKey,
        *,
        private: bool = True,
        reply_to: str | None = None,
        kind: OutgoingKind = "command",
        feedback: bool = False,
    ) -> ReplyStream:
        self._no_bot("a scheduler stream")

    async def delete_old_conversations(self, cutoff: datetime, *, media: bool = True) -> tuple[int, int]:
        self._no_bot("retention")

    async def regenerate(self, chat: ChatKey, user: User, *, private: bool = True) -> Handover:
        self._no_bot("regenerating an answer")

    async def estimate(self, chat: ChatKey, text: str, *, conversation_id: int | None = None) -> CostEstimate:
        self._no_bot("a cost estimate")

    def reply_cost(self, reply: ReplyRecord) -> ReplyCost | None:
        return None

    def close(self) -> None:
        """Remove the temporary media folder (when this host made one)."""
        if self._tmp is not None:
            self._tmp.cleanup()
