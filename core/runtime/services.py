"""The typed boundary implemented on the running bot (see :mod:`relaybot.core.contracts.host`).

:class:`AppServices` is what plugins get (``ctx.bot``, the lifecycle hooks, the spend guard);
:class:`AppConnectorHost` is what each connector gets in ``start()``: one per connector, so the
hook objects it adds live exactly as long as it does, and each chat's messages are handed to
the dispatcher in the order the connector delivered them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from relaybot.core.contracts.commands import Command
from relaybot.core.contracts.connector import OutgoingKind
from relaybot.core.contracts.errors import CapabilityError
from relaybot.core.contracts.hooktypes import ReplyRecord
from relaybot.core.contracts.host import (
    BotServices,
    ConnectorHost,
    CostEstimate,
    Handover,
    ReplyCost,
    SpendLedger,
    UsageLedger,
)
from relaybot.core.contracts.models import (
    ChatKey,
    ChatMessage,
    IncomingMessage,
    RequestOrigin,
    Role,
    TextPart,
    User,
)
from relaybot.core.contracts.redact import redact
from relaybot.core.contracts.spending import PlannedCall
from relaybot.core.modelio.context import input_budget
from relaybot.core.runtime.conversations import ChatConversations

if TYPE_CHECKING:
    from relaybot.core.cli.config import RelaybotConfig
    from relaybot.core.contracts.provider import BaseProvider, GeneratedImage, ImageRequest
    from relaybot.core.contracts.spending import BaseSpendGuard
    from relaybot.core.modelio.media import MediaStore
    from relaybot.core.modelio.pricing import PriceTable
    from relaybot.core.modelio.tokens import TokenCounter
    from relaybot.core.runtime.app import Relaybot
    from relaybot.core.streaming import ReplyStream

log = logging.getLogger("relaybot.host")

#: per-message framing the context builder counts too (see relaybot.core.modelio.tokens)
_REPLY_PRIMING = 3


def _done(value: Any = None) -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


class AppServices(BotServices):
    """:class:`~relaybot.core.contracts.host.BotServices` over a running
    :class:`~relaybot.core.runtime.app.Relaybot`."""

    def __init__(self, app: Relaybot) -> None:
        self._app = app

    @property
    def config(self) -> RelaybotConfig:
        return self._app.config

    @property
    def prices(self) -> PriceTable:
        return self._app.prices

    @property
    def media(self) -> MediaStore:
        return self._app.media

    @property
    def usage(self) -> UsageLedger:
        return self._store()

    @property
    def spending(self) -> SpendLedger:
        return self._store()

    @property
    def spend_guard(self) -> BaseSpendGuard | None:
        return self._app.spend_guard

    @property
    def plugin_settings(self) -> Mapping[str, Any]:
        return self._app.plugin_settings

    def _store(self) -> Any:
        if self._app.store is None:
            raise CapabilityError("storage is not open (the bot is not started)")
        return self._app.store

    def provider(self, name: str | None = None) -> BaseProvider:
        name = name or self._app.config.default_provider
        try:
            return self._app.providers[name]
        except KeyError:
            raise CapabilityError(f"provider {name!r} is not running") from None

    def provider_type(self, name: str) -> str:
        return self._app.provider_type(name)

    def token_counter(self, provider: str) -> TokenCounter:
        return self._app.token_counter(provider)

    async def generate_image(
        self, provider: str, request: ImageRequest, *, origin: RequestOrigin | None
    ) -> GeneratedImage:
        running: Any = self.provider(provider)  # a ResilientProvider: guarded + generate_image
        call = PlannedCall(
            provider=provider,
            model=request.model,
            kind="image",
            origin=origin,
            prompt=request.prompt,
            image_size=request.size,
        )
        async with running.guarded(call) as spend:
            image: GeneratedImage = await running.generate_image(request)
            spend.usage, spend.images = image.usage, 1
        return image

    def is_admin(self, message: IncomingMessage) -> bool:
        return self._app.is_admin(message)

    def admin_chats(self) -> tuple[ChatKey, ...]:
        chats = []
        for admin in self._app.config.bot.admins:
            platform, sep, user = admin.partition(":")
            if sep and platform and user:
                chats.append(ChatKey(platform, user))
        return tuple(chats)

    def conversations(self, chat: ChatKey, message: IncomingMessage | None = None) -> ChatConversations:
        return ChatConversations(self._store(), self._app.turns, chat, message)

    async def send(
        self,
        chat: ChatKey,
        text: str,
        *,
        private: bool = True,
        reply_to: str | None = None,
        kind: OutgoingKind = "notice",
    ) -> list[str]:
        self._require_connector(chat)
        return await self._app.dispatcher.send(chat, text, private=private, reply_to=reply_to, kind=kind)

    def open_stream(
        self,
        chat: ChatKey,
        *,
        private: bool = True,
        reply_to: str | None = None,
        kind: OutgoingKind = "command",
        feedback: bool = False,
    ) -> ReplyStream:
        self._require_connector(chat)
        return self._app.scheduler(chat.platform).open(
            chat, private=private, reply_to=reply_to, feedback=feedback, kind=kind
        )

    def _require_connector(self, chat: ChatKey) -> None:
        if chat.platform not in self._app.connectors:
            raise CapabilityError(f"cannot send to {chat}: no connector {chat.platform!r} runs here")

    async def delete_old_conversations(self, cutoff: datetime, *, media: bool = True) -> tuple[int, int]:
        from relaybot.core.storage.retention import delete_conversations, media_in_use, old_conversations

        store = self._store()
        removed = 0
        while True:
            ids = await store.run_sync(old_conversations, cutoff, limit=100)
            if not ids:
                break
            removed += await store.run_sync(delete_conversations, ids)
        files = 0
        if media:
            keep = await store.run_sync(media_in_use)
            files = await asyncio.to_thread(self._app.media.sweep, keep=keep, older_than=cutoff.timestamp())
        return removed, files


class AppConnectorHost(AppServices, ConnectorHost):
    """:class:`~relaybot.core.contracts.host.ConnectorHost` for one connector of a running bot."""

    def __init__(self, app: Relaybot, connector_name: str) -> None:
        super().__init__(app)
        self._name = connector_name
        #: per chat, the task handing over the last message delivered (keeps each chat in order)
        self._tails: dict[ChatKey, asyncio.Task[Any]] = {}
        self._hook_names: list[str] = []

    @property
    def connector_name(self) -> str:
        return self._name

    @property
    def commands(self) -> Sequence[Command]:
        return list(self._app.registrations.commands)

    def command(self, name: str) -> Command | None:
        return self._app.registrations.commands.get(name)

    # ── intake ──────────────────────────────────────────────────────────────────────────────

    def deliver(
        self, chat: ChatKey, message: IncomingMessage | Awaitable[IncomingMessage | None]
    ) -> asyncio.Future[Handover]:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Handover] = loop.create_future()
        # a preparation (a download) starts now, so one chat's downloads run side by side
        prepared = None if isinstance(message, IncomingMessage) else asyncio.ensure_future(message)
        previous = self._tails.get(chat)
        handing = self._hand_over(chat, message, prepared, previous, result)
        task = loop.create_task(handing, name=f"deliver:{chat}")
        self._tails[chat] = task

        def forget(done: asyncio.Task[Any]) -> None:
            if self._tails.get(chat) is done:
                del self._tails[chat]
            if not result.done():  # cancelled before it could say (shutdown)
                result.set_result(Handover(False, _done()))

        task.add_done_callback(forget)
        return result

    async def _hand_over(
        self,
        chat: ChatKey,
        message: Any,
        prepared: asyncio.Future[IncomingMessage | None] | None,
        previous: asyncio.Task[Any] | None,
        result: asyncio.Future[Handover],
    ) -> None:
        ready: IncomingMessage | None = message if prepared is None else None
        if prepared is not None:
            try:
                ready = await prepared
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("%s: preparing a message failed: %s", chat, redact(repr(exc)), exc_info=exc)
        if previous is not None and not previous.done():
            await asyncio.wait([previous])  # its failure is its own; never cancel it from here
        if ready is None:
            result.set_result(Handover(False, _done()))
            return
        answered = await self._app.dispatcher.handle(ready)
        result.set_result(Handover(True, answered))

    async def claim_event(self, key: str) -> bool:
        return bool(await self._store().claim_event(self._name, key))

    async def regenerate(self, chat: ChatKey, user: User, *, private: bool = True) -> Handover:
        return Handover(True, await self._app.dispatcher.regenerate(chat, user, private=private))

    # ── hook objects ────────────────────────────────────────────────────────────────────────

    def add_hooks(self, plugin: object, name: str = "") -> None:
        name = name or f"{self._name}:{type(plugin).__name__}"
        plugins = self._app.plugins
        if plugins.pm.has_plugin(name):
            return  # a connector started twice (tests restart one): the object is there already
        plugins.register(plugin, name)
        plugins.check()
        self._hook_names.append(name)

    def remove_hooks(self) -> None:
        """Unregister every hook object this connector added (the core calls this once the
        connector is closed)."""
        for name in self._hook_names:
            if self._app.plugins.pm.has_plugin(name):
                self._app.plugins.pm.unregister(name=name)
        self._hook_names.clear()

    # ── costs ───────────────────────────────────────────────────────────────────────────────

    async def estimate(self, chat: ChatKey, text: str, *, conversation_id: int | None = None) -> CostEstimate:
        app = self._app
        name = app.config.default_provider
        provider = app.provider(name)
        counter = app.token_counter(name)
        caps = provider.capabilities
        tokens = counter.count_text(app.config.bot.system_prompt) + _REPLY_PRIMING
        budget = input_budget(caps.context_window, caps.max_output_tokens)
        if text:
            tokens += counter.count_message(ChatMessage(Role.USER, [TextPart(text)]))
        # the stored counts of the history that fits, newest first (as the context builder does)
        history = await self.conversations(chat).context_path(conversation_id, budget)
        for stored in reversed(history):
            if tokens + stored.token_count > budget:
                break
            tokens += stored.token_count
        price = app.prices.for_call(app.config.provider_type(name), provider.model)
        max_out = caps.max_output_tokens
        return CostEstimate(
            context_tokens=tokens,
            max_output_tokens=max_out,
            model=provider.model,
            estimated=not counter.exact,
            input_usd=None if price is None else price.worst_case(tokens, 0),
            max_usd=None if price is None else price.worst_case(tokens, max_out),
            prices_as_of=app.prices.as_of,
        )

    def reply_cost(self, reply: ReplyRecord) -> ReplyCost | None:
        usage = reply.usage
        if usage is None:
            return None
        app = self._app
        price = app.prices.for_call(app.config.provider_type(reply.provider), reply.model)
        return ReplyCost(
            model=reply.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            estimated=usage.estimated,
            cost_usd=None if price is None else price.cost(usage),
        )
