"""RecordingConnector: an in-memory platform that records what the bot did and enforces rules.

Use it to test anything that talks to a connector (the streaming scheduler, commands,
plugins) without a network::

    conn = RecordingConnector(StreamPolicy(private_interval=0.05, can_edit=True))
    scheduler = StreamScheduler(conn)
    ...
    assert conn.messages(chat) == ["Hello!"]
    assert conn.rate_limited == 0

Like a real platform it refuses what a platform would refuse (each refusal is kept in
:attr:`RecordingConnector.rejected` and is *not* applied):

* two requests (send, edit, draft, image) into one chat closer than the chat's interval →
  ``PlatformRateLimitError(retry_after)``; the chat then stays blocked for ``retry_after``
  (every request, typing included, gets a 429 until then) and the next ``retry_after`` in that
  chat is ``escalate`` times longer, as Telegram does with bots that keep pushing;
* an edit to the text (and ``final`` flag) the message already has → ``MessageNotModifiedError``;
* text longer than ``policy.max_length`` (counted in ``policy.length_unit``) or empty →
  ``PlatformError``; an edit of an unknown or deleted message → ``MessageGoneError``;
* drafts when the policy has none, in group chats, with draft id 0, or with
  ``drafts_unsupported=True`` → ``PlatformError`` (like Telegram's ``TEXTDRAFT_PEER_INVALID``).

Typing indicators are recorded but not interval-checked (they are not messages). The
``final`` flag counts as part of a message's state: editing a frame's identical text with
``final=True`` is accepted, since a real connector renders final text differently
(formatted) from mid-stream frames.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

from ..connector import BaseConnector, MessageHandler, StreamPolicy
from ..errors import (
    MessageGoneError,
    MessageNotModifiedError,
    PlatformError,
    PlatformRateLimitError,
)
from ..models import ChatKey, IncomingMessage
from ..streaming.text import text_length

OPS = ("send", "edit", "draft", "typing", "image")


@dataclass(frozen=True, slots=True)
class RecordedOp:
    """One primitive call as the platform saw it (``t`` on the connector's clock).

    ``message_id`` is the message's id for send/edit/image and the draft id for drafts.
    """

    t: float
    op: str
    chat: ChatKey
    message_id: str | None
    text: str
    final: bool
    #: the message a send answered (sends only)
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class RejectedOp:
    """A call the fake refused, and the error it raised."""

    t: float
    op: str
    chat: ChatKey
    message_id: str | None
    text: str
    error: BaseException


@dataclass(slots=True)
class _Message:
    chat: ChatKey
    text: str
    final: bool
    deleted: bool = False


class RecordingConnector(BaseConnector):
    """A fake connector recording a timeline of primitive calls (see the module docstring).

    Parameters: ``policy`` (any :class:`StreamPolicy`); ``latency`` seconds per call;
    ``enforce`` turns the interval rule on; ``enforce_interval`` overrides the interval the
    rule checks (default: the policy's private or group interval minus ``tolerance``);
    ``groups`` lists chat ids (``ChatKey.chat``) that are group chats; ``retry_after`` is the
    first 429 wait per chat, multiplied by ``escalate`` for each further 429 there;
    ``drafts_unsupported`` refuses every draft; ``first_id`` is the id of the first message
    (a connector standing in for the same platform after a restart must not reuse ids).
    """

    def __init__(
        self,
        policy: StreamPolicy | None = None,
        *,
        name: str = "fake",
        latency: float = 0.0,
        enforce: bool = True,
        enforce_interval: float | None = None,
        tolerance: float = 0.01,
        groups: Iterable[str] = (),
        retry_after: float = 1.0,
        escalate: float = 2.0,
        drafts_unsupported: bool = False,
        clock: Callable[[], float] = time.monotonic,
        first_id: int = 1,
    ) -> None:
        self.name = name
        self.policy = policy if policy is not None else StreamPolicy()
        self.latency = latency
        self.enforce = enforce
        self.enforce_interval = enforce_interval
        self.tolerance = tolerance
        self.groups = set(groups)
        self.retry_after = retry_after
        self.escalate = escalate
        self.drafts_unsupported = drafts_unsupported
        self.clock = clock
        #: every accepted call, in order
        self.timeline: list[RecordedOp] = []
        #: every refused call, in order
        self.rejected: list[RejectedOp] = []
        #: how many 429s the fake answered
        self.rate_limited = 0
        self.handler: MessageHandler | None = None
        self.started = False
        self._messages: dict[str, _Message] = {}
        self._order: dict[ChatKey, list[str]] = defaultdict(list)
        self._drafts: dict[tuple[ChatKey, int], str] = {}
        self._last: dict[ChatKey, float] = {}
        self._blocked: dict[ChatKey, float] = {}
        self._next_retry: dict[ChatKey, float] = {}
        self._failures: dict[str, deque[BaseException]] = defaultdict(deque)
        self._ids = first_id - 1

    # -- test controls ---------------------------------------------------------------------

    def fail_next(self, op: str, exc: BaseException) -> None:
        """Make the next call of ``op`` (one of :data:`OPS`) raise ``exc`` (queued, FIFO)."""
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; expected one of {OPS}")
        self._failures[op].append(exc)

    def delete(self, message_id: str) -> None:
        """Simulate the user deleting a message: later edits raise ``MessageGoneError``."""
        self._messages[message_id].deleted = True

    def interval_for(self, chat: ChatKey) -> float:
        """The minimum spacing the fake enforces between requests into ``chat``."""
        if self.enforce_interval is not None:
            return self.enforce_interval
        if chat.chat in self.groups:
            base = self.policy.group_interval
        else:
            base = self.policy.private_interval
        return max(0.0, base - self.tolerance)

    # -- accessors -------------------------------------------------------------------------

    def messages(self, chat: ChatKey) -> list[str]:
        """Current texts of the messages sent into ``chat`` (deleted ones left out), in order."""
        return [self._messages[mid].text for mid in self._order[chat] if not self._messages[mid].deleted]

    def message_ids(self, chat: ChatKey) -> list[str]:
        """Ids of the messages sent into ``chat`` (deleted ones left out), in order."""
        return [mid for mid in self._order[chat] if not self._messages[mid].deleted]

    def text_of(self, message_id: str) -> str:
        """Current text of one message."""
        return self._messages[message_id].text

    def is_final(self, message_id: str) -> bool:
        """Whether the message's current text was delivered with ``final=True``."""
        return self._messages[message_id].final

    def draft(self, chat: ChatKey, draft_id: int) -> str | None:
        """The text last shown in a draft (``None`` if that draft was never shown)."""
        return self._drafts.get((chat, draft_id))

    def ops(self, chat: ChatKey | None = None, op: str | None = None) -> list[RecordedOp]:
        """Accepted calls, optionally only into ``chat`` and/or of kind ``op``."""
        return [r for r in self.timeline if (chat is None or r.chat == chat) and (op is None or r.op == op)]

    def count(self, op: str, chat: ChatKey | None = None) -> int:
        """How many accepted calls of kind ``op`` (optionally into ``chat``)."""
        return len(self.ops(chat, op))

    # -- incoming side ---------------------------------------------------------------------

    async def start(self, handler: MessageHandler) -> None:
        """Store ``handler``; :meth:`inject` feeds it."""
        self.handler = handler
        self.started = True

    async def stop(self) -> None:
        """Forget the handler."""
        self.started = False

    async def inject(self, message: IncomingMessage) -> None:
        """Deliver ``message`` to the handler as if a user sent it."""
        if self.handler is None:
            raise RuntimeError("RecordingConnector.inject() before start()")
        await self.handler(message)

    # -- primitives ------------------------------------------------------------------------

    async def send_text(
        self, chat: ChatKey, text: str, *, final: bool = True, reply_to: str | None = None
    ) -> str:
        """Record a new message and return its id ("1", "2", …)."""
        now = self._arrive("send", chat, None, text, message=True)
        self._check_text("send", chat, None, text, now)
        self._ids += 1
        message_id = str(self._ids)
        self._messages[message_id] = _Message(chat, text, final)
        self._order[chat].append(message_id)
        self.timeline.append(RecordedOp(now, "send", chat, message_id, text, final, reply_to))
        await self._latency()
        return message_id

    async def edit_text(self, chat: ChatKey, message_id: str, text: str, *, final: bool) -> None:
        """Replace a message's text (with the rules in the module docstring)."""
        now = self._arrive("edit", chat, message_id, text, message=True)
        message = self._messages.get(message_id)
        if message is None or message.deleted or message.chat != chat:
            self._reject("edit", chat, message_id, text, now, MessageGoneError("message to edit not found"))
        if message.text == text and message.final == final:
            self._reject(
                "edit",
                chat,
                message_id,
                text,
                now,
                MessageNotModifiedError("Bad Request: message is not modified"),
            )
        self._check_text("edit", chat, message_id, text, now)
        message.text = text
        message.final = final
        self.timeline.append(RecordedOp(now, "edit", chat, message_id, text, final))
        await self._latency()

    async def send_draft(self, chat: ChatKey, draft_id: int, text: str) -> None:
        """Show a draft (empty text: the "Thinking…" placeholder)."""
        now = self._arrive("draft", chat, None, text, message=True)
        if (
            self.drafts_unsupported
            or not self.policy.native_draft
            or chat.chat in self.groups
            or draft_id == 0
        ):
            self._reject("draft", chat, None, text, now, PlatformError("Bad Request: TEXTDRAFT_PEER_INVALID"))
        if text_length(text, self.policy.length_unit) > self.policy.max_length:
            self._reject("draft", chat, None, text, now, PlatformError("draft text is too long"))
        self._drafts[(chat, draft_id)] = text
        self.timeline.append(RecordedOp(now, "draft", chat, str(draft_id), text, False))
        await self._latency()

    async def send_typing(self, chat: ChatKey) -> None:
        """Record a typing indicator (not interval-checked, but refused while blocked)."""
        now = self._arrive("typing", chat, None, "", message=False)
        self.timeline.append(RecordedOp(now, "typing", chat, None, "", False))
        await self._latency()

    async def send_image(
        self, chat: ChatKey, image: bytes, *, caption: str = "", mime_type: str = "image/png"
    ) -> str:
        """Record an image message (its caption as text)."""
        now = self._arrive("image", chat, None, caption, message=True)
        self._ids += 1
        message_id = str(self._ids)
        self._messages[message_id] = _Message(chat, caption, True)
        self._order[chat].append(message_id)
        self.timeline.append(RecordedOp(now, "image", chat, message_id, caption, True))
        await self._latency()
        return message_id

    # -- rules -----------------------------------------------------------------------------

    def _arrive(self, op: str, chat: ChatKey, message_id: str | None, text: str, *, message: bool) -> float:
        """Apply scripted failures and the rate rules; return the arrival time."""
        now = self.clock()
        if self._failures[op]:
            scripted = self._failures[op].popleft()
            if isinstance(scripted, PlatformRateLimitError):
                self.rate_limited += 1
            self._reject(op, chat, message_id, text, now, scripted)
        blocked = self._blocked.get(chat, float("-inf"))
        if now < blocked:
            self.rate_limited += 1
            self._reject(op, chat, message_id, text, now, PlatformRateLimitError(blocked - now))
        if message and self.enforce:
            last = self._last.get(chat)
            if last is not None and now - last < self.interval_for(chat):
                retry_after = self._next_retry.get(chat, self.retry_after)
                self._next_retry[chat] = retry_after * self.escalate
                self._blocked[chat] = now + retry_after
                self.rate_limited += 1
                self._reject(op, chat, message_id, text, now, PlatformRateLimitError(retry_after))
        if message:
            self._last[chat] = now
        return now

    def _check_text(self, op: str, chat: ChatKey, message_id: str | None, text: str, now: float) -> None:
        if not text.strip():
            self._reject(op, chat, message_id, text, now, PlatformError("message text is empty"))
        length = text_length(text, self.policy.length_unit)
        if length > self.policy.max_length:
            self._reject(
                op,
                chat,
                message_id,
                text,
                now,
                PlatformError(f"message is too long ({length} > {self.policy.max_length})"),
            )

    def _reject(
        self,
        op: str,
        chat: ChatKey,
        message_id: str | None,
        text: str,
        now: float,
        error: BaseException,
    ) -> NoReturn:
        self.rejected.append(RejectedOp(now, op, chat, message_id, text, error))
        raise error

    async def _latency(self) -> None:
        if self.latency > 0:
            await asyncio.sleep(self.latency)
