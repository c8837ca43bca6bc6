"""ReplyStream: one streamed answer, from the first token to every message delivered.

The producer calls :meth:`ReplyStream.append` per token (synchronous, O(1) amortised) and
awaits :meth:`ReplyStream.finish` once. The stream keeps the reply as *segments*: finalised
:class:`~relaybot.core.streaming.text.Part` values (one per platform message, boundaries
never move) and the growing tail. Its lane asks it, when the chat's budget allows, for the
next request (:meth:`ReplyStream._job`), which is always built from the latest text, so
frames coalesce instead of queueing deltas.

Delivery modes (streaming styles, chosen from the connector's policy when the stream opens;
the requests themselves are built in :mod:`.delivery`):

* ``edit`` (*replace*) — send the first frame, edit it as text grows, edit it once more with
  ``final=True`` when its message is complete;
* ``draft`` — native drafts (private chats with ``policy.native_draft``): an empty
  placeholder at once, then ``send_draft`` frames under one stable draft id, and each message
  delivered with a real ``send_text(final=True)``; a draft refusal falls back to ``edit``;
* ``append`` — native append streams (``policy.native_append``, Slack): the platform receives
  only the text added since the last frame; a stream the platform ends early, or one it
  has no start budget for, finishes (or goes) by ``edit``;
* ``final`` — the platform cannot edit: each message is sent once, when complete.

Every request carries an :class:`~relaybot.core.contracts.connector.Outgoing` descriptor (set when the
stream opens, completed by :meth:`ReplyStream.describe` once the reply is stored). An
interrupted reply's final frame carries ``interrupted=True`` and its text *without* a marker:
connectors render it (room for :data:`INTERRUPTED_MARKER` is kept within ``max_length``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING

from relaybot.core.contracts.connector import Outgoing, OutgoingKind
from relaybot.core.contracts.errors import CapabilityError
from relaybot.core.contracts.models import ChatKey
from relaybot.core.streaming.delivery import Delivery, ImageFrame, PlatformCall, StreamMode, _State
from relaybot.core.streaming.demand import ReadGate
from relaybot.core.streaming.text import Fence, Part, cut_part, fit_fence, render, scan_fences, text_length

if TYPE_CHECKING:
    from relaybot.core.streaming.lane import Lane
    from relaybot.core.streaming.scheduler import StreamScheduler

log = logging.getLogger("relaybot.core.streaming")

# Compact the tail's chunk list this often when no frames join it (mode "final").
_COMPACT_EVERY = 256

#: the paragraph connectors append to an interrupted reply's last message (see mark_interrupted)
INTERRUPTED_MARKER = "⏹ interrupted"

__all__ = [
    "INTERRUPTED_MARKER",
    "PlatformCall",
    "ReplyResult",
    "ReplyStream",
    "StreamMode",
    "mark_interrupted",
]


def mark_interrupted(text: str, marker: str = INTERRUPTED_MARKER) -> str:
    """``text`` with the interruption marker as its last paragraph (the marker alone when
    ``text`` is empty): how Telegram and the terminal show ``Outgoing.interrupted``."""
    return f"{text}\n\n{marker}" if text.strip() else marker


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """What a reply turned into on the platform.

    ``message_ids`` are the platform ids of the reply's messages in order (for an image: the
    image's, and ``text`` is empty); ``text`` is the full text as finally shown, with any note but without the
    interruption marker (``interrupted`` says it; connectors render it). ``delivered`` is false
    when some message could not be delivered in its final form: the stream was cancelled,
    the scheduler closed first (e.g. during a long ``retry_after``), the chat is gone, or
    retries ran out; ``error`` then says why.
    """

    message_ids: tuple[str, ...]
    text: str
    delivered: bool
    interrupted: bool = False
    error: str | None = None


class ReplyStream(Delivery):
    """One streamed reply into one chat. Create it with ``StreamScheduler.open()``.

    Contract: call :meth:`append` for each piece of text (:meth:`replace_text` starts over,
    e.g. a progress notice turning into an error), then exactly one of :meth:`finish`
    (deliver everything in final form), :meth:`finish_image` (an image in place of the text)
    or :meth:`cancel` (stop; what was already shown stays as it is). ``async with`` does that
    for you: a normal exit finishes, an exception (including cancellation of the producer)
    finishes it as *interrupted* in the background, so a partial reply is never left
    half-shown. :meth:`describe` completes the :class:`~relaybot.core.contracts.connector.Outgoing`
    descriptor every request carries.
    """

    __slots__ = (
        "__weakref__",
        "_appended",
        "_backlog",
        "_busy",
        "_chunks",
        "_counted",
        "_deferred",
        "_delivered",
        "_doomed",
        "_draft_text",
        "_errors",
        "_failures",
        "_fence",
        "_framed",
        "_frames_ok",
        "_future",
        "_ids",
        "_image",
        "_interrupted",
        "_lane",
        "_limit",
        "_line_start",
        "_live",
        "_msg_id",
        "_msg_text",
        "_out",
        "_parts",
        "_placeholder",
        "_prefix_units",
        "_prepaid",
        "_queued",
        "_reply_to",
        "_sched",
        "_seg_units",
        "_served_at",
        "_state",
        "_text_at",
        "_text_shown",
        "_timer",
        "_traced",
        "_typed",
        "_typing",
        "_unit",
        "_utf16",
        "_version",
        "chat",
        "draft_id",
        "mode",
        "private",
        "read_gate",
    )

    def __init__(
        self,
        scheduler: StreamScheduler,
        lane: Lane,
        *,
        chat: ChatKey | None = None,
        private: bool,
        reply_to: str | None,
        draft_id: int,
        outgoing: Outgoing | None = None,
    ) -> None:
        policy = scheduler.policy
        self._sched = scheduler
        self._lane = lane
        #: where this reply goes (the lane's chat, plus the thread/topic if any)
        self.chat: ChatKey = chat or lane.chat
        self.private = private
        if policy.native_draft and private:
            self.mode = StreamMode.DRAFT
        elif policy.native_append:
            self.mode = StreamMode.APPEND
        else:
            self.mode = StreamMode.EDIT if policy.can_edit else StreamMode.FINAL
        # what every request of this reply carries (see describe())
        self._out = outgoing if outgoing is not None else Outgoing("reply")
        #: the stream's draft id (stable, non-zero) in draft mode, else 0
        self.draft_id = draft_id if self.mode is StreamMode.DRAFT else 0
        self._reply_to = reply_to
        self._limit = policy.max_length
        self._unit = policy.length_unit
        self._utf16 = policy.length_unit == "utf16"
        # the growing tail (current segment): chunks, its length, the fence reopened before it
        self._chunks: list[str] = []
        self._seg_units = 0
        self._prefix_units = 0
        self._fence: Fence | None = None
        self._line_start = True
        self._parts: list[Part] = []  # finalised segments, one per message
        self._version = 0  # bumped per append
        self._framed = 0  # version whose text the platform already shows (or was identical)
        self._counted = 0  # version of the last frame sent (for the coalescing counter)
        # the message being built (index len(_parts delivered)) in edit mode
        self._msg_id: str | None = None
        self._msg_text: str | None = None
        self._ids: list[str] = []
        self._appended = ""  # append mode: what the platform's stream holds of this message
        self._image: ImageFrame | None = None  # finish_image(): the image still to send
        self._doomed: list[str] = []  # progress messages to delete once the image arrived
        self._delivered = 0  # parts delivered in final form (or given up)
        self._draft_text: str | None = None
        self._placeholder = self.mode is StreamMode.DRAFT
        self._prepaid = False  # the next request already holds a connector-wide token
        self._state = _State.OPEN
        self._interrupted = False
        self._errors: list[str] = []
        self._failures = 0
        self._frames_ok = True
        self._live = self.mode is not StreamMode.FINAL
        self._queued = False  # in the lane's ready queue (or waiting on a backoff timer)
        self._served_at = float("-inf")  # when the lane last sent a request for it (fairness)
        self._timer: asyncio.TimerHandle | None = None
        self._typing: asyncio.Handle | None = None
        self._busy = False  # keep_typing(): typing goes on while the stream is open
        self._typed = False  # a typing indicator was asked for already (later ones refresh)
        self._text_shown = False
        # coalesce=False (benchmarks): appended deltas wait here and go out one per frame
        self._backlog: deque[str] | None = None if scheduler.coalesce else deque()
        self._deferred: tuple[bool, str] | None = None  # finish() args while the backlog drains
        # tracing (StreamScheduler.trace): when the oldest text not yet in a frame arrived
        self._traced = scheduler.trace is not None
        self._text_at = 0.0
        self._future: asyncio.Future[ReplyResult] = asyncio.get_running_loop().create_future()
        #: where the provider's reader sleeps while this chat cannot show text (see
        #: :mod:`.demand`; the lane wakes it if the chat's turn comes early)
        self.read_gate = ReadGate()

    # -- producer API ----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the result is known (delivered, cancelled or abandoned)."""
        return self._state is _State.DONE

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` (or :meth:`cancel`) was called."""
        return self._state is not _State.OPEN or self._deferred is not None

    @property
    def outgoing(self) -> Outgoing:
        """The descriptor this reply's requests carry (see :meth:`describe`)."""
        return self._out

    def describe(
        self,
        *,
        conversation_id: int | None = None,
        reply_id: int | None = None,
        kind: OutgoingKind | None = None,
        failed: bool | None = None,
    ) -> None:
        """Fill in what is known only after the reply was stored (the stream is opened first,
        for instant feedback). Call it before the first text; frames sent later carry it.
        ``failed=True`` (before :meth:`finish`): the reply failed, the final text is its reason."""
        out = self._out
        self._out = replace(
            out,
            kind=kind or out.kind,
            conversation_id=out.conversation_id if conversation_id is None else conversation_id,
            reply_id=out.reply_id if reply_id is None else reply_id,
            failed=out.failed if failed is None else failed,
        )

    def append(self, delta: str) -> None:
        """Add text. Synchronous and cheap: it only records the text and wakes the lane.

        Raises ``RuntimeError`` after :meth:`finish`; ignored after :meth:`cancel` or
        scheduler shutdown (a producer may still be winding down).
        """
        if self._state is not _State.OPEN or self._deferred is not None:
            if self._state is _State.FINISHED or self._deferred is not None:
                raise RuntimeError("append() after finish()")
            return
        if not delta:
            return
        if self._traced and not self._text_at:
            self._text_at = self._sched.clock()
        backlog = self._backlog
        if backlog is not None and (self._live or backlog):
            backlog.append(delta)  # not coalescing: the lane takes one delta per frame
            if not self._queued:
                self._lane.enqueue(self)
            return
        if self._add(delta):
            self._lane.enqueue(self)
        elif self._live:
            if not self._queued:
                self._lane.enqueue(self)
        elif len(self._chunks) >= _COMPACT_EVERY:
            self._chunks = ["".join(self._chunks)]

    def text_wanted_in(self) -> float:
        """Seconds until text appended now could go out (:class:`~.demand.TextDemand`).

        Zero while the chat's budget allows a request, once the reply is finished, and when
        not coalescing; else the time until the chat's interval (or 429 pause) ends or the
        connector-wide pacer reaches this chat, whichever is later. Both are lower bounds, so
        a reader that waits this long never holds back text that could have been shown.
        """
        if self._state is not _State.OPEN or self._deferred is not None or self._backlog is not None:
            return 0.0
        lane = self._lane
        sched = self._sched
        at = lane.earliest()
        pacer = sched.pacer
        if pacer is not None:
            at = max(at, pacer.turn_at(lane.pacer_ticket))
        wait = at - sched.clock()
        return wait if wait > 0.0 else 0.0

    def _add(self, delta: str) -> bool:
        """Record ``delta`` in the tail; return True when that finalised a message (a cut)."""
        self._chunks.append(delta)
        self._seg_units += text_length(delta, "utf16") if self._utf16 and not delta.isascii() else len(delta)
        self._version += 1
        if self._seg_units + self._prefix_units > self._limit:
            self._cut()
            return True
        return False

    async def finish(self, *, interrupted: bool = False, note: str = "") -> ReplyResult:
        """Mark the end and wait until every message is delivered in final form, once.

        ``interrupted`` appends the scheduler's marker (default ``"⏹ interrupted"``);
        ``note`` (an error or refusal explanation) is appended as its own paragraph. A reply
        with no text still produces a visible message (the note, or ``"(empty reply)"``).
        429s and transient platform errors are retried (a bounded number of times). Never
        raises for platform trouble: see :attr:`ReplyResult.delivered`. Cancelling the
        awaiting task does not stop delivery. Calling it again returns the same result.
        """
        self.finish_nowait(interrupted=interrupted, note=note)
        return await asyncio.shield(self._future)

    def finish_nowait(self, *, interrupted: bool = False, note: str = "") -> None:
        """Like :meth:`finish` but without waiting; delivery continues in the background."""
        if self._state is not _State.OPEN or self._deferred is not None:
            return
        if self._backlog:
            # not coalescing: every delta still gets its own frame before the final one
            self._deferred = (interrupted, note)
            self._lane.enqueue(self)
            return
        if self._traced:
            self._text_at = self._sched.clock()  # the final form exists from now on
        self._interrupted = interrupted
        text = self._tail().rstrip()
        open_fence = scan_fences(text, self._fence, line_start=self._line_start)
        if open_fence is not None:
            text += open_fence.closer  # keep a note (or the marker) out of a dangling code block
        has_content = bool(self._parts) or bool(text.strip())
        note = note.strip()
        if note:
            text = f"{text}\n\n{note}" if has_content else note
        elif not has_content and not interrupted:
            text = self._sched.empty_text
        # the connector adds the interruption marker: keep room for it in the last message
        reserve = self._sched.marker_units if interrupted else 0
        self._chunks = [text] if text else []
        self._seg_units = text_length(text, self._unit)
        if self._seg_units + self._prefix_units + reserve > self._limit:
            self._cut(reserve)
        last = self._tail()
        if render(last, self._fence).strip() or (interrupted and not self._parts):
            self._parts.append(Part(last, self._fence, None))
        self._chunks = []
        self._seg_units = 0
        self._state = _State.FINISHED
        if self._delivered >= len(self._parts):
            self._complete()
        else:
            self._lane.enqueue(self)

    async def finish_image(
        self, image: bytes, *, caption: str = "", mime_type: str = "image/png"
    ) -> ReplyResult:
        """End the reply with an image instead of text, and wait until it was delivered.

        The image is a frame like any other (paced within the chat's budget, 429s waited
        out, retried a bounded number of times). Text this stream showed until now (a
        "Generating…" notice) is deleted once the image arrived; if the image cannot be
        delivered the text stays and :attr:`ReplyResult.delivered` is false. Raises
        :class:`~relaybot.core.contracts.errors.CapabilityError` (before changing anything) when the
        connector cannot send images, so the caller can finish with text instead.
        """
        if not self._sched.connector.can_send_images:
            raise CapabilityError(f"{self._sched.connector.name} cannot send images")
        if self._state is _State.OPEN and self._deferred is None:
            self._image = ImageFrame(image, caption, mime_type)
            if self._sched.connector.can_delete:
                self._doomed = [*self._ids, *([self._msg_id] if self._msg_id is not None else [])]
            self._ids = []
            self._parts = []
            self._delivered = 0
            self._out = replace(self._out, part=0)
            self._chunks = []
            self._seg_units = 0
            self._backlog = None
            self._state = _State.FINISHED
            self._lane.enqueue(self)
        return await asyncio.shield(self._future)

    def keep_typing(self) -> None:
        """Keep the typing indicator going until :meth:`finish` (or an image), even once text
        is shown: for slow work behind a progress notice ("🎨 Generating…"). Paced like any
        typing indicator: refreshed every ``policy.typing_interval``, never into a 429 pause."""
        self._busy = True
        self._start_typing()

    def replace_text(self, text: str) -> None:
        """Replace everything appended so far with ``text`` (a progress notice that becomes
        the answer or an error): the next frame shows ``text`` in the same message (an edit;
        a new message where the platform cannot edit). Messages already complete in a split
        reply are deleted where the connector can. Ignored once finished."""
        if self._state is not _State.OPEN or self._deferred is not None:
            return
        if self._sched.connector.can_delete:
            self._doomed.extend(self._ids[: self._delivered])
        self._ids = []
        self._parts = []
        self._delivered = 0
        self._out = replace(self._out, part=0)
        self._fence = None
        self._prefix_units = 0
        self._line_start = True
        self._chunks = []
        self._seg_units = 0
        if self._backlog is not None:
            self._backlog.clear()
        self._framed = -1
        self.append(text)

    def cancel(self) -> None:
        """Stop without a final delivery; what the platform already shows stays. Idempotent."""
        self._abandon("cancelled")

    @property
    def text(self) -> str:
        """The full text so far (finalised parts and the growing tail)."""
        backlog = "".join(self._backlog) if self._backlog else ""
        return "".join(p.body for p in self._parts) + "".join(self._chunks) + backlog

    async def __aenter__(self) -> ReplyStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.finish()
        else:
            self.finish_nowait(interrupted=True)

    # -- splitting -------------------------------------------------------------------------

    def _tail(self) -> str:
        chunks = self._chunks
        if not chunks:
            return ""
        if len(chunks) > 1:
            joined = "".join(chunks)
            self._chunks = chunks = [joined]  # keep memory compact between frames
        return chunks[0]

    def _cut(self, reserve: int = 0) -> None:
        """Finalise segments until the tail fits (runs about once per ``max_length`` units).

        ``reserve`` units are kept free in the last segment (the interruption marker).
        """
        text = self._tail()
        limit = self._limit - reserve
        while self._seg_units + self._prefix_units > limit:
            cut, part = cut_part(text, limit, self._unit, self._fence, line_start=self._line_start)
            self._parts.append(part)
            self._fence = fit_fence(part.fence_out, self._limit, self._unit)
            self._line_start = part.body.endswith("\n")
            text = text[cut:]
            self._prefix_units = text_length(self._fence.opener, self._unit) if self._fence is not None else 0
            self._seg_units = text_length(text, self._unit)
        self._chunks = [text] if text else []

    # -- typing indicator ------------------------------------------------------------------

    def _start_typing(self) -> None:
        """Show typing now and keep refreshing it while the user has nothing else to see."""
        if self._sched.policy.typing_interval is None or self._typing is not None:
            return
        self._typing = asyncio.get_running_loop().call_soon(self._typing_tick)

    def _typing_wanted(self) -> bool:
        if self._state is _State.DONE:
            return False
        if self._busy and self._state is _State.OPEN:
            return True  # long work behind a progress notice (keep_typing)
        if self.mode is StreamMode.FINAL:
            return True  # nothing shows progress until a message is complete
        if self.mode is StreamMode.DRAFT:
            # the placeholder draft is the feedback; typing only stands in while no draft
            # could be sent yet (the budget was busy when the stream opened)
            return not self._text_shown and not self._placeholder and self._draft_text is None
        return not self._text_shown

    def _typing_tick(self) -> None:
        self._typing = None
        if not self._typing_wanted():
            return
        loop = asyncio.get_running_loop()
        now = self._sched.clock()
        blocked = self._lane.blocked_until()
        if blocked > now:  # never poke a paused chat
            self._typing = loop.call_later(blocked - now, self._typing_tick)
            return
        self._lane.typing(now, self.chat, first=not self._typed)
        self._typed = True
        self._typing = loop.call_later(self._sched.policy.typing_interval or 5.0, self._typing_tick)

    def _shown(self) -> None:
        if not self._text_shown:
            self._text_shown = True
            if not self._typing_wanted() and self._typing is not None:
                self._typing.cancel()
                self._typing = None

    # -- the end ---------------------------------------------------------------------------

    def _result(self, *, error: str | None = None) -> ReplyResult:
        errors = [*self._errors, error] if error else self._errors
        return ReplyResult(
            message_ids=tuple(self._ids),
            text=self.text,
            delivered=not errors,
            interrupted=self._interrupted,
            error="; ".join(errors) or None,
        )

    def _complete(self) -> None:
        self._settle(self._result())

    def _is_open(self) -> bool:
        return self._state is _State.OPEN

    def _abandon(self, reason: str) -> None:
        """Stop for good with an undelivered result (cancel, shutdown, chat gone)."""
        if self._state is _State.DONE:
            return
        if reason != "cancelled":
            log.info("%s: reply abandoned: %s", self.chat, reason)
        self._settle(self._result(error=reason))

    def _settle(self, result: ReplyResult) -> None:
        self._state = _State.DONE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._typing is not None:
            self._typing.cancel()
            self._typing = None
        self._lane.leave(self)
        if not self._future.done():
            self._future.set_result(result)
