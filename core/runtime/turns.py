"""Who is answered when: turns per chat and per person, the busy policy, the cap per chat.

A *turn* is the answering of one user message that is already stored (the dispatcher stores
every accepted message on receipt, before it asks for a turn, so nothing here can lose one).
:class:`TurnManager` decides when each turn may run:

* **Private chats** (one person): one turn at a time.
* **Shared chats** (groups, forum topics, channels, threads): one turn at a time *per
  person*, turns of different people at the same time, at most ``max_concurrent`` per chat;
  the rest wait in arrival order (their typing indicator keeps showing meanwhile).
* **busy_policy**, per person: ``interrupt`` — a new message cancels the sender's running
  turn (its partial reply is saved, marked interrupted) and *supersedes* the sender's waiting
  turns (those messages still take their place in the conversation, in order, but the newest
  one is answered for all of them); ``queue`` — the new message waits its turn.
* An **ordered command** (``/new``, ``/switch`` …, see ``Command.ordered``) still running
  holds back the turns admitted after it (``admit(after=task)``).
* **Shutdown** (:meth:`TurnManager.close`): no waiting turn starts any more (those messages
  stay stored as ``pending`` and are answered after the restart); running turns are cancelled
  and awaited, so their partial replies are saved.

Different chats never wait for each other. Everything here is in memory and synchronous
except the waits; storage holds everything durable.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from dataclasses import dataclass, field

from relaybot.core.contracts.models import ChatKey

log = logging.getLogger("relaybot.turns")

#: the person key of a private chat (its one person)
PRIVATE = ""


class TurnState(enum.Enum):
    """Where a turn is: waiting for its start, running, or over."""

    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"


@dataclass(eq=False)
class Turn:
    """One message's claim to be answered. Created by :meth:`TurnManager.admit`.

    ``superseded`` (interrupt policy): a newer message of the same person arrived while this
    one waited — place the message, do not answer it. The owner hands its task to
    :meth:`TurnManager.attach` (what :meth:`TurnManager.stop` waits for), sets ``answering``
    right before the reply begins (checking ``cancel_requested`` first), and must call
    :meth:`TurnManager.release` when done, whatever happened. A turn is never cancelled
    before its reply began, so its message is always placed (or left ``pending`` at shutdown).
    """

    chat: ChatKey
    person: str
    private: bool
    after: asyncio.Task[object] | None = None
    state: TurnState = TurnState.WAITING
    superseded: bool = False
    task: asyncio.Task[object] | None = None
    #: the reply has begun (set by the owner right before it calls the provider pipeline):
    #: from then on a cancel cancels the task (the reply saves its partial text); before,
    #: it only sets ``cancel_requested``, which the owner checks before it begins
    answering: bool = False
    #: asked to stop before the reply began (interrupt, ``/stop``, shutdown)
    cancel_requested: bool = False
    #: (interrupt policy) the same person's turn this one superseded (a waiting one, or a running
    #: one whose reply had not begun): in a shared chat its message is placed right after that
    #: one's, so a burst stays one chain on the path
    follows: Turn | None = None
    #: where the message was placed, once it is: (conversation id, message id)
    placed: tuple[int, int] | None = None
    _ready: asyncio.Future[bool] | None = field(default=None, repr=False)


@dataclass
class ChatTurns:
    """The live turns of one chat (in memory only)."""

    running: dict[str, Turn] = field(default_factory=dict)
    waiting: deque[Turn] = field(default_factory=deque)
    #: conversations whose users were already told that old turns were left out
    truncation_noticed: set[int] = field(default_factory=set)


class TurnManager:
    """Admits, starts, cancels and releases turns (see the module docstring).

    ``max_concurrent`` caps the turns running at once in one shared chat (``bot``
    ``max_concurrent_replies``); private chats always run one at a time.
    """

    def __init__(self, busy_policy: str = "interrupt", *, max_concurrent: int = 4) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.busy_policy = busy_policy
        self.max_concurrent = max_concurrent
        self.closing = False
        self._chats: dict[ChatKey, ChatTurns] = {}

    def state(self, chat: ChatKey) -> ChatTurns:
        """The live state of ``chat`` (created on first use)."""
        state = self._chats.get(chat)
        if state is None:
            state = self._chats[chat] = ChatTurns()
        return state

    # ── admitting and starting ──────────────────────────────────────────────────────────────

    def admit(
        self, chat: ChatKey, person: str, *, private: bool, after: asyncio.Task[object] | None = None
    ) -> Turn:
        """Register a turn for a stored message and apply the busy policy; never waits.

        The turn is RUNNING at once when nothing holds it back (the caller may then answer
        without waiting); else it is WAITING and :meth:`wait` tells when it may start.
        """
        person = PRIVATE if private else person
        state = self.state(chat)
        follows = None
        if self.busy_policy == "interrupt":
            for waiting in state.waiting:
                if waiting.person == person:
                    waiting.superseded = True
                    follows = waiting
            current = state.running.get(person)
            if current is not None:
                if follows is None and not current.answering:
                    # its reply never began: it is placed without one (or with an empty one), so
                    # the leaf may not move past it; this message goes right after it instead
                    follows = current
                self._cancel(current)
        turn = Turn(chat, person, private, after=after if after is not None and not after.done() else None)
        turn.follows = follows
        state.waiting.append(turn)
        if turn.after is not None:
            turn.after.add_done_callback(lambda _: self._pump(chat))
        self._pump(chat)
        return turn

    async def wait(self, turn: Turn) -> bool:
        """Wait until ``turn`` may run. False: it must not (shutdown); it is released then.

        A superseded turn returns True too: its message must still be placed, in order.
        """
        if turn.state is TurnState.WAITING:
            if turn._ready is None:
                turn._ready = asyncio.get_running_loop().create_future()
            await asyncio.shield(turn._ready)
        return turn.state is TurnState.RUNNING

    def attach(self, turn: Turn, task: asyncio.Task[object]) -> None:
        """Name the task that answers ``turn`` (what interrupt and ``/stop`` cancel or await)."""
        turn.task = task

    def release(self, turn: Turn) -> None:
        """``turn`` is over (answered, cancelled, failed or never started): start the next."""
        if turn.state is TurnState.DONE:
            return
        state = self.state(turn.chat)
        if turn.state is TurnState.RUNNING and state.running.get(turn.person) is turn:
            del state.running[turn.person]
        elif turn in state.waiting:
            state.waiting.remove(turn)
        turn.state = TurnState.DONE
        self._wake(turn)
        self._pump(turn.chat)
        if not state.running and not state.waiting and not state.truncation_noticed:
            del self._chats[turn.chat]

    def _pump(self, chat: ChatKey) -> None:
        """Start every waiting turn of ``chat`` that may start now, in arrival order."""
        state = self._chats.get(chat)
        if state is None:
            return
        for turn in list(state.waiting):
            if self.closing:
                state.waiting.remove(turn)
                turn.state = TurnState.DONE
                self._wake(turn)
                continue
            if turn.after is not None and not turn.after.done():
                continue  # an ordered command before it is still running
            if turn.person in state.running:
                continue  # this person's previous turn first
            limit = 1 if turn.private else self.max_concurrent
            if len(state.running) >= limit:
                break  # the chat is at its cap: everyone behind waits too (arrival order)
            state.waiting.remove(turn)
            state.running[turn.person] = turn
            turn.state = TurnState.RUNNING
            self._wake(turn)

    @staticmethod
    def _wake(turn: Turn) -> None:
        if turn._ready is not None and not turn._ready.done():
            turn._ready.set_result(True)

    # ── cancelling ──────────────────────────────────────────────────────────────────────────

    @staticmethod
    def _cancel(turn: Turn) -> asyncio.Task[object] | None:
        """Stop ``turn``: cancel its reply if it began, else ask it not to begin. Returns the
        task to wait for (None while the owner has not attached one yet)."""
        if turn.answering and turn.task is not None:
            turn.task.cancel()
        else:
            turn.cancel_requested = True
        return turn.task

    def is_streaming(self, chat: ChatKey) -> bool:
        """True while a turn runs in ``chat``."""
        state = self._chats.get(chat)
        return bool(state and state.running)

    async def stop(self, chat: ChatKey, person: str | None = None) -> bool:
        """Cancel the running turn of ``person`` (``None``: every running turn of the chat)
        and wait until their partial replies are saved. True if there was one."""
        state = self._chats.get(chat)
        if state is None:
            return False
        turns = [t for p, t in state.running.items() if person is None or p == person]
        tasks = [task for turn in turns if (task := self._cancel(turn)) is not None]
        if tasks:
            # the turn saves its partial text before it ends; wait for that, not for more
            await asyncio.gather(*tasks, return_exceptions=True)
        return bool(turns)

    async def close(self) -> None:
        """Shutdown: start nothing new, cancel every running turn and wait for their saves."""
        self.closing = True
        tasks: list[asyncio.Task[object]] = []
        for chat, state in list(self._chats.items()):
            for turn in list(state.running.values()):
                task = self._cancel(turn)
                if task is not None:
                    tasks.append(task)
            self._pump(chat)  # wakes every waiting turn with "do not run"
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
