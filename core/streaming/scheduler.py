"""StreamScheduler: the one object per connector that paces every streamed reply.

::

    scheduler = StreamScheduler(connector)
    stream = scheduler.open(chat, private=True, reply_to=incoming.platform_message_id)
    async for event in provider.stream(request):
        if isinstance(event, TextDelta):
            stream.append(event.text)
    result = await stream.finish()          # ReplyResult: message ids + final text
    ...
    await scheduler.aclose()

Budgets, as the connector's :class:`~relaybot.core.contracts.connector.StreamPolicy` declares them:

* per chat (:class:`~relaybot.core.streaming.lane.Lane`): every stream in one ChatKey shares
  one minimum interval between requests (``private_interval`` or ``group_interval``); a
  chat-scoped 429 pauses the chat for ``retry_after`` and slows it down for a while after;
* per connector: a :class:`~relaybot.core.streaming.lane.GlobalPacer` spacing requests of all
  chats at 90% of ``global_rate``, FIFO, without catch-up bursts after event-loop stalls, and
  an :class:`~relaybot.core.streaming.lane.ArrivalWindow` that keeps arrivals at the platform
  within ``global_rate`` per second even when slow answers show requests are bunching up; a
  global 429 pauses every chat;
* per method (:mod:`.budgets`): ``policy.method_budgets`` (Slack's tiers, per workspace or per
  chat) and buckets the connector learned from response headers
  (:meth:`~relaybot.core.contracts.connector.BaseConnector.observe_bucket`, Discord). A stream whose
  native stream start is out of budget starts by send + edit instead of waiting.

Feedback comes at once: a typing indicator, or in draft mode an empty placeholder draft when
the budgets allow it right now (else typing, and the first draft carries text).

Typing indicators are not messages: they skip both budgets but never break a 429 pause.

For benchmarks: :attr:`StreamScheduler.stats` counts requests, and :attr:`StreamScheduler.trace`
(off by default, free when off) receives a :class:`~relaybot.core.streaming.lane.FrameTrace`
with the timings of every request. ``coalesce=False`` sends every appended delta as its own
frame (still paced and 429-aware), to measure what coalescing saves; never use it in a bot.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from relaybot.core.contracts.connector import BaseConnector, Method, Outgoing, OutgoingKind, StreamPolicy
from relaybot.core.contracts.models import ChatKey
from relaybot.core.streaming.budgets import LearnedBuckets, MethodBudgets
from relaybot.core.streaming.lane import ArrivalWindow, FrameTrace, GlobalPacer, Lane, SchedulerStats
from relaybot.core.streaming.stream import INTERRUPTED_MARKER, ReplyResult, ReplyStream, StreamMode
from relaybot.core.streaming.text import MIN_LIMIT, text_length

log = logging.getLogger("relaybot.core.streaming")

#: shown when a reply has no text and no note
EMPTY_REPLY_TEXT = "(empty reply)"

#: typing requests in flight at once per connector (more wait in a queue; see send_typing)
MAX_TYPING_INFLIGHT = 16
#: the connector-wide pacer runs at this fraction of ``policy.global_rate`` (see __init__)
GLOBAL_HEADROOM = 0.9

_MAX_DRAFT_ID = 2**31 - 1
# Forget idle lanes after this many new lanes were created (bounded memory for many chats).
_SWEEP_EVERY = 512


class StreamScheduler:
    """Paces all streamed replies of one connector (see the module docstring).

    Parameters: ``clock`` is the monotonic time source in seconds (the event loop's timers
    must run on the same time base); ``max_retries`` bounds retries of a request that fails
    with a non-429 platform error (429s are always retried after their pause);
    ``retry_backoff`` is the first retry delay, doubled per attempt; the connector-wide pacer
    has no burst and runs at ``GLOBAL_HEADROOM`` × ``policy.global_rate``, so jitter cannot
    push arrivals over the limit; ``coalesce=False`` is for benchmarks only (see the module docstring).
    """

    def __init__(
        self,
        connector: BaseConnector,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_retries: int = 5,
        retry_backoff: float = 0.5,
        interrupted_marker: str = INTERRUPTED_MARKER,
        empty_text: str = EMPTY_REPLY_TEXT,
        coalesce: bool = True,
    ) -> None:
        policy: StreamPolicy = connector.policy
        if policy.max_length < MIN_LIMIT:
            raise ValueError(f"policy.max_length must be at least {MIN_LIMIT}")
        self.connector = connector
        self.policy = policy
        self.clock = clock
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.interrupted_marker = interrupted_marker
        #: room kept free for the marker paragraph connectors add to an interrupted reply's
        #: last message (none on absurdly short limits, where it would crowd out the text)
        units = text_length("\n\n" + interrupted_marker, policy.length_unit)
        self.marker_units = units if policy.max_length >= 4 * units else 0
        self.empty_text = empty_text
        #: per-method budgets (``None`` when the policy declares none)
        self.budgets: MethodBudgets | None = (
            MethodBudgets(policy.method_budgets, connector.budget_group) if policy.method_budgets else None
        )
        connector.bucket_observer = self.observe_bucket
        #: counters for benchmarks (requests, 429s, not-modified, coalesced frames …)
        self.stats = SchedulerStats()
        #: called with a :class:`FrameTrace` after every request (benchmarks; ``None`` = off).
        #: Set it before opening streams: streams opened earlier are not traced. It runs in
        #: the lane's task, so it must be quick and must not raise.
        self.trace: Callable[[FrameTrace], None] | None = None
        #: False: every appended delta becomes its own frame (benchmarks only); read by streams
        #: when they open
        self.coalesce = coalesce
        #: end of a connector-wide 429 pause (in the past when not paused)
        self.paused_until = float("-inf")
        #: the connector-wide budget (``None`` when ``policy.global_rate`` is 0)
        self.pacer: GlobalPacer | None = None
        if policy.global_rate > 0:
            # Platforms count requests in sliding windows as they *arrive*: a budget at exactly
            # the limit, a saved burst, or overdue requests released together after an
            # event-loop stall all overshoot it (the streaming benchmark saw ~2 global 429/s
            # with a token bucket at 30/s, burst 6).
            self.pacer = GlobalPacer(policy.global_rate * GLOBAL_HEADROOM, clock)
        #: at most ``global_rate`` arrivals per second at the platform, even when the network
        #: bunches requests up (``None`` when ``policy.global_rate`` is 0)
        self.window: ArrivalWindow | None = (
            ArrivalWindow(policy.global_rate, clock) if policy.global_rate > 0 else None
        )
        self._lanes: dict[ChatKey, Lane] = {}
        self._new_lanes = 0
        self._draft_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._typing_inflight = 0
        # waiting typing requests: a new reply's first feedback goes before refreshes
        self._typing_first: deque[tuple[Lane, ChatKey]] = deque()
        self._typing_queue: deque[tuple[Lane, ChatKey]] = deque()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    def open(
        self,
        chat: ChatKey,
        *,
        private: bool,
        reply_to: str | None = None,
        feedback: bool = True,
        kind: OutgoingKind = "reply",
        outgoing: Outgoing | None = None,
    ) -> ReplyStream:
        """Start a reply in ``chat`` and give immediate feedback.

        ``kind`` (or a whole ``outgoing`` descriptor) says what the messages carry; ids known
        only after storage are filled in with :meth:`ReplyStream.describe`.

        Feedback: in private chats with native drafts an empty draft ("Thinking…") goes out
        as soon as the chat's budget allows; otherwise a typing indicator goes out at once
        and is refreshed every ``policy.typing_interval`` seconds until text is shown.
        ``feedback=False`` skips both (for text that is complete already, e.g. a command's
        answer). ``reply_to`` is the platform id the reply's first message answers. Must be
        called from the running event loop. Raises ``RuntimeError`` after :meth:`aclose`.
        """
        if self._closed:
            raise RuntimeError("the stream scheduler is closed")
        # Platforms limit requests per chat: every thread/topic of a chat shares one budget.
        budget_key = ChatKey(chat.platform, chat.chat) if chat.thread is not None else chat
        lane = self._lanes.get(budget_key)
        if lane is None:
            lane = self._lanes[budget_key] = Lane(self, budget_key, private=private)
            self._new_lanes += 1
            if self._new_lanes % _SWEEP_EVERY == 0:
                self._sweep()
        draft_id = (next(self._draft_ids) - 1) % _MAX_DRAFT_ID + 1
        stream = ReplyStream(
            self, lane, chat=chat, private=private, reply_to=reply_to, draft_id=draft_id,
            outgoing=outgoing if outgoing is not None else Outgoing(kind),
        )  # fmt: skip
        lane.join(stream, private=private)
        if not feedback:
            stream._placeholder = False
        elif stream.mode is StreamMode.DRAFT:
            now = self.clock()
            pacer = self.pacer
            if not lane.ready and lane.earliest() <= now and (pacer is None or pacer.try_take(now)):
                stream._prepaid = pacer is not None
                lane.enqueue(stream)  # the placeholder draft can go out at once
            else:
                # The chat's or the connector's budget is busy (many replies starting at
                # once): a typing indicator (free) now, and the first draft carries text
                # instead of spending a paced request on an empty placeholder.
                stream._placeholder = False
                stream._start_typing()
        else:
            stream._start_typing()
        return stream

    async def send_image(
        self,
        chat: ChatKey,
        image: bytes,
        *,
        private: bool,
        caption: str = "",
        mime_type: str = "image/png",
        reply_to: str | None = None,
        outgoing: Outgoing | None = None,
    ) -> ReplyResult:
        """Send one image as a paced frame (see :meth:`ReplyStream.finish_image`)."""
        stream = self.open(chat, private=private, reply_to=reply_to, feedback=False, outgoing=outgoing)
        return await stream.finish_image(image, caption=caption, mime_type=mime_type)

    def observe_bucket(self, chat: ChatKey, method: Method, remaining: int, reset_after: float) -> None:
        """A connector saw ``remaining`` ``method`` requests left in ``chat`` for ``reset_after``
        seconds (rate-limit headers): hold that method back until then once none remain."""
        budget_key = ChatKey(chat.platform, chat.chat) if chat.thread is not None else chat
        lane = self._lanes.get(budget_key)
        if lane is None:
            return  # no reply streams there: the next one learns again
        if lane.buckets is None:
            lane.buckets = LearnedBuckets()
        lane.buckets.observe(method, remaining, self.clock() + max(0.0, reset_after))

    def pause_all(self, seconds: float) -> None:
        """Pause every chat for ``seconds`` (a connector-wide 429)."""
        now = self.clock()
        self.paused_until = max(self.paused_until, now + seconds)
        if self.pacer is not None:
            self.pacer.drain(now)

    def send_typing(self, lane: Lane, chat: ChatKey, *, first: bool = False) -> None:
        """Send a typing indicator into ``chat`` soon; at most ``MAX_TYPING_INFLIGHT`` at once.

        Typing skips the platform budgets, so hundreds of replies starting together would
        otherwise open hundreds of concurrent requests, and HTTP connection pools (httpcore)
        scan every connection per request: that burst cost seconds of CPU in the streaming
        benchmark and delayed everyone's feedback. Queued indicators go out in order, those
        that are a new reply's ``first`` feedback before refreshes of replies already
        waiting (with 1,000 chats waiting for Telegram's budget, ~250 refreshes a second
        queued ahead of a newcomer held its first feedback back by seconds).
        """
        if self._typing_inflight >= MAX_TYPING_INFLIGHT:
            (self._typing_first if first else self._typing_queue).append((lane, chat))
            return
        self._typing_inflight += 1
        self.spawn(self._typing(lane, chat))

    async def _typing(self, lane: Lane, chat: ChatKey) -> None:
        try:
            await lane._send_typing(chat)
        finally:
            self._typing_inflight -= 1
            if not self._closed:
                if self._typing_first:
                    self.send_typing(*self._typing_first.popleft(), first=True)
                elif self._typing_queue:
                    self.send_typing(*self._typing_queue.popleft())

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a fire-and-forget helper (typing) that :meth:`aclose` can cancel."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop all lanes, giving finished replies up to ``timeout`` seconds to be delivered.

        Replies whose chat cannot send again before the deadline (e.g. a 1-hour
        ``retry_after``) are not waited for. Every reply not delivered by then is abandoned:
        its :meth:`~ReplyStream.finish` returns a :class:`ReplyResult` with
        ``delivered=False`` and ``error="scheduler closed"`` (it does not raise).
        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        deadline = self.clock() + max(0.0, timeout)
        waits = [
            stream._future
            for lane in self._lanes.values()
            if lane.earliest() <= deadline
            for stream in lane.streams
            if stream.finished and not stream.done
        ]
        if waits:
            await asyncio.wait(waits, timeout=max(0.0, deadline - self.clock()))
        tasks = []
        for lane in self._lanes.values():
            lane.abandon_all("scheduler closed")
            task = lane.cancel()
            if task is not None:
                tasks.append(task)
        tasks.extend(self._tasks)
        for task in self._tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._lanes.clear()

    def _sweep(self) -> None:
        now = self.clock()
        for chat in [chat for chat, lane in self._lanes.items() if lane.quiet(now)]:
            del self._lanes[chat]
