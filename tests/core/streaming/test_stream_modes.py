"""ReplyStream behaviour a user sees: modes, feedback, splitting, markers, odd platform answers."""

from __future__ import annotations

import asyncio

from relaybot.core.contracts.errors import MessageGoneError, PlatformRateLimitError
from relaybot.core.contracts.models import ChatKey
from relaybot.core.streaming import INTERRUPTED_MARKER, StreamMode, split_text, text_length

DM = ChatKey("fake", "dm1")
GROUP = ChatKey("fake", "g1")  # the rig declares it a group chat
EMOJI = "😀"


async def produce(stream, deltas, pause=0.002):
    for delta in deltas:
        stream.append(delta)
        await asyncio.sleep(pause)


def words(n, prefix="w"):
    return [f"{prefix}{i} " for i in range(n)]


# -- feedback ------------------------------------------------------------------------------


async def test_typing_is_refreshed_until_the_first_text(rig):
    conn, sched = rig(rig.policy(typing_interval=0.05))
    stream = sched.open(DM, private=True)
    await rig.wait_until(lambda: conn.count("typing") >= 1, timeout=1)  # at once
    await rig.wait_until(lambda: conn.count("typing") >= 4)  # refreshed while thinking
    stream.append("Here it comes")
    await rig.wait_until(lambda: conn.count("send") == 1)
    typed = conn.count("typing")
    await asyncio.sleep(0.25)
    assert conn.count("typing") == typed  # stops once text is visible
    await stream.finish()


async def test_typing_waits_out_a_429_pause(rig):
    conn, sched = rig(rig.policy(typing_interval=0.05))
    conn.fail_next("typing", PlatformRateLimitError(0.4))
    stream = sched.open(DM, private=True)
    await rig.wait_until(lambda: conn.rate_limited == 1)
    limited_at = conn.rejected[-1].t
    await rig.wait_until(lambda: conn.count("typing") >= 1)
    assert conn.ops(DM, "typing")[0].t >= limited_at + 0.39
    stream.cancel()


async def test_final_only_platform_sends_complete_messages_and_keeps_typing(rig):
    conn, sched = rig(rig.policy(can_edit=False, max_length=60, typing_interval=0.05))
    stream = sched.open(DM, private=True)
    await produce(stream, words(40), pause=0.004)
    result = await stream.finish()
    ops = rig.requests(conn, DM)
    assert ops and all(op.op == "send" and op.final for op in ops)
    assert conn.messages(DM) == [p.text for p in split_text(result.text, 60)]
    assert len(ops) == len(conn.messages(DM))  # no intermediate frames at all
    sends = [op.t for op in ops]
    assert any(op.t > sends[0] for op in conn.ops(DM, "typing"))  # typing between messages


# -- native drafts -------------------------------------------------------------------------


async def test_draft_mode_placeholder_stable_id_and_real_message(rig):
    conn, sched = rig(rig.policy(native_draft=True))
    stream = sched.open(DM, private=True)
    assert stream.mode is StreamMode.DRAFT and stream.draft_id != 0
    await rig.wait_until(lambda: conn.count("draft") == 1)
    assert conn.ops(DM, "draft")[0].text == ""  # "Thinking…" before any token
    await produce(stream, words(60), pause=0.003)
    result = await stream.finish()

    drafts = conn.ops(DM, "draft")
    assert len(drafts) >= 2
    assert {op.message_id for op in drafts} == {str(stream.draft_id)}
    assert conn.count("edit") == 0
    sends = conn.ops(DM, "send")
    assert len(sends) == 1 and sends[0].final and sends[0].t > drafts[-1].t
    assert conn.messages(DM) == [result.text]

    second = sched.open(DM, private=True)
    assert second.draft_id not in (0, stream.draft_id)  # unique per chat
    second.cancel()


