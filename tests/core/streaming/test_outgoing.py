"""Every outgoing request says what it carries (Outgoing), and the interruption marker is data."""

from __future__ import annotations

import asyncio

from relaybot.core.contracts.connector import Outgoing
from relaybot.core.contracts.models import ChatKey
from relaybot.core.streaming import INTERRUPTED_MARKER, mark_interrupted, split_text, text_length

DM = ChatKey("fake", "dm1")
GROUP = ChatKey("fake", "g1")


async def produce(stream, deltas, pause=0.001):
    for delta in deltas:
        stream.append(delta)
        await asyncio.sleep(pause)


async def test_frames_carry_the_descriptor_filled_in_after_storage(rig):
    conn, sched = rig(rig.policy(max_length=60))
    stream = sched.open(DM, private=True)
    assert stream.outgoing == Outgoing("reply")
    stream.describe(conversation_id=7, reply_id=42)  # known once the reply row exists
    await produce(stream, [f"word{i} " for i in range(40)])
    result = await stream.finish()

    ops = rig.requests(conn, DM)
    assert len(result.message_ids) >= 3
    assert all(op.outgoing.kind == "reply" for op in ops)
    assert {(op.outgoing.conversation_id, op.outgoing.reply_id) for op in ops} == {(7, 42)}
    # each message of the split reply has its part number, on every frame of it
    parts = {op.message_id: op.outgoing.part for op in ops}
    assert [parts[m] for m in result.message_ids] == list(range(len(result.message_ids)))
    assert not any(op.outgoing.interrupted for op in ops)


async def test_kinds_are_what_the_opener_said(rig):
    conn, sched = rig()
    notice = sched.open(DM, private=True, feedback=False, kind="notice")
    notice.append("You are not allowed to use this bot.")
    command = sched.open(GROUP, private=False, feedback=False, kind="command")
    command.append("Started a new conversation.")
    await asyncio.gather(notice.finish(), command.finish())
    assert conn.ops(DM, "send")[0].outgoing == Outgoing("notice")
    assert conn.ops(GROUP, "send")[0].outgoing == Outgoing("command")


async def test_only_the_last_messages_final_frame_is_interrupted_and_fits_with_its_marker(rig):
    limit = 64
    conn, sched = rig(rig.policy(max_length=limit))
    stream = sched.open(DM, private=True)
    # fills the last message to the brim: without room for the marker it would overflow
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu " * 3
    await produce(stream, [text[i : i + 7] for i in range(0, len(text), 7)])
    result = await stream.finish(interrupted=True)

    assert result.interrupted and INTERRUPTED_MARKER not in result.text
    marked = [op for op in rig.requests(conn, DM) if op.outgoing.interrupted]
    assert len(marked) == 1 and marked[0].final
    assert marked[0].message_id == result.message_ids[-1]
    assert INTERRUPTED_MARKER not in marked[0].text  # the connector renders it
    shown = conn.messages(DM)
    assert shown[-1].endswith(f"\n\n{INTERRUPTED_MARKER}")
    assert all(text_length(m) <= limit for m in shown) and not conn.rejected
    assert " ".join(shown).replace(INTERRUPTED_MARKER, "").split() == text.split()


async def test_an_interrupted_reply_without_text_still_shows_the_marker(rig):
    conn, sched = rig()
    stream = sched.open(DM, private=True)
    result = await stream.finish(interrupted=True)
    assert result.delivered and result.text == ""
    assert conn.messages(DM) == [INTERRUPTED_MARKER]
    assert conn.ops(DM, "send")[0].outgoing.interrupted


def test_mark_interrupted_renders_the_usual_paragraph():
    assert mark_interrupted("Partial") == f"Partial\n\n{INTERRUPTED_MARKER}"
    assert mark_interrupted("  ") == INTERRUPTED_MARKER


async def test_not_interrupted_split_is_unchanged(rig):
    conn, sched = rig(rig.policy(max_length=50))
    stream = sched.open(DM, private=True)
    text = "one two three four five six seven eight nine ten eleven twelve thirteen"
    stream.append(text)
    await stream.finish()
    assert conn.messages(DM) == [p.text for p in split_text(text, 50)]
