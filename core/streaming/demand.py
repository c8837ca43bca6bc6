"""Read pacing: the network may wait while the platform cannot show more text anyway.

A provider sends a token every ~30 ms, but Telegram lets a chat see a new frame about once a
second, and with hundreds of chats sharing the bot's 30 requests/s a chat's next frame may be
many seconds away. Reading every token the moment it arrives costs a socket read, a parser
call, a task wake-up and a pass through the provider's generators each time: at 1,000
concurrent streams that alone is about a core of CPU (``benchmarks/README.md``). Reading what
piled up once, just before the next frame can go out, costs one of each per frame instead. The
bytes wait in the kernel's socket buffer meanwhile (TCP flow control), so nothing is lost and
nothing is held in Python.

The pieces:

* a consumer that shows text (the core's :class:`~relaybot.core.streaming.ReplyStream`)
  implements :class:`TextDemand`, and the core sets it in :data:`text_demand` while it reads
  a provider stream;
* a transport that can pause its socket (the aiohttp transport of the HTTP providers) picks
  it up with :func:`current_text_demand` when a streamed response starts and awaits
  :func:`defer_reading` between two reads.

Contract that keeps this safe: a demand answers *at least* "now" whenever text could be shown
now (the first token, an idle chat, a finished or cancelled reply), so the design's latency
measure (token → platform request while the budget allows a frame) is untouched, and a
deferral never exceeds ``max_wait``, so the provider never sees a stalled reader for long.
A demand can cut a deferral short with :meth:`ReadGate.wake` when the platform turns out to be
ready sooner than it said.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from contextvars import ContextVar
from typing import Protocol, runtime_checkable

__all__ = [
    "MIN_DEFERRAL",
    "ReadGate",
    "TextDemand",
    "current_text_demand",
    "defer_reading",
    "text_demand",
]

#: deferrals shorter than this are not worth a pause/resume pair (a frame is almost due)
MIN_DEFERRAL = 0.05
#: the reader wakes this fraction of the deferral (at least 5 ms) before the frame is due, so
#: what piled up is read before the frame takes its text
_LEAD_FRACTION = 0.1
_MIN_LEAD = 0.005


class ReadGate:
    """Where a deferred reader sleeps; :meth:`wake` ends the sleep early.

    One per consumer. Only one reader at a time may sleep on it (a reply reads one stream).
    """

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    @property
    def sleeping(self) -> bool:
        """True while a reader is deferred on this gate."""
        return self._waiter is not None

    def wake(self) -> None:
        """End the current deferral now (no-op when nobody sleeps)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, or until :meth:`wake`."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@runtime_checkable
class TextDemand(Protocol):
    """A consumer of streamed text that knows when it can next show some."""

    #: deferred readers sleep here, so the consumer can wake them early
    read_gate: ReadGate

    def text_wanted_in(self) -> float:
        """Seconds until text that arrived now could reach the user (``0.0``: at once).

        Must be cheap (called between two network reads) and must never overestimate when
        the text could be shown at once; an estimate that is too *short* only costs CPU.
        ``math.inf`` means not before the end of the stream.
        """
        ...


#: the consumer of the provider stream being read in this task (``None``: read eagerly)
text_demand: ContextVar[TextDemand | None] = ContextVar("relaybot_text_demand", default=None)


def current_text_demand() -> TextDemand | None:
    """The demand a transport should honour for a response starting now (or ``None``)."""
    return text_demand.get()


async def defer_reading(
    demand: TextDemand,
    *,
    pause: Callable[[], object],
    resume: Callable[[], object],
    max_wait: float,
) -> bool:
    """Between two reads: if no text is wanted soon, ``pause()`` the socket and sleep.

    Sleeps until shortly before the text is wanted, at most ``max_wait`` seconds, or until
    the demand's gate is woken; ``resume()`` always runs afterwards (also on cancellation).
    Returns whether it slept. ``pause``/``resume`` must be idempotent and must not raise on a
    closed connection (the next read reports that).
    """
    wanted_in = demand.text_wanted_in()
    if wanted_in < MIN_DEFERRAL or max_wait < MIN_DEFERRAL:
        return False
    if math.isinf(wanted_in):
        delay = max_wait
    else:
        delay = min(wanted_in - max(_MIN_LEAD, wanted_in * _LEAD_FRACTION), max_wait)
    if delay < MIN_DEFERRAL:
        return False
    pause()
    try:
        await demand.read_gate.sleep(delay)
    finally:
        resume()
    return True
