"""Images go through the scheduler like text: paced, 429-aware, replacing a progress notice."""

from __future__ import annotations

import asyncio

import pytest

from relaybot.core.contracts.connector import Outgoing
from relaybot.core.contracts.errors import CapabilityError, PlatformError, PlatformRateLimitError
from relaybot.core.contracts.models import ChatKey
from relaybot.core.testing.recording_connector import RecordingConnector

DM = ChatKey("fake", "dm1")
PNG = b"\x89PNG\r\n\x1a\n-not-really-an-image"


async def test_the_image_replaces_the_progress_notice(rig):
    conn, sched = rig()
    stream = sched.open(DM, private=True, kind="command")
    stream.append("🎨 Generating…")
    await rig.wait_until(lambda: conn.count("send") == 1)
    notice = conn.ops(DM, "send")[0].message_id
    result = await stream.finish_image(PNG, caption="a lighthouse at dawn")

    assert result.delivered and len(result.message_ids) == 1
    image = conn.ops(DM, "image")[0]
    assert result.message_ids == (image.message_id,)
    assert image.outgoing == Outgoing("command")
    assert conn.messages(DM) == ["a lighthouse at dawn"]  # the notice is gone, not left behind
    assert [op.op for op in rig.requests(conn, DM) + conn.ops(DM, "image") + conn.ops(DM, "delete")] == [
        "send", "image", "delete"
    ]  # fmt: skip
    assert conn.ops(DM, "delete")[0].message_id == notice
    assert conn.ops(DM, "delete")[0].t > image.t  # removed only once the image is there
    rig.assert_spacing(conn, DM)  # every request paced within the chat's budget


async def test_an_image_waits_out_a_429_and_arrives_once(rig):
    conn, sched = rig()
    conn.fail_next("image", PlatformRateLimitError(0.3))
    result = await asyncio.wait_for(sched.send_image(DM, PNG, private=True, caption="cat"), 5)
    assert result.delivered
    assert conn.count("image") == 1 and conn.rate_limited == 1
    assert conn.ops(DM, "image")[0].t >= conn.rejected[0].t + 0.29


async def test_an_undeliverable_image_leaves_the_notice_and_says_so(rig):
    conn, sched = rig(sched_kw={"max_retries": 1})
    stream = sched.open(DM, private=True)
    stream.append("🎨 Generating…")
    await rig.wait_until(lambda: conn.count("send") == 1)
    for _ in range(3):
        conn.fail_next("image", PlatformError("photo rejected"))
    result = await asyncio.wait_for(stream.finish_image(PNG), 5)
    assert not result.delivered and "photo rejected" in (result.error or "")
    assert conn.count("delete") == 0 and conn.messages(DM) == ["🎨 Generating…"]


class _TextOnly(RecordingConnector):
    send_image = RecordingConnector.__mro__[1].send_image  # the base's: no images here


async def test_a_connector_without_images_refuses_before_anything_changes():
    from relaybot.core.streaming import StreamScheduler

    conn = _TextOnly(RecordingConnector().policy)
    sched = StreamScheduler(conn)
    try:
        assert not conn.can_send_images and conn.can_delete
        stream = sched.open(DM, private=True, feedback=False)
        stream.append("🎨 Generating…")
        with pytest.raises(CapabilityError):
            await stream.finish_image(PNG)
        result = await asyncio.wait_for(stream.finish(), 3)  # the caller finishes with text
        assert result.delivered and conn.messages(DM) == ["🎨 Generating…"]
    finally:
        await sched.aclose(timeout=1)
