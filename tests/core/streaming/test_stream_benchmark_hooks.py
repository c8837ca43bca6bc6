"""Scheduler options the streaming benchmark relies on: tracing, coalesce=False, the global
pacer and the typing stand-in for a placeholder draft that cannot go out at once."""

from __future__ import annotations

import asyncio

from relaybot.core.contracts.models import ChatKey
from relaybot.core.streaming import FrameTrace

DM = ChatKey("fake", "dm1")


async def test_trace_reports_every_request_with_its_timings(rig):
    conn, sched = rig()
    traces: list[FrameTrace] = []
    sched.trace = traces.append
    stream = sched.open(DM, private=True)
    for i in range(5):
        stream.append(f"word{i} ")
        await asyncio.sleep(0.03)
    await stream.finish()

    assert len(traces) == len(rig.requests(conn, DM))
    assert traces[-1].final and traces[-1].outcome == "ok"
    for tr in traces:
        assert tr.text_at > 0  # every request here carried provider text
        assert tr.issued_at >= tr.text_at and tr.done_at >= tr.issued_at
        # the scheduler never sends before its budget allowed it
        assert tr.issued_at >= tr.allowed_at


async def test_without_coalescing_every_delta_is_its_own_frame(rig):
    conn, sched = rig(sched_kw={"coalesce": False})
    stream = sched.open(DM, private=True)
    deltas = [f"d{i} " for i in range(6)]
    for delta in deltas:
        stream.append(delta)  # all at once: with coalescing this would be one frame
    result = await asyncio.wait_for(stream.finish(), 5)

    expected = "".join(deltas).rstrip()
    assert result.text == expected and conn.messages(DM) == [expected]
    frames = [op.text for op in rig.requests(conn, DM) if not op.final]
    # one frame per delta, each showing one more delta than the one before, then the final
    assert frames == ["".join(deltas[: n + 1]).rstrip() for n in range(len(deltas))]
    assert sched.stats.coalesced == 0


async def test_global_pacer_spaces_requests_without_bursts(rig):
    conn, sched = rig(rig.policy(global_rate=50))  # 45/s after headroom: ~22 ms apart
    chats = [ChatKey("fake", f"c{i}") for i in range(8)]
    streams = [sched.open(c, private=True) for c in chats]
    for s in streams:
        s.append("hi")
    await asyncio.wait_for(asyncio.gather(*(s.finish() for s in streams)), 5)
    times = sorted(op.t for op in conn.timeline if op.op in ("send", "edit", "draft"))
    assert len(times) >= 8
    # no burst: the whole span needs at least one interval per request after the first
    assert times[-1] - times[0] >= (len(times) - 1) / 45 - 0.01, times


async def test_busy_budget_gives_typing_instead_of_an_empty_draft(rig):
    conn, sched = rig(rig.policy(native_draft=True, typing_interval=5.0, global_rate=50))
    chats = [ChatKey("fake", f"u{i}") for i in range(5)]
    streams = [sched.open(c, private=True) for c in chats]
    await rig.wait_until(lambda: len(conn.ops(op="typing")) + len(conn.ops(op="draft")) >= 5)
    # the first placeholder could go at once; the others got feedback by typing instead
    assert [op.chat for op in conn.ops(op="draft")] == [chats[0]]
    assert {op.chat for op in conn.ops(op="typing")} == set(chats[1:])
    for n, s in enumerate(streams):
        s.append(f"answer {n}")
    results = await asyncio.wait_for(asyncio.gather(*(s.finish() for s in streams)), 5)
    assert [r.text for r in results] == [f"answer {n}" for n in range(5)]
    assert all(conn.messages(c) == [f"answer {n}"] for n, c in enumerate(chats))
