"""The append streaming style (Slack's startStream/appendStream/stopStream) and the budgets
a Slack- or Discord-like platform imposes, against the RecordingConnector's rules."""

from __future__ import annotations

import asyncio

from relaybot.core.contracts.connector import MethodBudget, StreamPolicy
from relaybot.core.contracts.errors import PlatformRateLimitError, StreamEndedError
from relaybot.core.contracts.models import ChatKey
from relaybot.core.streaming import StreamMode, split_text
from relaybot.core.testing.recording_connector import RecordingConnector

DM = ChatKey("fake", "dm1")
STREAM_OPS = ("start", "append", "stop")


def append_policy(rig, **overrides):
    return rig.policy(**{"native_append": True, "append_max": 40, **overrides})


async def produce(stream, deltas, pause=0.002):
    for delta in deltas:
        stream.append(delta)
        await asyncio.sleep(pause)


def words(n, prefix="w"):
    return [f"{prefix}{i} " for i in range(n)]


def stream_ops(conn, chat):
    return [op for op in conn.ops(chat) if op.op in STREAM_OPS]


async def test_the_platform_receives_only_what_was_added(rig):
    conn, sched = rig(append_policy(rig))
    stream = sched.open(DM, private=True)
    assert stream.mode is StreamMode.APPEND
    deltas = words(80)
    await produce(stream, deltas)
    result = await stream.finish()

    expected = "".join(deltas).rstrip()
    assert result.delivered and conn.messages(DM) == [expected]
    ops = stream_ops(conn, DM)
    assert ops[0].op == "start" and ops[-1].op == "stop" and ops[-1].final
    assert {op.op for op in ops[1:-1]} == {"append"}
    assert "".join(op.text for op in ops) == expected  # deltas, never the text again
    assert all(len(op.text) <= 40 for op in ops)  # within the per-call size
    assert len(ops) < len(deltas) / 2  # coalesced: one call per frame, not per token
    assert conn.count("send") == 0 and conn.count("edit") == 0
    assert conn.rate_limited == 0 and not conn.rejected
    rig.assert_spacing(conn, DM)


async def test_a_backlog_longer_than_one_call_goes_in_several(rig):
    conn, sched = rig(append_policy(rig, private_interval=0.2, group_interval=0.2))
    stream = sched.open(DM, private=True)
    stream.append("Start. ")
    await rig.wait_until(lambda: conn.count("start") == 1)
    text = "".join(words(40, "x"))  # ~160 characters while the chat waits for its turn
    stream.append(text)
    result = await stream.finish()
    assert conn.messages(DM) == [result.text] == [("Start. " + text).rstrip()]
    assert all(0 < len(op.text) <= 40 for op in stream_ops(conn, DM)[1:])
    assert not conn.rejected


async def test_a_split_reply_streams_each_message_and_matches_split_text(rig):
    conn, sched = rig(append_policy(rig, max_length=80, append_max=500))
    stream = sched.open(DM, private=True)
    # slow enough that the stream shows text past the later cut before the cut is known
    await produce(stream, words(70, "long"), pause=0.004)
    result = await stream.finish()
    parts = [p.text for p in split_text(result.text, 80)]
    assert conn.messages(DM) == parts
    assert all(conn.is_final(m) for m in result.message_ids) and len(result.message_ids) == len(parts)
    assert not any(conn.is_streaming(m) for m in result.message_ids)
    assert not conn.rejected


async def test_a_stream_that_expires_is_finished_by_editing_the_same_message(rig):
    conn, sched = rig(append_policy(rig), stream_ttl=0.15)
    stream = sched.open(DM, private=True)
    await produce(stream, words(150), pause=0.003)  # outlives the stream
    result = await stream.finish()

    expected = "".join(words(150)).rstrip()
    assert result.delivered and result.message_ids == (conn.ops(DM, "start")[0].message_id,)
    assert conn.messages(DM) == [expected]
    ended = [r for r in conn.rejected if isinstance(r.error, StreamEndedError)]
    assert len(ended) == 1  # learned once; from then on the reply goes by edits
    assert sched.stats.streams_ended == 1
    edits = conn.ops(DM, "edit")
    assert edits and all(op.message_id == result.message_ids[0] for op in edits)
    assert [op.final for op in rig.requests(conn, DM) + stream_ops(conn, DM)].count(True) == 1  # once
    assert edits[-1].final and edits[-1].text == expected


