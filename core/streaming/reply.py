"""ReplyStream: one streamed answer, from the first token to every message delivered.

The producer calls :meth:`ReplyStream.append` per token (synchronous, O(1) amortised) and
awaits :meth:`ReplyStream.finish` once. The stream keeps the reply as *segments*: finalised
:class:`~relaybot.core.streaming.text.Part` values (one per platform message, boundaries
never move) and the growing tail. Its lane asks it, when the chat's budget allows, for the
next request (:meth:`ReplyStream._job`), which is always built from the latest text, so
frames coalesce instead of queueing deltas.

Delivery modes (chosen from the connector's policy when the stream opens):

* ``edit`` — send the first frame, edit it as text grows, edit it once more with
  ``final=True`` when its message is complete;
* ``draft`` — native drafts (private chats with ``policy.native_draft``): an empty
  placeholder at once, then ``send_draft`` frames under one stable draft id, and each message
  delivered with a real ``send_text(final=True)``; a draft refusal falls back to ``edit``;
* ``final`` — the platform cannot edit: each message is sent once, when complete.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from ..models import ChatKey
from .demand import ReadGate
from .text import Fence, Part, cut_part, fit_fence, render, scan_fences, text_length

if TYPE_CHECKING:
    from .lane import Lane
    from .scheduler import StreamScheduler

log = logging.getLogger("relaybot.core.streaming")

# Compact the tail's chunk list this often when no frames join it (mode "final").
_COMPACT_EVERY = 256
# Longest wait between retries of a failing request.
_MAX_BACKOFF = 30.0


class StreamMode(enum.StrEnum):
    """How a stream shows progress (see the module docstring)."""

    EDIT = "edit"
    DRAFT = "draft"
    FINAL = "final"


class _State(enum.Enum):
    OPEN = 1  # accepting text
    FINISHED = 2  # finish() called: delivering the final form
    DONE = 3  # every message delivered (or given up); the result is set


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """What a reply turned into on the platform.

    ``message_ids`` are the platform ids of the reply's messages in order; ``text`` is the
    full text as finally shown (with any interruption marker or note). ``delivered`` is false
    when some message could not be delivered in its final form: the stream was cancelled,
    the scheduler closed first (e.g. during a long ``retry_after``), the chat is gone, or
    retries ran out; ``error`` then says why.
    """

    message_ids: tuple[str, ...]
    text: str
    delivered: bool
    interrupted: bool = False
    error: str | None = None


@dataclass(slots=True)
class Job:
    """One request a lane performs for a stream (built fresh each time, never queued)."""

    kind: Literal["send", "edit", "draft"]
    text: str
    final: bool = False
    message_id: str | None = None
    reply_to: str | None = None
    #: the stream's append counter when the frame was built (for coalescing stats)
    version: int = 0
    #: when the oldest text this job carries became available (tracing only; 0.0: untraced)
    text_at: float = 0.0


class ReplyStream:
    """One streamed reply into one chat. Create it with ``StreamScheduler.open()``.

    Contract: call :meth:`append` for each piece of text, then exactly one of
    :meth:`finish` (deliver everything in final form) or :meth:`cancel` (stop; what was
    already shown stays as it is). ``async with`` does that for you: a normal exit finishes,
    an exception (including cancellation of the producer) finishes it as *interrupted* in
    the background, so a partial reply is never left half-shown.
    """

    __slots__ = (
        "__weakref__",
        "_backlog",
        "_chunks",
        "_counted",
        "_deferred",
        "_delivered",
        "_draft_text",
        "_errors",
        "_failures",
        "_fence",
        "_framed",
        "_frames_ok",
        "_future",
        "_ids",
        "_interrupted",
        "_lane",
        "_limit",
        "_line_start",
        "_live",
        "_msg_id",
        "_msg_text",
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
    ) -> None:
        policy = scheduler.policy
        self._sched = scheduler
        self._lane = lane
        #: where this reply goes (the lane's chat, plus the thread/topic if any)
        self.chat: ChatKey = chat or lane.chat
        self.private = private
        if policy.native_draft and private:
            self.mode = StreamMode.DRAFT
        else:
            self.mode = StreamMode.EDIT if policy.can_edit else StreamMode.FINAL
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
            text += open_fence.closer  # keep a marker or note out of a dangling code block
        has_content = bool(self._parts) or bool(text.strip())
        extras = []
        if interrupted:
            extras.append(self._sched.interrupted_marker)
        if note.strip():
            extras.append(note.strip())
        if not has_content and not extras:
            extras.append(self._sched.empty_text)
        tail = "\n\n".join(extras)
        if has_content and tail:
            tail = "\n\n" + tail
        text += tail
        self._chunks = [text] if text else []
        self._seg_units = text_length(text, self._unit)
        if self._seg_units + self._prefix_units > self._limit:
            self._cut()
        last = self._tail()
        if render(last, self._fence).strip():
            self._parts.append(Part(last, self._fence, None))
        self._chunks = []
        self._seg_units = 0
        self._state = _State.FINISHED
        if self._delivered >= len(self._parts):
            self._complete()
        else:
            self._lane.enqueue(self)

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

    def _cut(self) -> None:
        """Finalise segments until the tail fits (runs about once per ``max_length`` units)."""
        text = self._tail()
        while self._seg_units + self._prefix_units > self._limit:
            cut, part = cut_part(text, self._limit, self._unit, self._fence, line_start=self._line_start)
            self._parts.append(part)
            self._fence = fit_fence(part.fence_out, self._limit, self._unit)
            self._line_start = part.body.endswith("\n")
            text = text[cut:]
            self._prefix_units = text_length(self._fence.opener, self._unit) if self._fence is not None else 0
            self._seg_units = text_length(text, self._unit)
        self._chunks = [text] if text else []

    # -- lane side: what to send next and what happened ------------------------------------

    def _job(self) -> Job | None:
        """The next request for this stream, from the latest text; ``None`` if nothing."""
        job = self._next_job()
        if self._backlog is not None:
            # not coalescing: show the next waiting delta once the current text is out
            while job is None and self._backlog and self._state is _State.OPEN:
                self._add(self._backlog.popleft())
                job = self._next_job()
            if job is None and self._deferred is not None and not self._backlog:
                interrupted, note = self._deferred
                self._deferred = None
                self.finish_nowait(interrupted=interrupted, note=note)
                job = self._next_job()
        if job is not None and self._traced and job.text:
            job.text_at = self._text_at
            self._text_at = 0.0
        return job

    def _untrace(self, job: Job) -> None:
        """``job`` was not delivered: its text counts as waiting again (tracing only)."""
        if job.text_at and (not self._text_at or job.text_at < self._text_at):
            self._text_at = job.text_at

    def _next_job(self) -> Job | None:
        if self._state is _State.DONE:
            return None
        index = self._delivered
        if index < len(self._parts):
            return self._final_job(index, self._parts[index].text)
        if self._state is not _State.OPEN:
            return None
        if self._placeholder and not self._chunks:
            return Job("draft", "")
        if not self._live or self._framed == self._version:
            return None
        text = render(self._tail(), self._fence)
        if self.mode is StreamMode.DRAFT:
            if not text or text == self._draft_text:
                self._framed = self._version
                return None
            return Job("draft", text, version=self._version)
        if not text or text == self._msg_text:
            self._framed = self._version  # e.g. only whitespace arrived: nothing to show
            return None
        if self._msg_id is None:
            return Job("send", text, reply_to=self._reply_for(index), version=self._version)
        return Job("edit", text, message_id=self._msg_id, version=self._version)

    def _final_job(self, index: int, text: str) -> Job:
        if self.mode is StreamMode.EDIT and self._msg_id is not None:
            return Job("edit", text, final=True, message_id=self._msg_id)
        return Job("send", text, final=True, reply_to=self._reply_for(index))

    def _reply_for(self, index: int) -> str | None:
        return self._reply_to if index == 0 else None

    def _sent(self, job: Job, message_id: str | None) -> None:
        """A request succeeded (or was "not modified", which is the same thing)."""
        if self._state is _State.DONE:
            return  # cancelled while the request was in flight
        self._failures = 0
        if job.version:
            # deltas between the previous frame and this one needed no request of their own
            self._sched.stats.coalesced += max(0, job.version - self._counted - 1)
            self._counted = job.version
            self._framed = max(self._framed, job.version)
        if job.kind == "draft":
            self._placeholder = False
            self._draft_text = job.text
            if job.text:
                self._shown()
            return
        self._shown()
        if not job.final:
            self._msg_id = message_id
            self._msg_text = job.text
            return
        if message_id is not None:
            self._ids.append(message_id)
        self._next_message()

    def _next_message(self) -> None:
        self._delivered += 1
        self._msg_id = None
        self._msg_text = None
        self._draft_text = None
        self._framed = -1  # the next message starts fresh: show its text
        if self._state is _State.FINISHED and self._delivered >= len(self._parts):
            self._complete()

    def _gone(self, job: Job, exc: Exception) -> None:
        """The platform says the message (or chat) is gone."""
        if self._state is _State.DONE:
            return
        if job.kind == "edit":
            # The user deleted our message: carry on in a new one.
            log.info("%s: message %s is gone, sending a new one", self.chat, job.message_id)
            self._msg_id = None
            self._msg_text = None
            self._framed = -1
        elif job.kind == "draft":
            self._fallback(exc)
        elif job.reply_to is not None and self._reply_to is not None:
            log.info("%s: message %s to reply to is gone, sending without", self.chat, job.reply_to)
            self._reply_to = None
        else:
            self._abandon(f"chat is gone: {exc}")

    def _failed(self, job: Job, exc: Exception) -> None:
        """A request failed for another reason: back off and retry, a bounded number of times."""
        if self._state is _State.DONE:
            return
        if job.kind == "draft":
            self._fallback(exc)
            return
        self._failures += 1
        log.warning("%s: %s failed (attempt %d): %s", self.chat, job.kind, self._failures, exc)
        if self._failures > self._sched.max_retries:
            self._failures = 0
            if job.final:
                self._errors.append(f"message {self._delivered + 1} not delivered: {exc}")
                self._next_message()  # give up on this one, keep the rest of the reply
            else:
                self._frames_ok = self._live = False  # only final deliveries from now on
            return
        delay = min(_MAX_BACKOFF, self._sched.retry_backoff * 2 ** (self._failures - 1))
        self._queued = True  # parked: appends must not requeue it before the timer does
        self._timer = asyncio.get_running_loop().call_later(delay, self._retry)

    def _retry(self) -> None:
        self._timer = None
        self._queued = False
        self._lane.enqueue(self)

    def _fallback(self, exc: Exception) -> None:
        """Drafts do not work here: switch to send-then-edit (or final-only) for good."""
        log.info("%s: drafts unavailable (%s), falling back to edits", self.chat, exc)
        policy = self._sched.policy
        self.mode = StreamMode.EDIT if policy.can_edit else StreamMode.FINAL
        self._live = self._frames_ok and self.mode is StreamMode.EDIT
        self._placeholder = False
        self._framed = -1
        self._text_shown = False
        self._start_typing()

    # -- typing indicator ------------------------------------------------------------------

    def _start_typing(self) -> None:
        """Show typing now and keep refreshing it while the user has nothing else to see."""
        if self._sched.policy.typing_interval is None or self._typing is not None:
            return
        self._typing = asyncio.get_running_loop().call_soon(self._typing_tick)

    def _typing_wanted(self) -> bool:
        if self._state is _State.DONE:
            return False
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
