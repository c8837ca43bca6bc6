"""ArrivalWindow: the platform never sees more than ``limit`` arrivals per ``span``, even when
the network or the platform's own queue bunches requests up."""

from __future__ import annotations

import asyncio
import random
import time

from relaybot.core.streaming.lane import ArrivalWindow


def busiest_window(arrivals: list[float], span: float) -> int:
    """Most arrivals inside any half-open window [t, t + span)."""
    ordered = sorted(arrivals)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - span:
            start += 1
        best = max(best, end - start + 1)
    return best


async def platform_with_a_stall(
    window: ArrivalWindow | None, *, requests: int, stall_until: float, seed: int
) -> list[float]:
    """Issue ``requests`` at once; the platform holds every request that reaches it before
    ``stall_until`` (seconds from now) and takes them all in at that moment, like a stalled
    event loop or a congested link; later ones arrive after 0-20 ms. Returns arrival times."""
    rng = random.Random(seed)
    start = time.monotonic()
    arrivals: list[float] = []

    async def one() -> None:
        if window is not None:
            await window.enter()
        issued = time.monotonic() - start
        arrival = max(issued + rng.uniform(0.0, 0.02), stall_until)
        arrivals.append(arrival)
        await asyncio.sleep(arrival + 0.005 - (time.monotonic() - start))  # the answer
        if window is not None:
            window.leave(time.monotonic())

    await asyncio.gather(*(one() for _ in range(requests)))
    return arrivals


async def test_a_stall_cannot_bunch_more_than_the_limit_into_one_window():
    limit, span = 5, 1.0
    unguarded = await platform_with_a_stall(None, requests=12, stall_until=0.3, seed=1)
    assert busiest_window(unguarded, span) > limit  # the scenario does overshoot without it
    window = ArrivalWindow(limit / span, time.monotonic)
    guarded = await platform_with_a_stall(window, requests=12, stall_until=0.3, seed=1)
    assert len(guarded) == 12
    assert busiest_window(guarded, span) <= limit
    assert window.load(time.monotonic() + span) == 0  # every slot was given back


async def test_fast_answers_pass_at_once_and_in_order():
    window = ArrivalWindow(5.0, time.monotonic)
    order: list[int] = []

    async def one(i: int) -> None:
        await window.enter()
        order.append(i)
        window.leave(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(5)))
    assert time.monotonic() - started < 0.5  # under the limit nobody waits for the window
    await asyncio.gather(*(one(i) for i in range(5, 8)))  # these wait ~1 s for slots to expire
    assert order == list(range(8))  # FIFO
    assert time.monotonic() - started >= 0.9


async def test_a_cancelled_waiter_gives_its_slot_back():
    window = ArrivalWindow(1.0, time.monotonic)
    await window.enter()  # the only slot, in flight
    waiter = asyncio.create_task(window.enter())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    window.leave(time.monotonic())
    assert window.load(time.monotonic()) == 1  # only the answered request counts
    third = asyncio.create_task(window.enter())
    await asyncio.wait_for(third, 2.0)  # served once the answered one ages out
    assert window.load(time.monotonic()) == 1
