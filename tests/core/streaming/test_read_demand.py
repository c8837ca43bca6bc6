"""Read pacing (relaybot.core.streaming.demand): when a chat can show text again, and how a
reader waits for it."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from relaybot.core.contracts.models import ChatKey
from relaybot.core.streaming.demand import ReadGate, defer_reading
from relaybot.core.streaming.lane import GlobalPacer

DM = ChatKey("fake", "dm1")


class Demand:
    """A consumer that always wants text in ``wanted`` seconds."""

    def __init__(self, wanted: float) -> None:
        self.wanted = wanted
        self.read_gate = ReadGate()

    def text_wanted_in(self) -> float:
        return self.wanted


class Switch:
    """Records pause/resume calls of a fake socket."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause(self) -> None:
        self.calls.append("pause")

    def resume(self) -> None:
        self.calls.append("resume")


async def defer(demand: Demand, switch: Switch, max_wait: float = 1.0) -> bool:
    return await defer_reading(demand, pause=switch.pause, resume=switch.resume, max_wait=max_wait)


async def test_a_reader_sleeps_until_just_before_the_text_is_wanted():
    switch = Switch()
    started = time.monotonic()
    assert await defer(Demand(0.3), switch)
    elapsed = time.monotonic() - started
    assert switch.calls == ["pause", "resume"]
    assert 0.2 <= elapsed < 0.3  # woken a little early, so the backlog is read before the frame


async def test_no_pause_when_text_is_wanted_now_or_almost():
    switch = Switch()
    assert not await defer(Demand(0.0), switch)
    assert not await defer(Demand(0.02), switch)
    assert switch.calls == []


async def test_a_deferral_never_exceeds_max_wait():
    switch = Switch()
    started = time.monotonic()
    assert await defer(Demand(math.inf), switch, max_wait=0.15)
    assert time.monotonic() - started < 0.3
    assert switch.calls == ["pause", "resume"]


async def test_waking_the_gate_ends_the_deferral_and_resumes_reading():
    demand, switch = Demand(5.0), Switch()
    task = asyncio.create_task(defer(demand, switch))
    await asyncio.sleep(0.05)
    assert demand.read_gate.sleeping and switch.calls == ["pause"]
    started = time.monotonic()
    demand.read_gate.wake()
    assert await task
    assert time.monotonic() - started < 0.1
    assert switch.calls == ["pause", "resume"] and not demand.read_gate.sleeping


async def test_a_cancelled_reader_still_resumes_its_socket():
    demand, switch = Demand(5.0), Switch()
    task = asyncio.create_task(defer(demand, switch))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert switch.calls == ["pause", "resume"]


async def test_pacer_tickets_tell_each_waiter_its_turn():
    pacer = GlobalPacer(10.0, time.monotonic)  # one request per 0.1 s
    assert pacer.try_take(time.monotonic())
    first_free = pacer.next_at
    waiters = [asyncio.create_task(pacer.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    assert pacer.issued == 3 and pacer.released == 0
    assert pacer.turn_at(1) == pytest.approx(first_free)
    assert pacer.turn_at(3) == pytest.approx(first_free + 0.2)
    assert pacer.turn_at() == pytest.approx(first_free + 0.3)  # not queued yet: at the back
    await waiters[0]
    assert pacer.released == 1
    assert pacer.turn_at(2) == pytest.approx(pacer.next_at)  # now first in line
    for task in waiters:
        task.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_a_stream_wants_text_at_once_while_its_chat_budget_allows(rig):
    conn, sched = rig(rig.policy(private_interval=0.5))
    stream = sched.open(DM, private=True)
    assert stream.text_wanted_in() == 0.0  # idle chat: the first token goes out at once
    stream.append("Hello")
    await rig.wait_until(lambda: len(rig.requests(conn, DM)) == 1)
    # the chat just had a frame: nothing new can be shown for about the interval
    assert 0.35 < stream.text_wanted_in() <= 0.5
    result_task = asyncio.create_task(stream.finish())
    await asyncio.sleep(0)
    assert stream.text_wanted_in() == 0.0  # finished: read everything that is left now
    await result_task


async def test_a_stream_waiting_behind_the_connector_budget_is_told_its_turn(rig):
    # 2 requests/s connector-wide (x0.9 headroom): the third chat's first frame waits ~1 s
    _conn, sched = rig(rig.policy(global_rate=2.0))
    streams = [sched.open(ChatKey("fake", f"dm{i}"), private=True) for i in range(3)]
    for stream in streams:
        stream.append("hi")
    await rig.wait_until(lambda: sched.pacer is not None and len(sched.pacer._waiters) >= 1)
    waits = [stream.text_wanted_in() for stream in streams]
    assert max(waits) > 0.4  # a later turn is known, so its reader may sleep till then
    for stream in streams:
        await stream.finish()


async def test_a_chat_whose_turn_comes_wakes_its_sleeping_reader(rig):
    # 2 requests/s connector-wide: the second chat's first frame waits for the pacer
    conn, sched = rig(rig.policy(global_rate=2.0))
    first = sched.open(ChatKey("fake", "dm1"), private=True)
    second = sched.open(ChatKey("fake", "dm2"), private=True)
    first.append("one")
    second.append("two")
    await rig.wait_until(lambda: sched.pacer is not None and len(sched.pacer._waiters) == 1)
    # the second reply's provider reader is deferred, as if it had guessed a later turn
    started = time.monotonic()
    reader = asyncio.create_task(second.read_gate.sleep(30))
    await reader  # returns when the lane, granted its turn, wakes it
    assert time.monotonic() - started < 2.0
    assert sched.stats.reads_woken == 1
    await rig.wait_until(lambda: conn.messages(ChatKey("fake", "dm2")) != [])
    await first.finish()
    await second.finish()
