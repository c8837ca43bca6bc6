"""The RecordingConnector enforces platform rules, so tests relying on it can fail."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from relaybot.core.contracts.connector import MethodBudget, Outgoing, StreamPolicy
from relaybot.core.contracts.errors import (
    MessageGoneError,
    MessageNotModifiedError,
    PlatformError,
    PlatformRateLimitError,
    StreamEndedError,
)
from relaybot.core.contracts.models import ChatKey, IncomingMessage, User
from relaybot.core.testing.recording_connector import RecordingConnector
from relaybot.testing import RecordingHost

DM = ChatKey("fake", "dm1")
OTHER = ChatKey("fake", "dm2")


def make(**kw):
    pol = kw.pop("policy", StreamPolicy(max_length=10, length_unit="utf16", private_interval=0.2))
    return RecordingConnector(pol, **kw)


async def test_too_close_requests_get_an_escalating_429():
    conn = make(retry_after=0.1)
    mid = await conn.send_text(DM, "one", final=False)
    with pytest.raises(PlatformRateLimitError) as first:
        await conn.edit_text(DM, mid, "two", final=False)
    assert first.value.retry_after == pytest.approx(0.1)
    await conn.send_text(OTHER, "elsewhere")  # other chats are unaffected
    with pytest.raises(PlatformRateLimitError):
        await conn.send_typing(DM)  # blocked for retry_after, typing included
    await asyncio.sleep(0.25)
    await conn.edit_text(DM, mid, "two", final=True)
    with pytest.raises(PlatformRateLimitError) as second:
        await conn.edit_text(DM, mid, "three", final=True)
    assert second.value.retry_after == pytest.approx(0.2)  # escalated
    assert conn.rate_limited == 3
    assert conn.messages(DM) == ["two"] and conn.is_final(mid)


async def test_not_modified_too_long_empty_and_gone():
    conn = make(enforce=False)
    mid = await conn.send_text(DM, "same", final=True)
    with pytest.raises(MessageNotModifiedError):
        await conn.edit_text(DM, mid, "same", final=True)
    with pytest.raises(PlatformError):
        await conn.send_text(DM, "😀" * 6)  # 12 UTF-16 units > 10
    await conn.send_text(DM, "😀" * 5)  # exactly 10
    with pytest.raises(PlatformError):
        await conn.send_text(DM, "  ")
    conn.delete(mid)
    with pytest.raises(MessageGoneError):
        await conn.edit_text(DM, mid, "new", final=True)
    assert conn.messages(DM) == ["😀" * 5]
    assert len(conn.rejected) == 4


async def test_drafts_and_scripted_failures():
    pol = StreamPolicy(native_draft=True, private_interval=0)
    conn = RecordingConnector(pol, groups=["g"])
    await conn.send_draft(DM, 7, "")
    await conn.send_draft(DM, 7, "partial")
    assert conn.draft(DM, 7) == "partial"
    with pytest.raises(PlatformError):
        await conn.send_draft(ChatKey("fake", "g"), 7, "x")  # groups have no drafts
    with pytest.raises(PlatformError):
        await conn.send_draft(DM, 0, "x")
    conn.fail_next("send", PlatformError("scripted"))
    with pytest.raises(PlatformError, match="scripted"):
        await conn.send_text(DM, "hello")
    assert await conn.send_text(DM, "hello")
    assert conn.count("draft") == 2 and conn.count("send") == 1
    with pytest.raises(ValueError):
        conn.fail_next("nope", PlatformError())


async def test_drafts_unsupported_flag():
    conn = RecordingConnector(StreamPolicy(native_draft=True), drafts_unsupported=True)
    with pytest.raises(PlatformError):
        await conn.send_draft(DM, 1, "")


async def test_inject_delivers_to_the_host():
    conn = RecordingConnector()
    host = RecordingHost("fake")

    with pytest.raises(RuntimeError):
        await conn.inject(IncomingMessage(DM, User("u"), "early"))
    await conn.start(host)
    handover = await conn.inject(IncomingMessage(DM, User("u"), "hi"))
    assert handover.accepted
    assert [m.text for m in host.delivered] == ["hi"] and conn.name == "fake"


async def test_latency_is_applied():
    conn = make(latency=0.05, enforce=False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await conn.send_text(DM, "slow")
    assert loop.time() - start >= 0.045


# -- an append platform's rules (Slack-like) ---------------------------------------------------

APPEND = StreamPolicy(max_length=100, private_interval=0, native_append=True, append_max=10)


async def test_append_streams_enforce_call_size_state_and_lifetime():
    now = [0.0]
    conn = RecordingConnector(APPEND, stream_ttl=300.0, clock=lambda: now[0])
    mid = await conn.start_stream(DM, "Hello")
    with pytest.raises(PlatformError, match="msg_too_long"):
        await conn.append_stream(DM, mid, " this is more than ten")
    with pytest.raises(PlatformError, match="no_text"):
        await conn.append_stream(DM, mid, "")
    with pytest.raises(PlatformError, match="streaming_state_conflict"):
        await conn.edit_text(DM, mid, "Hello there", final=True)  # no chat.update while streaming
    await conn.append_stream(DM, mid, " there")
    assert conn.messages(DM) == ["Hello there"] and conn.is_streaming(mid)
    now[0] = 301.0  # Slack closes streams after about five minutes
    with pytest.raises(StreamEndedError, match="message_not_in_streaming_state") as ended:
        await conn.append_stream(DM, mid, "!")
    assert ended.value.editable
    await conn.edit_text(DM, mid, "Hello there!", final=True)  # editable once it ended
    assert conn.messages(DM) == ["Hello there!"] and conn.is_final(mid)

    other = await conn.start_stream(DM, "")
    conn.stop_by_user(other)
    with pytest.raises(StreamEndedError, match="stopped_by_user"):
        await conn.stop_stream(DM, other, "bye")
    with pytest.raises(PlatformError):
        await RecordingConnector(StreamPolicy()).start_stream(DM, "no streams on this platform")


async def test_stop_renders_the_interrupted_marker_and_descriptors_are_recorded():
    conn = RecordingConnector(APPEND)
    out = Outgoing("reply", conversation_id=3, reply_id=9, interrupted=True)
    mid = await conn.start_stream(DM, "Partial", outgoing=replace(out, interrupted=False))
    await conn.stop_stream(DM, mid, " text", outgoing=out)
    assert conn.messages(DM) == ["Partial text\n\n⏹ interrupted"]
    assert conn.outgoing_of(mid) == out and conn.ops(DM, "stop")[0].outgoing == out
    assert not conn.is_streaming(mid) and conn.is_final(mid)


async def test_method_budgets_and_header_buckets_answer_429():
    now = [0.0]
    budget = MethodBudget(frozenset({"start"}), limit=2, per=60.0)
    conn = RecordingConnector(
        replace(APPEND, method_budgets=(budget,)), buckets={"send": (2, 5.0)}, clock=lambda: now[0]
    )
    seen = []
    conn.bucket_observer = lambda chat, method, remaining, reset: seen.append((method, remaining, reset))
    await conn.start_stream(DM, "a")
    await conn.start_stream(OTHER, "b")  # the budget is the workspace's, not the chat's
    with pytest.raises(PlatformRateLimitError) as limited:
        await conn.start_stream(DM, "c")
    assert limited.value.retry_after == pytest.approx(60.0)
    now[0] = 60.5
    await conn.start_stream(DM, "c")  # the window moved on

    await conn.send_text(DM, "one")
    now[0] = 61.0
    await conn.send_text(DM, "two")
    assert seen == [("send", 1, 5.0), ("send", 0, pytest.approx(4.5))]  # X-RateLimit-* as reported
    with pytest.raises(PlatformRateLimitError) as bucket:
        await conn.send_text(DM, "three")
    assert bucket.value.retry_after == pytest.approx(4.5)
    assert conn.rate_limited == 2


async def test_delete_removes_a_message():
    conn = make(enforce=False)
    mid = await conn.send_text(DM, "🎨 …")
    await conn.delete_message(DM, mid)
    assert conn.messages(DM) == []
    with pytest.raises(MessageGoneError):
        await conn.delete_message(DM, mid)