async def test_draft_refusal_falls_back_to_edits_for_good(rig):
    conn, sched = rig(rig.policy(native_draft=True, typing_interval=0.05), drafts_unsupported=True)
    stream = sched.open(DM, private=True)
    await rig.wait_until(lambda: conn.count("typing") >= 1)  # feedback after the refusal
    await produce(stream, words(60), pause=0.003)
    result = await stream.finish()
    assert result.delivered
    assert len([r for r in conn.rejected if r.op == "draft"]) == 1  # never tried again
    assert conn.ops(DM, "send")[0].final is False  # send-then-edit
    assert conn.count("edit") >= 1
    assert conn.messages(DM) == [result.text]


async def test_group_chats_never_use_drafts(rig):
    conn, sched = rig(rig.policy(native_draft=True))
    stream = sched.open(GROUP, private=False)
    assert stream.mode is StreamMode.EDIT
    stream.append("hello group")
    await stream.finish()
    assert conn.count("draft") == 0 and not conn.rejected
    assert conn.messages(GROUP) == ["hello group"]


# -- splitting while streaming -------------------------------------------------------------


async def test_long_reply_is_split_into_messages_at_clean_boundaries(rig):
    conn, sched = rig(rig.policy(max_length=80))
    paragraphs = [
        "The first paragraph has a few words in it. It ends here.",
        "A second paragraph follows with more words to push the length.",
        "Third paragraph: still going, and going, and going on.",
        "Fourth and last.",
    ]
    text = "\n\n".join(paragraphs)
    await produce(stream := sched.open(DM, private=True), [c for c in text], pause=0.0005)
    result = await stream.finish()
    assert result.text == text
    assert conn.messages(DM) == [p.text for p in split_text(text, 80)]
    assert conn.messages(DM)[0] == paragraphs[0]
    assert [conn.is_final(m) for m in result.message_ids] == [True] * len(result.message_ids)
    assert conn.rate_limited == 0 and not conn.rejected


async def test_split_never_inside_a_word_and_within_limit_utf16(rig):
    conn, sched = rig(rig.policy(max_length=50, length_unit="utf16"))
    deltas = [f"{EMOJI}word{i} " if i % 3 else f"plain{i}. " for i in range(60)]
    stream = sched.open(DM, private=True)
    await produce(stream, deltas, pause=0.0005)
    result = await stream.finish()
    messages = conn.messages(DM)
    assert len(messages) > 3
    assert all(text_length(m, "utf16") <= 50 for m in messages)
    tokens = {d.strip() for d in deltas}
    assert all(w in tokens for m in messages for w in m.split())  # every word whole
    assert " ".join(messages).split() == result.text.split()
    assert not conn.rejected  # the fake counts UTF-16 too: nothing was too long


async def test_code_fence_is_closed_and_reopened_across_messages(rig):
    conn, sched = rig(rig.policy(max_length=70))
    code = "\n".join(f"x = compute({i})" for i in range(15))
    text = f"Code:\n\n```python\n{code}\n```\n\nThat is all."
    stream = sched.open(DM, private=True)
    await produce(stream, [text[i : i + 5] for i in range(0, len(text), 5)], pause=0.001)
    await stream.finish()
    messages = conn.messages(DM)
    assert len(messages) >= 3
    assert messages[0].endswith("```") and messages[1].startswith("```python\n")
    for m in messages:
        assert len(m) <= 70
        assert sum(1 for line in m.split("\n") if line.startswith("```")) % 2 == 0


# -- endings -------------------------------------------------------------------------------


async def test_interrupted_reply_gets_a_visible_marker_and_note(rig):
    conn, sched = rig()
    stream = sched.open(DM, private=True)
    stream.append("Partial answer")
    result = await stream.finish(interrupted=True, note="Stopped by /stop.")
    assert result.interrupted and result.text == "Partial answer\n\nStopped by /stop."
    # the marker is data: the final frame says "interrupted" and carries the text without it;
    # the platform (here: rendered like Telegram) shows it as the last paragraph
    final = rig.requests(conn, DM)[-1]
    assert final.final and final.outgoing.interrupted
    assert final.text == "Partial answer\n\nStopped by /stop."
    assert conn.messages(DM) == [f"Partial answer\n\nStopped by /stop.\n\n{INTERRUPTED_MARKER}"]


