"""From an incoming message to an answer: access check, command or model reply.

Connectors call :meth:`Dispatcher.handle` for every message. It returns at once with a task, so
a slow reply never blocks a connector's receive loop, and never raises: errors reach the
``on_error`` hook and the user gets a short, honest message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from .commands import CommandContext, parse_command
from .connector import OutgoingKind
from .conversations import ConversationService
from .errors import CommandError, RelaybotError
from .models import ChatKey, IncomingMessage, User
from .redact import redact
from .replies import ReplyRunner

if TYPE_CHECKING:
    from .app import Relaybot

log = logging.getLogger("relaybot.dispatcher")

#: a denied user is told why at most once per this many seconds (no spam, no silence)
DENIAL_REPEAT_SECONDS = 3600.0


class Dispatcher:
    """Routes messages; one per running bot."""

    def __init__(self, app: Relaybot) -> None:
        self.app = app
        self._tasks: set[asyncio.Task[None]] = set()
        self._denied: dict[tuple[str, str], float] = {}
        #: per chat, the task of the last ordered command still running: later messages of the
        #: chat wait for it (see Command.ordered)
        self._barriers: dict[ChatKey, asyncio.Task[None]] = {}

    async def handle(self, message: IncomingMessage) -> asyncio.Task[None]:
        """Start handling ``message`` in the background; the task ends when it is answered.

        Messages of one chat must be handed in in the order they were sent. A message that
        follows an ordered command (``/new``, ``/switch`` …) starts only once that command has
        finished; everything else starts at once (replies are serialised per chat by the
        conversation manager).
        """
        chat = message.chat
        barrier = self._barriers.get(chat)
        if barrier is not None and barrier.done():
            barrier = None
        task = asyncio.create_task(self._process(message, after=barrier), name=f"relaybot:{chat}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._is_ordered_command(message.text):
            self._barriers[chat] = task
            task.add_done_callback(lambda done: self._drop_barrier(chat, done))
        return task

    def _is_ordered_command(self, text: str) -> bool:
        parsed = parse_command(text)
        if parsed is None:
            return False
        command = self.app.registrations.commands.get(parsed[0])
        return command is None or command.ordered  # unknown: answered at once anyway

    def _drop_barrier(self, chat: ChatKey, done: asyncio.Task[None]) -> None:
        if self._barriers.get(chat) is done:
            del self._barriers[chat]

    async def drain(self) -> None:
        """Wait for every message being handled (used at shutdown after replies were stopped)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _process(self, message: IncomingMessage, after: asyncio.Task[None] | None = None) -> None:
        if after is not None:
            # the command before this message must take effect first; its own failure is
            # reported by its own task, and cancelling this wait must not cancel it
            await asyncio.wait([after])
        try:
            decision = self.app.plugins.hook.check_access(message=message)
            if decision is not None and not decision.allowed:
                await self._deny(message, decision.reason)
                return
            parsed = parse_command(message.text)
            if parsed is not None:
                await self._command(message, *parsed)
                return
            await self._reply(message)
        except asyncio.CancelledError:
            raise
        except CommandError as exc:
            await self.send(message.chat, str(exc), private=message.is_private)
        except Exception as exc:
            log.error("handling a message in %s failed: %s", message.chat, redact(repr(exc)), exc_info=exc)
            self.app.plugins.notify("on_error", error=exc, message=message)
            user_message = exc.user_message if isinstance(exc, RelaybotError) else RelaybotError.user_message
            try:
                await self.send(message.chat, "⚠️ " + user_message, private=message.is_private)
            except Exception:
                log.warning("could not tell %s about the failure", message.chat)

    async def _deny(self, message: IncomingMessage, reason: str) -> None:
        key = (str(message.chat), message.user.id)
        now = time.monotonic()
        last = self._denied.get(key)
        if last is not None and now - last < DENIAL_REPEAT_SECONDS:
            log.debug("denied again (silently) %s in %s", message.user.id, message.chat)
            return
        self._denied[key] = now
        await self.send(
            message.chat, reason or "Sorry, you are not allowed to use this bot.", private=message.is_private
        )

    async def _command(self, message: IncomingMessage, name: str, args: str) -> None:
        registry = self.app.registrations.commands
        command = registry.get(name)
        if command is None:
            await self.send(
                message.chat, f"Unknown command /{name}. Send /help for the list.", private=message.is_private
            )
            return
        if command.admin_only and not self.app.is_admin(message):
            await self.send(message.chat, f"/{name} is for admins only.", private=message.is_private)
            return

        async def reply(text: str) -> Any:
            return await self.send(message.chat, text, private=message.is_private, kind="command")

        ctx = CommandContext(
            message=message,
            command=name,
            args=args,
            reply=reply,
            conversations=self.conversations(message.chat, message),
            registry=registry,
            app=self.app,
        )
        await command.handler(ctx)

    async def _reply(self, message: IncomingMessage, *, regenerate: bool = False) -> None:
        scheduler = self.app.scheduler(message.chat.platform)
        # open first: the typing indicator / draft placeholder goes out before any storage work
        stream = scheduler.open(
            message.chat, private=message.is_private, reply_to=message.platform_message_id
        )
        runner = ReplyRunner(self.app, message, stream, regenerate=regenerate)
        await self.app.conversations.run_exclusive(message.chat, runner.run)

    async def regenerate(self, chat: ChatKey, user: User, *, private: bool = True) -> asyncio.Task[None]:
        """Answer the last user message of the active conversation again, as a new branch.

        The previous answer stays in the message tree; the conversation continues from the new
        one. Returns at once with a task, like :meth:`handle`.
        """
        message = IncomingMessage(chat=chat, user=user, text="", is_private=private)

        async def run() -> None:
            try:
                decision = self.app.plugins.hook.check_access(message=message)
                if decision is not None and not decision.allowed:
                    await self._deny(message, decision.reason)
                    return
                await self._reply(message, regenerate=True)
            except asyncio.CancelledError:
                raise
            except CommandError as exc:
                await self.send(chat, str(exc), private=private)
            except Exception as exc:
                log.error("regenerating in %s failed: %s", chat, redact(repr(exc)), exc_info=exc)
                self.app.plugins.notify("on_error", error=exc, message=message)

        task = asyncio.create_task(run(), name=f"relaybot:regenerate:{chat}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def conversations(self, chat: ChatKey, message: IncomingMessage | None = None) -> ConversationService:
        """The conversation API for ``chat``."""
        return ConversationService(self.app.store, self.app.conversations, chat, message)

    async def send(
        self, chat: ChatKey, text: str, *, private: bool = True, kind: OutgoingKind = "notice"
    ) -> list[str]:
        """Send a complete text through the chat's streaming scheduler (paced and split)."""
        stream = self.app.scheduler(chat.platform).open(chat, private=private, feedback=False, kind=kind)
        stream.append(text)
        result = await stream.finish()
        return list(result.message_ids)
