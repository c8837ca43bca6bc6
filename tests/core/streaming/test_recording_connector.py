"""The RecordingConnector enforces platform rules, so tests relying on it can fail."""

from __future__ import annotations

import asyncio

import pytest

from relaybot.core.connector import StreamPolicy
from relaybot.core.errors import (
    MessageGoneError,
    MessageNotModifiedError,
    PlatformError,
    PlatformRateLimitError,
)
from relaybot.core.models import ChatKey, IncomingMessage, User
from relaybot.core.testing.recording_connector import RecordingConnector

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


async def test_inject_drives_the_handler():
    conn = RecordingConnector()
    seen: list[IncomingMessage] = []

    async def handler(message: IncomingMessage) -> None:
        seen.append(message)

    with pytest.raises(RuntimeError):
        await conn.inject(IncomingMessage(DM, User("u"), "early"))
    await conn.start(handler)
    await conn.inject(IncomingMessage(DM, User("u"), "hi"))
    assert [m.text for m in seen] == ["hi"] and conn.name == "fake"


async def test_latency_is_applied():
    conn = make(latency=0.05, enforce=False)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await conn.send_text(DM, "slow")
    assert loop.time() - start >= 0.045
