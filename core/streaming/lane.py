"""Per-chat pacing: one :class:`Lane` per ChatKey, a shared :class:`GlobalPacer` per connector.

A lane owns the chat's budget. It runs one task while the chat has open streams and sends
at most one request at a time, so two requests into one chat are always at least the chat's
interval apart (measured from the *end* of the previous request, so a slow response cannot
make two requests arrive closer than the interval). Streams that have something to show wait
in a FIFO ``ready`` queue; the lane takes the longest-waiting one, asks it for its *current*
frame (coalescing: whatever arrived meanwhile rides along) and puts it back at the end if it
has more, so no stream in a busy group starves.

Nothing here polls: a lane sleeps on an :class:`asyncio.Event` until a stream has work and on
``asyncio.sleep`` (a ``loop.call_at`` timer) until its budget allows the next request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaybot.core.contracts.errors import (
    MessageGoneError,
    MessageNotModifiedError,
    PlatformRateLimitError,
    StreamEndedError,
)
from relaybot.core.contracts.models import ChatKey

if TYPE_CHECKING:
    from relaybot.core.contracts.connector import Method
    from relaybot.core.streaming.budgets import LearnedBuckets
    from relaybot.core.streaming.delivery import PlatformCall
    from relaybot.core.streaming.scheduler import StreamScheduler
    from relaybot.core.streaming.stream import ReplyStream

log = logging.getLogger("relaybot.core.streaming")

#: after a 429 a lane's interval is multiplied by up to this factor …
MAX_SLOWDOWN = 8.0
#: … for this many seconds after the pause ends (platforms escalate waits for repeat offenders)
SLOWDOWN_WINDOW = 60.0


@dataclass(slots=True)
class SchedulerStats:
    """Counters for benchmarks and admin views (monotonic, never reset by the scheduler)."""

    #: requests that reached the connector (every kind below; typing not included)
    requests: int = 0
    sends: int = 0
    edits: int = 0
    drafts: int = 0
    #: append style: stream starts, appends and stops
    starts: int = 0
    appends: int = 0
    stops: int = 0
    images: int = 0
    deletes: int = 0
    typing: int = 0
    #: streams that started by send + edit because the stream-start budget was spent
    starts_short: int = 0
    #: append streams the platform ended early (finished by edits)
    streams_ended: int = 0
    #: 429 answers (``PlatformRateLimitError``), any scope
    rate_limited: int = 0
    #: "message is not modified" answers (counted as success)
    not_modified: int = 0
    #: appended deltas that rode along in a later frame instead of getting their own request
    coalesced: int = 0
    #: other platform errors (each retried or given up on)
    errors: int = 0
    #: times a chat's turn came while its provider stream was still deferred (see
    #: :mod:`.demand`): that frame missed the text waiting in the socket, the next one has it
    reads_woken: int = 0


@dataclass(frozen=True, slots=True)
class FrameTrace:
    """One request a lane performed, with its timings (for benchmarks; see
    :attr:`StreamScheduler.trace <relaybot.core.streaming.StreamScheduler.trace>`).

    All times are the scheduler's clock. ``text_at`` is when the oldest text this request
    carries became available: the first :meth:`~ReplyStream.append` not yet in an earlier
    frame, or, for a message's final form, the :meth:`~ReplyStream.finish` call; ``0.0`` when
    the request carries no new provider text (the empty draft placeholder, a repeat).
    ``allowed_at`` is when the chat's interval, any 429 pause and the connector-wide pacer
    allowed this request (``-inf`` if they never held it back). ``issued_at`` is when the
    lane called the connector primitive, ``done_at`` when that call returned or raised.

    So ``issued_at - max(text_at, allowed_at)`` is the latency the scheduler itself added:
    neither waiting for the provider nor for the platform's budget.
    """

    chat: ChatKey
    kind: Method
    final: bool
    text_at: float
    allowed_at: float
    issued_at: float
    done_at: float
    #: "ok", "not_modified", "rate_limited", "gone", "ended" (an append stream the platform
    #: ended) or "error"
    outcome: str


def _served_at(stream: ReplyStream) -> float:
    return stream._served_at


class GlobalPacer:
    """Connector-wide request budget: one request per ``1 / rate`` seconds, in FIFO order.

    Spacing is applied when each request is *released*, not reserved in advance: after an
    event-loop stall nothing "catches up" in a burst (platforms count arrivals in sliding
    windows, so a burst of overdue requests is exactly what earns a 429). Nothing polls: one
    timer releases the head waiter and re-arms itself while others wait.
    """

    __slots__ = ("_clock", "_timer", "_waiters", "interval", "issued", "next_at", "released")

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        #: earliest time the next request may go
        self.next_at = clock()
        #: waiters queued so far, and how many of them left the queue (served or cancelled):
        #: a waiter's ticket (``issued`` when it queued) minus ``released`` is its place in line
        self.issued = 0
        self.released = 0
        self._waiters: deque[asyncio.Future[float]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def try_take(self, now: float) -> bool:
        """Take the budget for a request now if nobody waits and the spacing allows it."""
        if self._waiters or now < self.next_at:
            return False
        self.next_at = now + self.interval
        return True

    async def acquire(self) -> float:
        """Wait for this request's turn; return when it was due (for tracing)."""
        now = self._clock()
        if self.try_take(now):
            return now
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self.issued += 1
        if self._timer is None:
            self._arm()
        return await future

    def turn_at(self, ticket: int = 0) -> float:
        """Earliest time the waiter holding ``ticket`` gets its turn (O(1), a lower bound).

        ``ticket`` 0 means a request that is not queued yet and would join at the back. Used
        to let provider streams wait while a chat cannot be shown new text anyway
        (:mod:`.demand`); a connector-wide 429 pause is not included (lanes add it).
        """
        ahead = ticket - self.released - 1 if ticket else len(self._waiters)
        return self.next_at + max(0, ahead) * self.interval

    def drain(self, now: float) -> None:
        """After a connector-wide 429: nothing goes before one more interval has passed."""
        self.next_at = max(self.next_at, now + self.interval)

    def _arm(self) -> None:
        due = self.next_at
        delay = max(0.0, due - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._release, due)

    def _release(self, due: float) -> None:
        self._timer = None
        now = self._clock()
        if now < self.next_at:  # drain() moved the deadline meanwhile
            self._arm()
            return
        while self._waiters:
            future = self._waiters.popleft()
            self.released += 1
            if not future.done():  # a cancelled lane leaves a cancelled future behind
                future.set_result(due)
                self.next_at = now + self.interval
                break
        if self._waiters:
            self._arm()