async def test_a_user_stop_finishes_the_reply_by_replace(rig):
    conn, sched = rig(append_policy(rig))
    stream = sched.open(DM, private=True)
    stream.append("first words ")
    await rig.wait_until(lambda: conn.count("start") == 1)
    conn.stop_by_user(conn.ops(DM, "start")[0].message_id)
    await produce(stream, words(30))
    result = await stream.finish(interrupted=True)
    assert result.delivered and result.interrupted
    assert conn.messages(DM) == [f"{result.text}\n\n⏹ interrupted"]
    final = conn.ops(DM, "edit")[-1]
    assert final.final and final.outgoing.interrupted and final.text == result.text


async def test_a_stream_that_cannot_be_edited_continues_in_a_new_message(rig):
    conn, sched = rig(append_policy(rig))
    conn.fail_next("append", StreamEndedError("gone for good", editable=False))
    stream = sched.open(DM, private=True)
    await produce(stream, words(60))
    result = await stream.finish()
    assert result.delivered
    assert conn.messages(DM)[-1] == result.text  # the whole reply, shown once, in the new one
    assert len(result.message_ids) == 1 and result.message_ids[0] != conn.ops(DM, "start")[0].message_id


async def test_when_stream_starts_run_short_the_rest_start_by_post_and_update(rig):
    starts = MethodBudget(frozenset({"start"}), limit=2, per=60.0)
    conn, sched = rig(append_policy(rig, method_budgets=(starts,)))
    chats = [ChatKey("fake", f"c{i}") for i in range(5)]
    streams = [sched.open(chat, private=True) for chat in chats]
    await asyncio.gather(*(produce(s, words(30, f"s{i}")) for i, s in enumerate(streams)))
    results = await asyncio.gather(*(s.finish() for s in streams))

    assert conn.count("start") == 2 and sched.stats.starts_short == 3
    assert conn.rate_limited == 0 and not conn.rejected  # nobody waited a minute, no 429
    for chat, result in zip(chats, results, strict=True):
        assert result.delivered and conn.messages(chat) == [result.text]
    by_edit = [chat for chat in chats if conn.count("send", chat)]
    assert len(by_edit) == 3 and all(conn.count("edit", chat) for chat in by_edit)


async def test_per_method_budgets_shared_by_a_workspace_are_kept(rig):
    # Slack-like: appends and edits each have their own budget across all chats of the app
    budgets = (
        MethodBudget(frozenset({"append"}), limit=6, per=0.5),
        MethodBudget(frozenset({"start", "stop"}), limit=20, per=60.0),
    )
    conn, sched = rig(append_policy(rig, private_interval=0.01, group_interval=0.01, method_budgets=budgets))
    chats = [ChatKey("fake", f"c{i}") for i in range(4)]
    streams = [sched.open(chat, private=True) for chat in chats]
    await asyncio.gather(*(produce(s, words(60, f"s{i}"), pause=0.003) for i, s in enumerate(streams)))
    results = await asyncio.gather(*(s.finish() for s in streams))
    assert all(r.delivered for r in results)
    assert conn.rate_limited == 0 and not conn.rejected  # the fake enforces the same windows
    appends = sorted(op.t for op in conn.timeline if op.op == "append")
    assert len(appends) >= 7  # the budget had to bite
    assert all(later - earlier >= 0.5 - 0.01 for earlier, later in zip(appends, appends[6:], strict=False))


class _TwoWorkspaces(RecordingConnector):
    def budget_group(self, chat: ChatKey) -> str:
        return chat.chat.split(":")[0]  # "team:channel"


