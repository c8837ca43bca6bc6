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
  ``drafts_unsupported=True`` → ``PlatformError`` (like Telegram's ``TEXTDRAFT_PEER_INVALID``);
* append streams (``policy.native_append``, Slack's ``chat.startStream``/``appendStream``/
  ``stopStream``): more than ``policy.append_max`` units in one call, or an empty append →
  ``PlatformError``; an edit of a message still streaming → ``PlatformError``
  (``streaming_state_conflict``); appending to a stream older than ``stream_ttl`` seconds or
  one the user stopped (:meth:`RecordingConnector.stop_by_user`) →
  ``StreamEndedError`` (``message_not_in_streaming_state``);
* per-method budgets (``method_budgets``, default the policy's): a request over its sliding
  window → ``PlatformRateLimitError`` until the window frees;
* header buckets (``buckets``: method → (limit, seconds) per chat, Discord style): after every
  accepted call the fake reports the bucket with ``observe_bucket`` as Discord's
  ``X-RateLimit-*`` headers would, and a request over the bucket gets a 429.

Every primitive records the :class:`~relaybot.core.contracts.connector.Outgoing` descriptor it got
(:attr:`RecordedOp.outgoing`). A final frame with ``outgoing.interrupted`` is rendered like
Telegram does (:func:`~relaybot.core.streaming.mark_interrupted`), and the length rule applies
to the rendered text.

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

from relaybot.core.contracts.connector import (
    NOTICE,
    BaseConnector,
    Method,
    MethodBudget,
    Outgoing,
    StreamPolicy,
)
from relaybot.core.contracts.errors import (
    MessageGoneError,
    MessageNotModifiedError,
    PlatformError,
    PlatformRateLimitError,
    StreamEndedError,
)
from relaybot.core.contracts.host import ConnectorHost, Handover
from relaybot.core.contracts.models import ChatKey, IncomingMessage
from relaybot.core.streaming.budgets import MethodBudgets
from relaybot.core.streaming.stream import mark_interrupted
from relaybot.core.streaming.text import text_length

OPS = ("send", "edit", "draft", "typing", "image", "start", "append", "stop", "delete")


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
    #: the descriptor the call carried (``None`` for typing)
    outgoing: Outgoing | None = None


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
    #: an append stream is open on it (since ``started``)
    streaming: bool = False
    started: float = 0.0
    stopped_by_user: bool = False
    outgoing: Outgoing = NOTICE


class RecordingConnector(BaseConnector):
    """A fake connector recording a timeline of primitive calls (see the module docstring).

    Parameters: ``policy`` (any :class:`StreamPolicy`); ``latency`` seconds per call;
    ``enforce`` turns the interval rule on; ``enforce_interval`` overrides the interval the
    rule checks (default: the policy's private or group interval minus ``tolerance``);
    ``groups`` lists chat ids (``ChatKey.chat``) that are group chats; ``retry_after`` is the
    first 429 wait per chat, multiplied by ``escalate`` for each further 429 there;
    ``drafts_unsupported`` refuses every draft; ``stream_ttl`` is how long an append stream
    lives (Slack: about 5 minutes; ``None``: forever); ``method_budgets`` the per-method
    windows enforced (default: the policy's); ``buckets`` the Discord-style header buckets;
    ``first_id`` is the id of the first message (a connector standing in for the same
    platform after a restart must not reuse ids).
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
        stream_ttl: float | None = 300.0,
        method_budgets: tuple[MethodBudget, ...] | None = None,
        buckets: dict[Method, tuple[int, float]] | None = None,
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
        self.stream_ttl = stream_ttl
        budgets = self.policy.method_budgets if method_budgets is None else method_budgets
        self._budgets = MethodBudgets(budgets, self.budget_group) if budgets else None
        self.buckets = dict(buckets or {})
        # (chat, method) -> (requests in the current bucket window, window end)
        self._bucket_use: dict[tuple[ChatKey, str], tuple[int, float]] = {}
        #: every accepted call, in order
        self.timeline: list[RecordedOp] = []
        #: every refused call, in order
        self.rejected: list[RejectedOp] = []
        #: how many 429s the fake answered
        self.rate_limited = 0
        #: the host the core handed over in :meth:`start`
        self.host: ConnectorHost | None = None
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

    def stop_by_user(self, message_id: str) -> None:
        """Simulate the user pressing stop on a streaming message (Slack ``stopped_by_user``)."""
        self._messages[message_id].stopped_by_user = True

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

    def outgoing_of(self, message_id: str) -> Outgoing:
        """The descriptor of the last accepted call that changed the message."""
        return self._messages[message_id].outgoing

    def is_streaming(self, message_id: str) -> bool:
        """Whether an append stream is still open on the message."""
        return self._messages[message_id].streaming

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

    async def start(self, host: ConnectorHost) -> None:
        """Keep ``host``; :meth:`inject` delivers to it."""
        self.host = host
        self.started = True

    async def stop(self) -> None:
        """Stop taking messages in."""
        self.started = False

    async def inject(self, message: IncomingMessage) -> Handover:
        """Deliver ``message`` to the core as if a user sent it; return once it is accepted."""
        if self.host is None:
            raise RuntimeError("RecordingConnector.inject() before start()")
        return await self.host.deliver(message.chat, message)

    # -- primitives ------------------------------------------------------------------------

    async def send_text(
        self,
        chat: ChatKey,
        text: str,
        *,
        final: bool = True,
        reply_to: str | None = None,
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """Record a new message and return its id ("1", "2", …)."""
        now = self._arrive("send", chat, None, text, message=True)
        shown = self._render(text, final, outgoing)
        self._check_text("send", chat, None, shown, now)
        message_id = self._new_message(_Message(chat, shown, final, outgoing=outgoing))
        self.timeline.append(RecordedOp(now, "send", chat, message_id, text, final, reply_to, outgoing))
        await self._latency()
        return message_id

    async def edit_text(
        self, chat: ChatKey, message_id: str, text: str, *, final: bool, outgoing: Outgoing = NOTICE
    ) -> None:
        """Replace a message's text (with the rules in the module docstring)."""
        now = self._arrive("edit", chat, message_id, text, message=True)
        message = self._existing("edit", chat, message_id, text, now)
        if message.streaming:
            self._reject("edit", chat, message_id, text, now, PlatformError("streaming_state_conflict"))
        shown = self._render(text, final, outgoing)
        if message.text == shown and message.final == final:
            self._reject(
                "edit",
                chat,
                message_id,
                text,
                now,
                MessageNotModifiedError("Bad Request: message is not modified"),
            )
        self._check_text("edit", chat, message_id, shown, now)
        message.text = shown
        message.final = final
        message.outgoing = outgoing
        self.timeline.append(RecordedOp(now, "edit", chat, message_id, text, final, outgoing=outgoing))
        await self._latency()

    async def send_draft(
        self, chat: ChatKey, draft_id: int, text: str, *, outgoing: Outgoing = NOTICE
    ) -> None:
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
        self.timeline.append(RecordedOp(now, "draft", chat, str(draft_id), text, False, outgoing=outgoing))
        await self._latency()

    async def start_stream(
        self, chat: ChatKey, text: str, *, reply_to: str | None = None, outgoing: Outgoing = NOTICE
    ) -> str:
        """Open an append stream (Slack ``chat.startStream``) showing ``text``."""
        now = self._arrive("start", chat, None, text, message=True)
        if not self.policy.native_append:
            self._reject("start", chat, None, text, now, PlatformError("unknown_method"))
        self._check_chunk("start", chat, None, text, now, empty_ok=True)
        message = _Message(chat, text, False, streaming=True, started=now, outgoing=outgoing)
        message_id = self._new_message(message)
        self.timeline.append(RecordedOp(now, "start", chat, message_id, text, False, reply_to, outgoing))
        await self._latency()
        return message_id

    async def append_stream(
        self, chat: ChatKey, message_id: str, text: str, *, outgoing: Outgoing = NOTICE
    ) -> None:
        """Append to a stream (``chat.appendStream``), with the module docstring's rules."""
        now = self._arrive("append", chat, message_id, text, message=True)
        message = self._streaming("append", chat, message_id, text, now)
        self._check_chunk("append", chat, message_id, text, now, empty_ok=False)
        self._grow("append", message, message_id, message.text + text, now)
        message.outgoing = outgoing
        self.timeline.append(RecordedOp(now, "append", chat, message_id, text, False, outgoing=outgoing))
        await self._latency()

    async def stop_stream(
        self, chat: ChatKey, message_id: str, text: str, *, outgoing: Outgoing = NOTICE
    ) -> None:
        """End a stream with ``text`` last (``chat.stopStream``); the message is final then."""
        now = self._arrive("stop", chat, message_id, text, message=True)
        message = self._streaming("stop", chat, message_id, text, now)
        self._check_chunk("stop", chat, message_id, text, now, empty_ok=True)
        self._grow("stop", message, message_id, self._render(message.text + text, True, outgoing), now)
        message.streaming = False
        message.final = True
        message.outgoing = outgoing
        self.timeline.append(RecordedOp(now, "stop", chat, message_id, text, True, outgoing=outgoing))
        await self._latency()

    async def send_typing(self, chat: ChatKey) -> None:
        """Record a typing indicator (not interval-checked, but refused while blocked)."""
        now = self._arrive("typing", chat, None, "", message=False)
        self.timeline.append(RecordedOp(now, "typing", chat, None, "", False))
        await self._latency()

    async def send_image(
        self,
        chat: ChatKey,
        image: bytes,
        *,
        caption: str = "",
        mime_type: str = "image/png",
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """Record an image message (its caption as text)."""
        now = self._arrive("image", chat, None, caption, message=True)
        if not image:
            self._reject("image", chat, None, caption, now, PlatformError("the image is empty"))
        message_id = self._new_message(_Message(chat, caption, True, outgoing=outgoing))
        self.timeline.append(RecordedOp(now, "image", chat, message_id, caption, True, outgoing=outgoing))
        await self._latency()
        return message_id

    async def delete_message(self, chat: ChatKey, message_id: str) -> None:
        """Delete a message (later edits of it raise ``MessageGoneError``)."""
        now = self._arrive("delete", chat, message_id, "", message=True)
        self._existing("delete", chat, message_id, "", now).deleted = True
        self.timeline.append(RecordedOp(now, "delete", chat, message_id, "", True))
        await self._latency()

    def _new_message(self, message: _Message) -> str:
        self._ids += 1
        message_id = str(self._ids)
        self._messages[message_id] = message
        self._order[message.chat].append(message_id)
        return message_id

    def _render(self, text: str, final: bool, outgoing: Outgoing) -> str:
        """What the platform shows: a final interrupted frame gets the marker paragraph."""
        return mark_interrupted(text) if final and outgoing.interrupted else text

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
        if message and self._budgets is not None:
            wait = self._budgets.wait(op, chat, now)
            if wait > 0:
                self.rate_limited += 1
                self._reject(op, chat, message_id, text, now, PlatformRateLimitError(wait))
            self._budgets.take(op, chat, now)
        if message and op in self.buckets:
            self._bucket(op, chat, message_id, text, now)
        if message:
            self._last[chat] = now
        return now

    def _bucket(self, op: str, chat: ChatKey, message_id: str | None, text: str, now: float) -> None:
        """A Discord-style bucket: ``limit`` requests per window, reported after each call."""
        limit, per = self.buckets[op]  # type: ignore[index]
        used, reset_at = self._bucket_use.get((chat, op), (0, now + per))
        if now >= reset_at:
            used, reset_at = 0, now + per
        if used >= limit:
            self.rate_limited += 1
            self._reject(op, chat, message_id, text, now, PlatformRateLimitError(reset_at - now))
        used += 1
        self._bucket_use[(chat, op)] = (used, reset_at)
        # the answer's X-RateLimit-Remaining / -Reset-After
        self.observe_bucket(chat, op, remaining=limit - used, reset_after=reset_at - now)  # type: ignore[arg-type]

    def _existing(self, op: str, chat: ChatKey, message_id: str, text: str, now: float) -> _Message:
        message = self._messages.get(message_id)
        if message is None or message.deleted or message.chat != chat:
            self._reject(op, chat, message_id, text, now, MessageGoneError("message not found"))
        return message

    def _streaming(self, op: str, chat: ChatKey, message_id: str, text: str, now: float) -> _Message:
        message = self._existing(op, chat, message_id, text, now)
        expired = self.stream_ttl is not None and now - message.started > self.stream_ttl
        if message.streaming and (expired or message.stopped_by_user):
            message.streaming = False  # the platform closed it: it can be edited from now on
        if not message.streaming:
            reason = "stopped_by_user" if message.stopped_by_user else "message_not_in_streaming_state"
            self._reject(op, chat, message_id, text, now, StreamEndedError(reason))
        return message

    def _check_chunk(
        self, op: str, chat: ChatKey, message_id: str | None, text: str, now: float, *, empty_ok: bool
    ) -> None:
        if not text and not empty_ok:
            self._reject(op, chat, message_id, text, now, PlatformError("no_text"))
        length = text_length(text, self.policy.length_unit)
        if length > self.policy.append_max:
            self._reject(
                op,
                chat,
                message_id,
                text,
                now,
                PlatformError(f"msg_too_long ({length} > {self.policy.append_max})"),
            )

    def _grow(self, op: str, message: _Message, message_id: str, text: str, now: float) -> None:
        length = text_length(text, self.policy.length_unit)
        if length > self.policy.max_length:
            self._reject(
                op,
                message.chat,
                message_id,
                text,
                now,
                PlatformError(f"message is too long ({length} > {self.policy.max_length})"),
            )
        message.text = text

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