class ArrivalWindow:
    """At most ``limit`` requests *arrive* at the platform in any ``span`` seconds, whatever the
    network and the platform's own queues do to them on the way.

    A request arrives somewhere between the moment it is issued and the moment its answer comes
    back. A request may be issued only while the requests still in flight plus those answered
    less than ``span`` ago number fewer than ``limit``. Then no ``span``-long window at the
    platform can hold ``limit + 1`` arrivals: of any such set, take the request issued last;
    each of the other ``limit`` was issued before it and, at that moment, was either still in
    flight or answered after the window began (it arrived inside the window), i.e. less than
    ``span`` earlier — so this check would have held the last one back.

    The :class:`GlobalPacer` keeps the usual spacing well under the limit; this check costs
    nothing then and only bites when answers come back slowly, which is exactly when arrivals
    bunch up (an event-loop stall at either end, a congested network) and a plain rate limiter
    is fooled. Waiters are served in FIFO order; nothing polls.
    """

    __slots__ = ("_answered", "_clock", "_in_flight", "_timer", "_waiters", "limit", "span")

    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        #: requests allowed per ``span`` seconds (``rate`` requests/s, at least one)
        self.limit = max(1, round(rate))
        self.span = self.limit / rate
        self._clock = clock
        self._in_flight = 0
        self._answered: deque[float] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def load(self, now: float) -> int:
        """Requests in flight plus those answered within the last ``span`` seconds."""
        answered = self._answered
        horizon = now - self.span
        while answered and answered[0] <= horizon:
            answered.popleft()
        return self._in_flight + len(answered)

    async def enter(self) -> None:
        """Wait until a request may be issued, and count it as in flight from then on."""
        if not self._waiters and self.load(self._clock()) < self.limit:
            self._in_flight += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._arm()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # granted, then cancelled: give it back
                self._in_flight -= 1
                self._arm()
            raise

    def leave(self, now: float) -> None:
        """The request issued after :meth:`enter` got its answer (or failed) at ``now``."""
        self._in_flight -= 1
        self._answered.append(now)
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None or not self._waiters:
            return
        now = self._clock()
        if self.load(now) < self.limit:
            delay = 0.0
        elif self._answered:
            delay = self._answered[0] + self.span - now
        else:
            return  # all in flight: the next leave() re-arms
        self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._release)

    def _release(self) -> None:
        self._timer = None
        now = self._clock()
        while self._waiters and self.load(now) < self.limit:
            future = self._waiters.popleft()
            if not future.done():  # a cancelled waiter leaves a cancelled future behind
                self._in_flight += 1
                future.set_result(None)
        self._arm()