async def test_connector_scoped_budgets_are_per_budget_group():
    policy = StreamPolicy(
        private_interval=0.0, group_interval=0.0, global_rate=0, typing_interval=None,
        method_budgets=(MethodBudget(frozenset({"send"}), limit=1, per=60.0),),
    )  # fmt: skip
    conn = _TwoWorkspaces(policy)
    from relaybot.core.streaming import StreamScheduler

    sched = StreamScheduler(conn)
    try:
        a = sched.open(ChatKey("fake", "T1:general"), private=True, feedback=False)
        b = sched.open(ChatKey("fake", "T2:general"), private=True, feedback=False)
        c = sched.open(ChatKey("fake", "T1:random"), private=True, feedback=False)
        for stream in (a, b, c):
            stream.append("hi")
        await asyncio.wait_for(asyncio.gather(a.finish(), b.finish()), 3)
        await asyncio.sleep(0.1)
        assert not c.done  # T1's one send a minute is spent; T2 had its own
        assert conn.rate_limited == 0
    finally:
        await sched.aclose(timeout=0)


async def test_buckets_reported_from_headers_are_honoured(rig):
    # Discord-like: the platform tells the bucket in every answer instead of publishing limits
    conn, sched = rig(
        rig.policy(private_interval=0.005, group_interval=0.005), buckets={"edit": (3, 0.3), "send": (3, 0.3)}
    )
    stream = sched.open(DM, private=True)
    await produce(stream, words(120), pause=0.003)
    result = await stream.finish()
    assert result.delivered and conn.messages(DM) == [result.text]
    assert conn.rate_limited == 0 and not conn.rejected
    edits = [op.t for op in conn.ops(DM, "edit")]
    assert len(edits) >= 4  # the bucket emptied at least once and the scheduler waited it out
    assert all(later - earlier >= 0.3 - 0.01 for earlier, later in zip(edits, edits[3:], strict=False))


async def test_a_429_on_an_append_is_waited_out_and_nothing_is_lost(rig):
    conn, sched = rig(append_policy(rig))
    conn.fail_next("append", PlatformRateLimitError(0.2))
    stream = sched.open(DM, private=True)
    await produce(stream, words(60))
    result = await stream.finish()
    assert conn.rate_limited == 1 and result.delivered
    assert conn.messages(DM) == [result.text]
    assert "".join(op.text for op in stream_ops(conn, DM)) == result.text


async def test_a_cut_behind_what_was_streamed_is_fixed_by_an_edit(rig):
    conn, sched = rig(append_policy(rig, max_length=80, append_max=500))
    stream = sched.open(DM, private=True)
    first_line = "Line one is here and long enough to pass half.\n"
    stream.append(first_line + "tail words tail words")
    await rig.wait_until(lambda: conn.count("start") == 1)
    # the platform holds 68 characters; the limit now forces a cut at the line break (47)
    stream.append(" and yet more words to overflow")
    result = await stream.finish()
    first, second = result.message_ids
    assert conn.text_of(first) == first_line.rstrip()  # the streamed tail was taken back by an edit
    assert [op.op for op in conn.ops(DM) if op.message_id == first] == ["start", "stop", "edit"]
    assert conn.text_of(second) == "tail words tail words and yet more words to overflow"
    assert conn.messages(DM) == [p.text for p in split_text(result.text, 80)]
    assert not conn.rejected


async def test_replaced_text_closes_the_stream_before_editing(rig):
    conn, sched = rig(append_policy(rig))
    stream = sched.open(DM, private=True, kind="command")
    stream.append("🎨 Generating…")
    await rig.wait_until(lambda: conn.count("start") == 1)
    stream.replace_text("⚠️ The image service is unavailable right now.")
    result = await stream.finish()
    assert result.delivered and not conn.rejected  # never an edit of a message still streaming
    [message] = result.message_ids
    assert [op.op for op in conn.ops(DM) if op.message_id == message] == ["start", "stop", "edit"]
    assert conn.messages(DM) == ["⚠️ The image service is unavailable right now."]