async def test_interrupted_inside_a_code_block_closes_it_first(rig):
    conn, sched = rig()
    stream = sched.open(DM, private=True)
    stream.append("```python\nprint(1)\n")
    await stream.finish(interrupted=True)
    assert conn.messages(DM) == [f"```python\nprint(1)\n```\n\n{INTERRUPTED_MARKER}"]


async def test_empty_reply_still_shows_a_message(rig):
    conn, sched = rig()
    empty = sched.open(DM, private=True)
    result = await empty.finish()
    assert result.delivered and conn.messages(DM) == ["(empty reply)"]

    refused = sched.open(GROUP, private=False)
    refused.append("   ")
    await refused.finish(note="The model declined to answer.")
    assert conn.messages(GROUP) == ["The model declined to answer."]


async def test_deleted_message_continues_in_a_new_one(rig, caplog):
    conn, sched = rig()
    stream = sched.open(DM, private=True)
    stream.append("Hello")
    await rig.wait_until(lambda: conn.count("send") == 1)
    conn.delete(conn.ops(DM, "send")[0].message_id)
    caplog.set_level("INFO", logger="relaybot.core.streaming")
    stream.append(" again")
    result = await stream.finish()
    assert result.delivered
    assert conn.messages(DM) == ["Hello again"]
    assert result.message_ids == (conn.ops(DM, "send")[-1].message_id,)
    assert any("gone" in r.message for r in caplog.records if r.levelname == "INFO")


async def test_reply_to_goes_on_the_first_message_only(rig):
    conn, sched = rig(rig.policy(max_length=40))
    stream = sched.open(DM, private=True, reply_to="42")
    stream.append("one two three four five six seven eight nine ten eleven twelve")
    await stream.finish()
    sends = conn.ops(DM, "send")
    assert len(sends) >= 2
    assert sends[0].reply_to == "42" and all(op.reply_to is None for op in sends[1:])


async def test_chain_parts_makes_each_message_reply_to_the_previous_one(rig):
    conn, sched = rig(rig.policy(max_length=40, chain_parts=True))
    stream = sched.open(DM, private=True, reply_to="42")
    stream.append("one two three four five six seven eight nine ten eleven twelve thirteen")
    result = await stream.finish()
    sends = conn.ops(DM, "send")
    assert len(result.message_ids) >= 2
    assert sends[0].reply_to == "42"
    # every later message answers the one before it (Discord reads them as one chain)
    firsts = [next(op for op in sends if op.message_id == mid) for mid in result.message_ids]
    assert [op.reply_to for op in firsts] == ["42", *result.message_ids[:-1]]


async def test_reply_to_a_deleted_message_is_sent_without_it(rig):
    conn, sched = rig()
    conn.fail_next("send", MessageGoneError("message to be replied not found"))
    stream = sched.open(DM, private=True, reply_to="gone")
    stream.append("still answered")
    result = await stream.finish()
    assert result.delivered and conn.messages(DM) == ["still answered"]


async def test_context_manager_finishes_and_marks_errors_interrupted(rig):
    conn, sched = rig()
    async with sched.open(DM, private=True) as stream:
        stream.append("fine")
    assert conn.messages(DM) == ["fine"]

    try:
        async with sched.open(GROUP, private=False) as broken:
            broken.append("half")
            raise ValueError("provider died")
    except ValueError:
        pass
    await rig.wait_until(lambda: broken.done)
    assert conn.messages(GROUP) == [f"half\n\n{INTERRUPTED_MARKER}"]


async def test_no_feedback_for_complete_text(rig):
    conn, sched = rig(rig.policy(native_draft=True, typing_interval=0.05))
    stream = sched.open(DM, private=True, feedback=False)
    stream.append("A complete answer.")
    await stream.finish()
    assert [op.op for op in conn.timeline] == ["send"]
    assert conn.messages(DM) == ["A complete answer."]