class Lane:
    """The pacing budget and request loop of one chat (see the module docstring)."""

    __slots__ = (
        "_sched",
        "_task",
        "_wake",
        "buckets",
        "chat",
        "interval",
        "last_typing",
        "next_ok",
        "pacer_ticket",
        "paused_until",
        "ready",
        "slow",
        "slow_until",
        "streams",
    )

    def __init__(self, scheduler: StreamScheduler, chat: ChatKey, *, private: bool) -> None:
        policy = scheduler.policy
        self._sched = scheduler
        self.chat = chat
        self.interval = policy.private_interval if private else policy.group_interval
        #: earliest time the next request may start (end of last request + interval)
        self.next_ok = float("-inf")
        #: set by a chat-scoped 429
        self.paused_until = float("-inf")
        self.slow = 1.0
        self.slow_until = float("-inf")
        #: this lane's place in the connector-wide pacer's queue while it waits there (else 0)
        self.pacer_ticket = 0
        #: when each thread (or the chat itself) last got a typing indicator
        self.last_typing: dict[ChatKey, float] = {}
        self.streams: set[ReplyStream] = set()
        self.ready: deque[ReplyStream] = deque()
        #: rate-limit buckets the connector reported for this chat (``None``: none yet)
        self.buckets: LearnedBuckets | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- bookkeeping used by streams and the scheduler -------------------------------------

    def join(self, stream: ReplyStream, *, private: bool) -> None:
        """Register an open stream; a group stream makes the whole lane use group pacing."""
        if not private:
            self.interval = max(self.interval, self._sched.policy.group_interval)
        self.streams.add(stream)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"relaybot-lane-{self.chat}"
            )

    def leave(self, stream: ReplyStream) -> None:
        """Forget a finished or abandoned stream (wakes the loop so it can exit when idle)."""
        self.streams.discard(stream)
        if not self.streams:
            self._wake.set()

    def enqueue(self, stream: ReplyStream, *, front: bool = False) -> None:
        """Mark ``stream`` as having something to send (O(1); no-op when already queued)."""
        if stream._queued or stream.done:
            return
        stream._queued = True
        if front:
            self.ready.appendleft(stream)
        else:
            self.ready.append(stream)
        self._wake.set()

    def blocked_until(self) -> float:
        """End of the current 429 pause (chat or global); in the past when not paused."""
        return max(self.paused_until, self._sched.paused_until)

    def earliest(self) -> float:
        """Earliest time the next request into this chat may start."""
        return max(self.next_ok, self.paused_until, self._sched.paused_until)

    def quiet(self, now: float) -> bool:
        """True when forgetting this lane loses nothing (no streams, no pending pacing state)."""
        return (
            not self.streams
            and now >= max(self.next_ok, self.paused_until, self.slow_until)
            and (self.buckets is None or self.buckets.quiet(now))
        )

    def current_interval(self, now: float) -> float:
        """The chat's interval, doubled per recent 429 while the slowdown window lasts."""
        if self.slow > 1.0 and now >= self.slow_until:
            self.slow = 1.0
        return self.interval * self.slow

    def rate_limited(self, exc: PlatformRateLimitError) -> None:
        """Apply a 429: pause this chat (or the connector) and slow the chat down for a while."""
        now = self._sched.clock()
        self._sched.stats.rate_limited += 1
        retry_after = max(0.0, exc.retry_after)
        if exc.scope == "global":
            self._sched.pause_all(retry_after)
        else:
            self.paused_until = max(self.paused_until, now + retry_after)
        self.slow = min(self.slow * 2.0, MAX_SLOWDOWN)
        self.slow_until = now + retry_after + SLOWDOWN_WINDOW
        log.warning("%s: rate limited (%s scope), pausing %.1fs", self.chat, exc.scope, retry_after)

    def typing(self, now: float, chat: ChatKey | None = None, *, first: bool = False) -> None:
        """Refresh the typing indicator of ``chat`` (a thread of this lane's chat, or the chat
        itself) unless another stream there just did. ``first``: it is a new reply's first
        feedback (queued before refreshes).

        Typing is not a message: it skips the chat interval and the global pacer, but the
        caller checks :meth:`blocked_until` first, so it never breaks a 429 pause.
        """
        chat = chat or self.chat
        interval = self._sched.policy.typing_interval or 0.0
        if now - self.last_typing.get(chat, float("-inf")) < interval * 0.8:
            return
        self.last_typing[chat] = now
        self._sched.send_typing(self, chat, first=first)

    async def _send_typing(self, chat: ChatKey) -> None:
        """One typing request (the scheduler bounds how many run at once)."""
        if not self.streams or self.blocked_until() > self._sched.clock():
            return  # queued behind others and no longer useful (or the chat got paused)
        try:
            await self._sched.connector.send_typing(chat)
            self._sched.stats.typing += 1
        except PlatformRateLimitError as exc:
            log.debug("%s: typing indicator rate limited", self.chat)
            self.rate_limited(exc)
        except Exception as exc:  # best effort by contract: never let typing break a reply
            log.debug("%s: typing indicator failed: %r", self.chat, exc)

    def abandon_all(self, reason: str) -> None:
        """Give up every stream of this lane (scheduler shutdown)."""
        for stream in list(self.streams):
            stream._abandon(reason)
        self.ready.clear()

    def cancel(self) -> asyncio.Task[None] | None:
        """Cancel the lane's task (if running) and return it so the caller can await it."""
        task = self._task
        if task is not None:
            task.cancel()
        return task

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self.streams:
                if not self.ready:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                allowed = await self._wait_allowed()
                stream = self._pop()
                if stream is None:
                    continue
                try:
                    await self._serve(stream, allowed)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # A bug must cost one reply, not every reply in this chat.
                    log.exception("%s: streaming failed", self.chat)
                    stream._abandon("internal error")
        finally:
            self._task = None

    async def _serve(self, stream: ReplyStream, allowed: float) -> None:
        """Send ``stream``'s next frame (if any) once the connector-wide budget allows.

        ``allowed`` is when the chat's own budget allowed this request (for tracing only).
        """
        job = stream._job()
        if job is None:
            return
        pacer = self._sched.pacer
        if stream._prepaid:
            stream._prepaid = False  # the placeholder took its turn when the stream opened
        elif pacer is not None:
            clock = self._sched.clock
            if not pacer.try_take(clock()):
                self.pacer_ticket = pacer.issued + 1  # acquire() queues it as the next ticket
                try:
                    allowed = max(allowed, await pacer.acquire())
                finally:
                    self.pacer_ticket = 0
                if self.blocked_until() > clock():
                    stream._untrace(job)
                    self.enqueue(stream, front=True)  # a 429 arrived meanwhile
                    return
                stream._untrace(job)  # the fresher job below carries this one's text
                if stream.read_gate.sleeping:
                    # our turn came sooner than text_wanted_in() said (chats ahead left the
                    # queue): the provider's reader reads its backlog now, for the next frame
                    stream.read_gate.wake()
                    self._sched.stats.reads_woken += 1
                job = stream._job()  # carry what arrived while we waited
                if job is None:
                    return
        if self.buckets is not None or self._sched.budgets is not None:
            job = await self._method_turn(stream, job)
            if job is None:
                return
        await self._perform(stream, job, allowed)

    async def _method_turn(self, stream: ReplyStream, job: PlatformCall) -> PlatformCall | None:
        """Wait until ``job``'s method has budget (per-method budgets, learned buckets).

        A native stream start that would have to wait goes by send + edit instead (when many
        replies begin at once, Slack's start budget is the scarce one). After a wait the job
        is rebuilt, so it carries what arrived meanwhile.
        """
        clock = self._sched.clock
        while True:
            wait = self._method_wait(job.kind, clock())
            if wait <= 0.0:
                return job
            if job.kind == "start":
                stream._start_short()
            else:
                stream._untrace(job)
                await asyncio.sleep(wait)
                if self.blocked_until() > clock():
                    self.enqueue(stream, front=True)  # a 429 arrived meanwhile
                    return None
            next_job = stream._job()
            if next_job is None:
                return None
            job = next_job

    def _method_wait(self, method: str, now: float) -> float:
        budgets = self._sched.budgets
        wait = budgets.wait(method, self.chat, now) if budgets is not None else 0.0
        if self.buckets is not None:
            wait = max(wait, self.buckets.wait(method, now))
        return wait

    async def _wait_allowed(self) -> float:
        """Sleep until the chat's budget allows a request; return when it did (may be -inf)."""
        clock = self._sched.clock
        earliest = self.earliest()
        wait = earliest - clock()
        while wait > 0:
            # A deadline timer, not a poll: it sleeps exactly until the budget allows, and
            # re-checks only because a 429 that arrived meanwhile may have moved the deadline.
            await asyncio.sleep(wait)
            earliest = self.earliest()
            wait = earliest - clock()
        return earliest

    def _pop(self) -> ReplyStream | None:
        """The ready stream served longest ago (never served first).

        Plain FIFO is not fair in a shared chat: a stream is re-queued right after each frame,
        while the others of the chat have no text yet (their readers are deferred until just
        before the chat's next turn), so it would be first in line again and again. Lanes of
        private chats hold one stream, so the scan costs nothing there.
        """
        ready = self.ready
        while ready:
            if len(ready) == 1:
                stream = ready.popleft()
            else:
                stream = min(ready, key=_served_at)
                ready.remove(stream)
            stream._queued = False
            if not stream.done:
                return stream
        return None

    async def _perform(self, stream: ReplyStream, job: PlatformCall, allowed: float = float("-inf")) -> None:
        sched = self._sched
        conn = sched.connector
        stats = sched.stats
        stats.requests += 1
        message_id = job.message_id
        trace = sched.trace
        window = sched.window
        if window is not None:
            await window.enter()  # returns at once unless answers are coming back slowly
        issued = sched.clock() if trace is not None else 0.0
        if sched.budgets is not None:
            sched.budgets.take(job.kind, stream.chat, sched.clock())
        if self.buckets is not None:
            self.buckets.take(job.kind)
        outcome = "ok"
        kind = job.kind
        out = job.outgoing or stream._out
        try:
            if kind == "send":
                stats.sends += 1
                message_id = await conn.send_text(
                    stream.chat, job.text, final=job.final, reply_to=job.reply_to, outgoing=out
                )
            elif kind == "edit":
                stats.edits += 1
                await conn.edit_text(
                    stream.chat, job.message_id or "", job.text, final=job.final, outgoing=out
                )
            elif kind == "draft":
                stats.drafts += 1
                await conn.send_draft(stream.chat, stream.draft_id, job.text, outgoing=out)
            elif kind == "append":
                stats.appends += 1
                await conn.append_stream(stream.chat, job.message_id or "", job.text, outgoing=out)
            elif kind == "start":
                stats.starts += 1
                message_id = await conn.start_stream(
                    stream.chat, job.text, reply_to=job.reply_to, outgoing=out
                )
            elif kind == "stop":
                stats.stops += 1
                await conn.stop_stream(stream.chat, job.message_id or "", job.text, outgoing=out)
            elif kind == "image":
                stats.images += 1
                image = stream._image
                assert image is not None
                message_id = await conn.send_image(
                    stream.chat, image.data, caption=image.caption, mime_type=image.mime_type, outgoing=out
                )
            else:
                stats.deletes += 1
                await conn.delete_message(stream.chat, job.message_id or "")
        except PlatformRateLimitError as exc:
            outcome = "rate_limited"
            stream._untrace(job)
            self.rate_limited(exc)
            self.enqueue(stream, front=True)  # it keeps its turn; the next frame is fresher
        except MessageNotModifiedError:
            outcome = "not_modified"
            stats.not_modified += 1
            stream._sent(job, message_id)
        except MessageGoneError as exc:
            outcome = "gone"
            stream._untrace(job)
            stream._gone(job, exc)
        except StreamEndedError as exc:
            outcome = "ended"
            stream._untrace(job)
            stream._stream_ended(job, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # PlatformError, or a connector bug: retried with backoff
            outcome = "error"
            stats.errors += 1
            stream._untrace(job)
            stream._failed(job, exc)
        else:
            stream._sent(job, message_id)
        finally:
            now = sched.clock()
            if window is not None:
                window.leave(now)
            self.next_ok = max(self.next_ok, now + self.current_interval(now))
            stream._served_at = now
        if trace is not None:
            trace(FrameTrace(
                stream.chat, job.kind, job.final, job.text_at, allowed, issued, now, outcome
            ))  # fmt: skip
        if not stream.done:
            self.enqueue(stream)  # round-robin: back of the queue; dropped if it has no job
