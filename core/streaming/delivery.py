"""The lane side of a :class:`~relaybot.core.streaming.stream.ReplyStream`: what to send next,
and what to do with the platform's answer.

Each time the chat's budget allows a request, the lane asks the stream for a :class:`PlatformCall`
built from the stream's *latest* state (frames coalesce: there is never a queue of deltas),
performs it and reports back through :meth:`Delivery._sent`, :meth:`Delivery._gone`,
:meth:`Delivery._failed` or :meth:`Delivery._stream_ended`.

The three streaming styles (:class:`StreamMode`) differ only here:

* *replace* (``edit``): send the first frame, edit it to the latest full text, edit it once
  more with ``final=True`` when the message is complete;
* *draft*: ``send_draft`` frames under one stable draft id, then one real ``send_text``;
* *append*: ``start_stream`` with the first text, ``append_stream`` with only what was added
  since the last frame (at most ``policy.append_max`` units per call: a longer backlog goes in
  several calls), ``stop_stream`` with the rest. What the platform holds is tracked in
  ``_appended``; when a cut at the length limit leaves it longer than the message's final
  text, or the platform ends the stream early (:class:`~relaybot.core.contracts.errors.StreamEndedError`),
  the message is finished by *replace* (an edit of the same message, or a new message when
  it cannot be edited) and the rest of the reply streams by replace too.

An image (:meth:`~relaybot.core.streaming.stream.ReplyStream.finish_image`) is one more job
kind, paced like text; the progress messages it replaces are deleted after it arrived.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

from relaybot.core.contracts.connector import Method, Outgoing
from relaybot.core.contracts.errors import StreamEndedError
from relaybot.core.contracts.models import ChatKey
from relaybot.core.streaming.text import fit_prefix, render, text_length

if TYPE_CHECKING:
    from collections import deque

    from relaybot.core.streaming.lane import Lane
    from relaybot.core.streaming.scheduler import StreamScheduler
    from relaybot.core.streaming.stream import ReplyStream
    from relaybot.core.streaming.text import Fence, LengthUnit, Part

log = logging.getLogger("relaybot.core.streaming")

# Longest wait between retries of a failing request.
_MAX_BACKOFF = 30.0


class StreamMode(enum.StrEnum):
    """How a stream shows progress (the streaming style; see the module docstring).

    ``final``: the platform cannot edit, so each message is sent once, when complete.
    """

    EDIT = "edit"
    DRAFT = "draft"
    APPEND = "append"
    FINAL = "final"


class _State(enum.Enum):
    OPEN = 1  # accepting text
    FINISHED = 2  # finish() called: delivering the final form
    DONE = 3  # every message delivered (or given up); the result is set


@dataclass(slots=True)
class PlatformCall:
    """One request a lane makes of the connector for a stream (built fresh each time, never
    queued); ``kind`` is the primitive, named as budgets name them (:data:`Method`)."""

    kind: Method
    text: str
    final: bool = False
    message_id: str | None = None
    reply_to: str | None = None
    #: the stream's append counter when the frame was built (for coalescing stats); 0 when
    #: the job carries only part of the text there is (an append capped at ``append_max``)
    version: int = 0
    #: when the oldest text this job carries became available (tracing only; 0.0: untraced)
    text_at: float = 0.0
    #: what the message carries (handed to the connector)
    outgoing: Outgoing | None = None


@dataclass(frozen=True, slots=True)
class ImageFrame:
    """An image waiting to be sent (see ``ReplyStream.finish_image``)."""

    data: bytes
    caption: str
    mime_type: str


class Delivery:
    """Mixin of :class:`~relaybot.core.streaming.stream.ReplyStream` (it owns every slot)."""

    if not TYPE_CHECKING:  # type checkers see the attributes declared below instead
        __slots__ = ()

    if TYPE_CHECKING:  # the state ReplyStream keeps (see its __init__), for type checkers
        _sched: StreamScheduler
        _lane: Lane
        chat: ChatKey
        mode: StreamMode
        _state: _State
        _out: Outgoing
        _parts: list[Part]
        _chunks: list[str]
        _fence: Fence | None
        _unit: LengthUnit
        _utf16: bool
        _version: int
        _framed: int
        _counted: int
        _delivered: int
        _ids: list[str]
        _msg_id: str | None
        _msg_text: str | None
        _draft_text: str | None
        _appended: str
        _image: ImageFrame | None
        _doomed: list[str]
        _placeholder: bool
        _interrupted: bool
        _live: bool
        _frames_ok: bool
        _failures: int
        _errors: list[str]
        _queued: bool
        _timer: asyncio.TimerHandle | None
        _reply_to: str | None
        _backlog: deque[str] | None
        _deferred: tuple[bool, str] | None
        _traced: bool
        _text_at: float
        _text_shown: bool

        def _tail(self) -> str: ...
        def _add(self, delta: str) -> bool: ...
        def _shown(self) -> None: ...
        def _start_typing(self) -> None: ...
        def _complete(self) -> None: ...
        def _abandon(self, reason: str) -> None: ...
        def finish_nowait(self, *, interrupted: bool = False, note: str = "") -> None: ...

    # -- what to send next -----------------------------------------------------------------

    def _job(self) -> PlatformCall | None:
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

    def _untrace(self, job: PlatformCall) -> None:
        """``job`` was not delivered: its text counts as waiting again (tracing only)."""
        if job.text_at and (not self._text_at or job.text_at < self._text_at):
            self._text_at = job.text_at

    def _next_job(self) -> PlatformCall | None:
        if self._state is _State.DONE:
            return None
        image = self._image
        if image is not None:
            caption = image.caption
            return PlatformCall("image", caption, final=True, reply_to=self._reply_to, outgoing=self._out)
        if self._doomed:
            return PlatformCall("delete", "", final=True, message_id=self._doomed[0])
        index = self._delivered
        if index < len(self._parts):
            return self._final_job(index, self._parts[index].text)
        if self._state is not _State.OPEN:
            return None
        if self._placeholder and not self._chunks:
            return PlatformCall("draft", "", outgoing=self._out)
        if not self._live or self._framed == self._version:
            return None
        text = render(self._tail(), self._fence)
        mode = self.mode
        if mode is StreamMode.DRAFT:
            if not text or text == self._draft_text:
                self._framed = self._version
                return None
            return PlatformCall("draft", text, version=self._version, outgoing=self._out)
        if mode is StreamMode.APPEND:
            return self._append_job(text)
        if not text or text == self._msg_text:
            self._framed = self._version  # e.g. only whitespace arrived: nothing to show
            return None
        if self._msg_id is None:
            return PlatformCall(
                "send", text, reply_to=self._reply_for(index), version=self._version, outgoing=self._out
            )
        return PlatformCall("edit", text, message_id=self._msg_id, version=self._version, outgoing=self._out)

    def _append_job(self, text: str) -> PlatformCall | None:
        """A start or append frame carrying what the platform's stream does not hold yet."""
        appended = self._appended
        if not text.startswith(appended):
            # the text was replaced (replace_text): close the stream, then edit the message
            # (a streaming message cannot be edited); final=False: the message goes on
            if self._msg_id is None:
                self._appended = ""
                return self._append_job(text)
            return PlatformCall("stop", "", message_id=self._msg_id, outgoing=self._out)
        delta = text[len(appended) :]
        if not delta:
            self._framed = self._version
            return None
        chunk, whole = self._chunk(delta)
        version = self._version if whole else 0
        if self._msg_id is None:
            return PlatformCall(
                "start", chunk, reply_to=self._reply_for(self._delivered), version=version, outgoing=self._out
            )
        return PlatformCall("append", chunk, message_id=self._msg_id, version=version, outgoing=self._out)

    def _chunk(self, text: str) -> tuple[str, bool]:
        """``text`` capped at the platform's per-call size; True when nothing was left out."""
        limit = self._sched.policy.append_max
        if len(text) <= limit and (not self._utf16 or text_length(text, self._unit) <= limit):
            return text, True
        n = fit_prefix(text, limit, self._unit)
        if n < len(text) and n > 1 and "\ud800" <= text[n - 1] <= "\udbff":
            n -= 1  # never split a (lone-surrogate) pair between two calls
        return text[: max(1, n)], False

    def _final_job(self, index: int, text: str) -> PlatformCall:
        out = self._part_out(index)
        if self._msg_id is not None:
            if self.mode is StreamMode.APPEND:
                appended = self._appended
                if not text.startswith(appended):
                    # a cut left the stream holding more than this message keeps: stop it,
                    # then replace its text (final=False marks that stop as not the end)
                    return PlatformCall("stop", "", message_id=self._msg_id, outgoing=self._out)
                rest, whole = self._chunk(text[len(appended) :])
                if not whole:
                    return PlatformCall("append", rest, message_id=self._msg_id, outgoing=self._out)
                return PlatformCall("stop", rest, final=True, message_id=self._msg_id, outgoing=out)
            if self.mode is StreamMode.EDIT:
                return PlatformCall("edit", text, final=True, message_id=self._msg_id, outgoing=out)
        return PlatformCall("send", text, final=True, reply_to=self._reply_for(index), outgoing=out)

    def _part_out(self, index: int) -> Outgoing:
        """The descriptor of message ``index``'s final frame (interrupted on the last one)."""
        out = self._out
        if self._interrupted and self._state is not _State.OPEN and index == len(self._parts) - 1:
            return replace(out, interrupted=True)
        return out

    def _reply_for(self, index: int) -> str | None:
        if index == 0:
            return self._reply_to
        if self._sched.policy.chain_parts and self._ids:
            return self._ids[-1]  # the previous part (policy.chain_parts)
        return None

    # -- what happened ---------------------------------------------------------------------

    def _sent(self, job: PlatformCall, message_id: str | None) -> None:
        """A request succeeded (or was "not modified", which is the same thing)."""
        if self._state is _State.DONE:
            return  # cancelled while the request was in flight
        self._failures = 0
        if job.version:
            # deltas between the previous frame and this one needed no request of their own
            self._sched.stats.coalesced += max(0, job.version - self._counted - 1)
            self._counted = job.version
            self._framed = max(self._framed, job.version)
        kind = job.kind
        if kind == "draft":
            self._placeholder = False
            self._draft_text = job.text
            if job.text:
                self._shown()
            return
        if kind == "image":
            self._image = None
            if message_id is not None:
                self._ids.append(message_id)
            self._shown()
            self._settle_if_delivered()
            return
        if kind == "delete":
            self._doomed.pop(0)
            self._settle_if_delivered()
            return
        self._shown()
        if kind in ("start", "append") or (kind == "stop" and not job.final):
            if kind == "start":
                self._msg_id = message_id
            self._appended += job.text
            if kind == "stop":
                self._to_replace()  # the message is finished by an edit of its full text
            return
        if not job.final:
            self._msg_id = message_id
            self._msg_text = job.text
            return
        if message_id is not None:
            self._ids.append(message_id)
        elif self._msg_id is not None:
            self._ids.append(self._msg_id)
        self._next_message()

    def _next_message(self) -> None:
        self._delivered += 1
        self._out = replace(self._out, part=self._delivered)  # frames of the next message
        self._msg_id = None
        self._msg_text = None
        self._draft_text = None
        self._appended = ""
        self._framed = -1  # the next message starts fresh: show its text
        self._settle_if_delivered()

    def _settle_if_delivered(self) -> None:
        if (
            self._state is not _State.OPEN
            and self._delivered >= len(self._parts)
            and self._image is None
            and not self._doomed
        ):
            self._complete()

    def _to_replace(self) -> None:
        """Leave the append style for good: the current message is edited from now on."""
        policy = self._sched.policy
        self.mode = StreamMode.EDIT if policy.can_edit else StreamMode.FINAL
        self._live = self._frames_ok and self.mode is StreamMode.EDIT
        if self._msg_id is not None:
            self._msg_text = self._appended  # what the message shows now
        self._appended = ""
        self._framed = -1

    def _start_short(self) -> None:
        """The platform's stream-start budget is spent: this reply goes by send + edit."""
        self._sched.stats.starts_short += 1
        self._to_replace()

    def _stream_ended(self, job: PlatformCall, exc: StreamEndedError) -> None:
        """The platform ended the append stream early: finish by replace (same or new message)."""
        if self._state is _State.DONE:
            return
        self._sched.stats.streams_ended += 1
        log.info("%s: the platform ended stream %s (%s); finishing by edits", self.chat, job.message_id, exc)
        self._to_replace()
        if not exc.editable or not self._sched.policy.can_edit:
            self._msg_id = None  # continue in a new message
            self._msg_text = None

    def _gone(self, job: PlatformCall, exc: Exception) -> None:
        """The platform says the message (or chat) is gone."""
        if self._state is _State.DONE:
            return
        kind = job.kind
        if kind == "delete":
            self._sent(job, None)  # gone already: what we wanted
        elif kind in ("edit", "append", "stop"):
            # The user deleted our message: carry on in a new one.
            log.info("%s: message %s is gone, sending a new one", self.chat, job.message_id)
            if kind != "edit":
                self._to_replace()
            self._msg_id = None
            self._msg_text = None
            self._framed = -1
        elif kind == "draft":
            self._fallback(exc)
        elif job.reply_to is not None and self._reply_to is not None:
            log.info("%s: message %s to reply to is gone, sending without", self.chat, job.reply_to)
            self._reply_to = None
        else:
            self._abandon(f"chat is gone: {exc}")

    def _failed(self, job: PlatformCall, exc: Exception) -> None:
        """A request failed for another reason: back off and retry, a bounded number of times."""
        if self._state is _State.DONE:
            return
        kind = job.kind
        if kind == "draft":
            self._fallback(exc)
            return
        if kind == "start":
            log.info("%s: cannot start a stream here (%s); sending and editing instead", self.chat, exc)
            self._to_replace()
            return
        self._failures += 1
        log.warning("%s: %s failed (attempt %d): %s", self.chat, kind, self._failures, exc)
        if self._failures > self._sched.max_retries:
            self._failures = 0
            if kind == "delete":
                log.warning("%s: could not delete message %s; leaving it", self.chat, job.message_id)
                self._sent(job, None)
            elif kind == "image":
                self._errors.append(f"image not delivered: {exc}")
                self._image = None
                self._doomed.clear()  # keep the progress text: it is all the user has
                self._settle_if_delivered()
            elif job.final:
                self._errors.append(f"message {self._delivered + 1} not delivered: {exc}")
                self._next_message()  # give up on this one, keep the rest of the reply
            elif kind in ("append", "stop"):
                self._to_replace()  # the stream is unusable: try plain edits
            else:
                self._frames_ok = self._live = False  # only final deliveries from now on
            return
        delay = min(_MAX_BACKOFF, self._sched.retry_backoff * 2 ** (self._failures - 1))
        self._queued = True  # parked: appends must not requeue it before the timer does
        self._timer = asyncio.get_running_loop().call_later(delay, self._retry)

    def _retry(self) -> None:
        self._timer = None
        self._queued = False
        self._lane.enqueue(cast("ReplyStream", self))

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
