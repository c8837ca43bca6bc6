"""Temporary: the part of the typed host the connector uses, on top of the running app.

The core still starts connectors with ``start(handler)`` and ``connector.app`` until the typed
host (``ConnectorHost``, issue 12) lands; this adapter gives the connector the same surface
meanwhile, so the connector itself is written against the host only. Delete this module when
``BaseConnector.start`` receives a ``ConnectorHost``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from relaybot import ChatKey, Command, IncomingMessage, MessageHandler

log = logging.getLogger("relaybot.connectors.discord")


@dataclass(frozen=True, slots=True)
class _Handover:
    accepted: bool
    answered: asyncio.Future[None]


class LegacyHost:
    """``deliver`` / ``send`` / ``commands`` / ``command`` / ``media`` / ``add_hooks`` on the app."""

    def __init__(self, app: Any, handler: MessageHandler, name: str) -> None:
        self._app = app
        self._handler = handler
        self.connector_name = name
        self._tails: dict[ChatKey, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._hooks: list[str] = []

    @property
    def config(self) -> Any:
        return self._app.config

    @property
    def media(self) -> Any:
        return self._app.media

    @property
    def commands(self) -> Sequence[Command]:
        return sorted(self._app.registrations.commands, key=lambda c: c.name)

    def command(self, name: str) -> Command | None:
        result: Command | None = self._app.registrations.commands.get(name)
        return result

    def add_hooks(self, plugin: object, name: str = "") -> None:
        name = name or f"{self.connector_name}-discord"
        self._app.plugins.pm.register(plugin, name=name)
        self._hooks.append(name)

    def remove_hooks(self) -> None:
        for name in self._hooks:
            try:
                self._app.plugins.pm.unregister(name=name)
            except Exception:
                log.debug("hook object %s was already unregistered", name)
        self._hooks.clear()

    async def send(
        self,
        chat: ChatKey,
        text: str,
        *,
        private: bool = True,
        reply_to: str | None = None,
        kind: Any = "notice",
    ) -> list[str]:
        stream = self._app.scheduler(chat.platform).open(
            chat, private=private, reply_to=reply_to, feedback=False, kind=kind
        )
        stream.append(text)
        result = await stream.finish()
        return list(result.message_ids)

    def deliver(
        self, chat: ChatKey, message: IncomingMessage | Awaitable[IncomingMessage | None]
    ) -> asyncio.Future[_Handover]:
        loop = asyncio.get_running_loop()
        handover: asyncio.Future[_Handover] = loop.create_future()
        previous = self._tails.get(chat)
        prepared = asyncio.ensure_future(message) if inspect.isawaitable(message) else None

        async def run() -> None:
            answered: asyncio.Future[None] = loop.create_future()
            try:
                incoming = message if prepared is None else await prepared
                if previous is not None and not previous.done():
                    await asyncio.wait([previous])
                if incoming is None:
                    answered.set_result(None)
                    handover.set_result(_Handover(False, answered))
                    return
                assert isinstance(incoming, IncomingMessage)
                task = await self._handler(incoming)
                handover.set_result(_Handover(True, answered))
                if task is not None:
                    await asyncio.wait([task])
                answered.set_result(None)
            except Exception:
                log.exception("handing a Discord message in %s over failed", chat)
                if not answered.done():
                    answered.set_result(None)
                if not handover.done():
                    handover.set_result(_Handover(False, answered))

        task = loop.create_task(run(), name=f"discord-in:{chat}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._tails[chat] = handover
        return handover

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
