"""From an incoming message to an answer: access check, command or model reply.

Every message a connector delivers (``ConnectorHost.deliver``, which keeps each chat's order:
:mod:`relaybot.core.runtime.services`) reaches :meth:`Dispatcher.handle`. It returns as soon as
the message is stored (or refused, or known to be a command), with a task that ends when it is answered,
so a slow reply never blocks a connector's receive loop; it never raises: errors reach the
``on_error`` hook and the user gets a short, honest message.

A message that passes access control is stored before ``handle`` returns — before the
connector acknowledges it to the platform or the web client — and that storing cannot be
cancelled (it runs shielded). When it is answered is the business of
:mod:`relaybot.core.runtime.turns`; what answering does, of :mod:`relaybot.core.runtime.answering`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from relaybot.core.contracts.commands import CommandContext, parse_command
from relaybot.core.contracts.connector import OutgoingKind
from relaybot.core.contracts.errors import CommandError, RelaybotError
from relaybot.core.contracts.models import ChatKey, ImagePart, IncomingMessage, TextPart, User
from relaybot.core.contracts.redact import redact
from relaybot.core.runtime.answering import ReplyRunner
from relaybot.core.runtime.conversations import ChatConversations
from relaybot.core.runtime.turns import TurnState
from relaybot.core.storage import AlreadyStoredError, PendingMessage, StoredMessage

if TYPE_CHECKING:
    from relaybot.core.runtime.app import Relaybot
    from relaybot.core.streaming import ReplyStream

log = logging.getLogger("relaybot.dispatcher")

#: a denied user is told why at most once per this many seconds (no spam, no silence)
DENIAL_REPEAT_SECONDS = 3600.0


class Dispatcher:
    """Routes messages; one per running bot."""

    def __init__(self, app: Relaybot) -> None:
        self.app = app
        self._tasks: set[asyncio.Task[Any]] = set()
        self._denied: dict[tuple[str, str], float] = {}
        #: per chat, the task of the last ordered command still running: later messages of the
        #: chat wait for it (see Command.ordered)
        self._barriers: dict[ChatKey, asyncio.Task[Any]] = {}

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def handle(self, message: IncomingMessage) -> asyncio.Task[None]:
        """Take ``message`` in; return once it is stored, with a task that ends when it is answered.

        Messages of one chat must be handed in in the order they were sent. A message that
        follows an ordered command (``/new``, ``/switch`` …) is answered only once that
        command has finished (it is stored at once all the same).
        """
        chat = message.chat
        barrier = self._barriers.get(chat)
        if barrier is not None and barrier.done():
            barrier = None
        parsed = parse_command(message.text)
        if parsed is not None:
            task = self._spawn(self._process(message, after=barrier), f"relaybot:{chat}")
            if self._is_ordered_command(parsed[0]):
                self._barriers[chat] = task
                task.add_done_callback(lambda done: self._drop_barrier(chat, done))
            return task
        decision = self.app.plugins.first_result("check_access", message=message)
        if decision is not None and not decision.allowed:
            return self._spawn(self._deny(message, decision.reason), f"relaybot:deny:{chat}")
        # shielded: once begun, storing the message completes even if the caller is cancelled
        accepting = self._spawn(self._accept(message, after=barrier), f"relaybot:accept:{chat}")
        return await asyncio.shield(accepting)  # type: ignore[no-any-return]

    def _is_ordered_command(self, name: str) -> bool:
        command = self.app.registrations.commands.get(name)
        return command is None or command.ordered  # unknown: answered at once anyway

    def _drop_barrier(self, chat: ChatKey, done: asyncio.Task[Any]) -> None:
        if self._barriers.get(chat) is done:
            del self._barriers[chat]

    async def drain(self) -> None:
        """Wait for every message being handled (used at shutdown after replies were stopped)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # ── conversation messages ───────────────────────────────────────────────────────────────

    async def resume(self, pending: PendingMessage) -> asyncio.Task[None]:
        """Answer a message a previous run stored on receipt but never answered.

        Whether its chat was private is not stored, so it is answered by the rules of a
        shared chat (its sender's own turn, the chat's group pacing), which for a private
        chat's one person comes to the same answer.
        """
        stored = pending.message
        message = IncomingMessage(
            chat=pending.chat,
            user=User(stored.user_id),
            text="".join(p.text for p in stored.parts if isinstance(p, TextPart)),
            attachments=tuple(p.image for p in stored.parts if isinstance(p, ImagePart)),
            platform_message_id=pending.platform_message_id,
            is_private=False,
        )
        return await self._accept(message, stored=stored)

    async def _accept(
        self,
        message: IncomingMessage,
        *,
        after: asyncio.Task[Any] | None = None,
        regenerate: bool = False,
        stored: StoredMessage | None = None,
    ) -> asyncio.Task[None]:
        """Store ``message`` (placed with its placeholder when its turn may start at once, else
        unplaced) and start the task that answers it when its turn comes. ``stored``: the
        message was stored already (by an earlier run) and only needs its answer."""
        app = self.app
        # open first: the typing indicator / draft placeholder goes out before any storage work
        stream = app.scheduler(message.chat.platform).open(
            message.chat, private=message.is_private, reply_to=message.platform_message_id
        )
        turn = app.turns.admit(message.chat, message.user.id, private=message.is_private, after=after)
        try:
            runner = ReplyRunner(app, message, stream, turn, regenerate=regenerate)
            placed = turn.state is TurnState.RUNNING and stored is None
            if stored is not None:
                runner.user_row = stored
            elif placed:
                await runner.store_placed()
            else:
                await runner.store_received()
        except AlreadyStoredError:
            log.info("%s: message %s was received before; not answered twice", message.chat,
                     message.platform_message_id)  # fmt: skip
            app.turns.release(turn)
            stream.cancel()
            return self._spawn(_nothing(), "relaybot:duplicate")
        except BaseException as exc:
            app.turns.release(turn)
            return self._spawn(self._report(message, exc, stream), f"relaybot:failed:{message.chat}")
        task = self._spawn(self._answer(runner, placed), f"relaybot:{message.chat}")
        app.turns.attach(turn, task)
        return task

    async def _answer(self, runner: ReplyRunner, placed: bool) -> None:
        """The turn of one stored message: wait for it, place the message, answer it."""
        turns = self.app.turns
        turn = runner.turn
        stream = runner.stream
        try:
            if not placed:
                if not await turns.wait(turn) or turns.closing:
                    return  # shutdown: the message stays pending and is answered after the restart
                # superseded (interrupt policy): a newer message of the same person answers this
                # one too; stopped before it began: it is kept, unanswered
                skip = turn.superseded or turn.cancel_requested
                await runner.place_received(with_reply=not skip)
                if skip:
                    return
            if turns.closing:
                await runner.give_back()  # shutdown won the race: answered after the restart
                return
            if turn.cancel_requested:
                await runner.close_unstarted()
                return
            turn.answering = True
            await runner.answer()
        except asyncio.CancelledError:
            # an interrupt, /stop, a switch or shutdown cancelled the turn (turns.stop/close):
            # the reply saved its partial text already, so for whoever awaits this task the
            # message has been handled
            me = asyncio.current_task()
            if me is not None:
                me.uncancel()
        except BaseException as exc:
            await self._report(runner.message, exc, stream)
        finally:
            turns.release(turn)
            if not stream.finished:
                stream.cancel()  # no typing indicator or draft outlives its reply

    async def _report(self, message: IncomingMessage, exc: BaseException, stream: ReplyStream | None) -> None:
        """Tell the user a message could not be handled (and the on_error hook why)."""
        if stream is not None and not stream.finished:
            stream.cancel()
        if isinstance(exc, asyncio.CancelledError):
            return
        if isinstance(exc, CommandError):
            await self._tell(message, str(exc))
            return
        log.error("handling a message in %s failed: %s", message.chat, redact(repr(exc)), exc_info=exc)
        self.app.plugins.notify("on_error", error=exc, message=message)
        user_message = exc.user_message if isinstance(exc, RelaybotError) else RelaybotError.user_message
        await self._tell(message, "⚠️ " + user_message)

    async def _tell(self, message: IncomingMessage, text: str) -> None:
        try:
            await self.send(message.chat, text, private=message.is_private)
        except Exception:
            log.warning("could not tell %s about the failure", message.chat)

    # ── commands and refusals ───────────────────────────────────────────────────────────────

    async def _process(self, message: IncomingMessage, after: asyncio.Task[Any] | None = None) -> None:
        if after is not None:
            # the command before this message must take effect first; its own failure is
            # reported by its own task, and cancelling this wait must not cancel it
            await asyncio.wait([after])
        try:
            decision = self.app.plugins.first_result("check_access", message=message)
            if decision is not None and not decision.allowed:
                await self._deny(message, decision.reason)
                return
            parsed = parse_command(message.text)
            assert parsed is not None
            await self._command(message, *parsed)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._report(message, exc, None)

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
            bot=self.app.services,
        )
        await command.handler(ctx)

    async def regenerate(self, chat: ChatKey, user: User, *, private: bool = True) -> asyncio.Task[None]:
        """Answer the last user message of the active conversation again, as a new branch.

        The previous answer stays in the message tree; the conversation continues from the new
        one. Returns at once with a task, like :meth:`handle`.
        """
        message = IncomingMessage(chat=chat, user=user, text="", is_private=private)
        decision = self.app.plugins.first_result("check_access", message=message)
        if decision is not None and not decision.allowed:
            return self._spawn(self._deny(message, decision.reason), f"relaybot:deny:{chat}")
        accepting = self._spawn(self._accept(message, regenerate=True), f"relaybot:regenerate:{chat}")
        return await asyncio.shield(accepting)  # type: ignore[no-any-return]

    def conversations(self, chat: ChatKey, message: IncomingMessage | None = None) -> ChatConversations:
        """The conversation API for ``chat``."""
        return ChatConversations(self.app.store, self.app.turns, chat, message)

    async def send(
        self,
        chat: ChatKey,
        text: str,
        *,
        private: bool = True,
        kind: OutgoingKind = "notice",
        reply_to: str | None = None,
    ) -> list[str]:
        """Send a complete text through the chat's streaming scheduler (paced and split)."""
        stream = self.app.scheduler(chat.platform).open(
            chat, private=private, feedback=False, kind=kind, reply_to=reply_to
        )
        stream.append(text)
        result = await stream.finish()
        return list(result.message_ids)


async def _nothing() -> None:
    """The answer task of a message that needs none (a re-delivered one)."""
