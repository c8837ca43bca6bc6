"""The Slack connector's outgoing primitives against the fake Slack (slack_sdk over HTTP).

No relaybot core here: each primitive is called as the streaming scheduler calls it, and the
fake says what Slack would have shown or refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from relaybot import (
    ChatKey,
    ConfigError,
    MessageGoneError,
    Outgoing,
    PlatformError,
    PlatformRateLimitError,
    StreamEndedError,
)
from relaybot.connectors.slack.config import SlackConfig
from relaybot.connectors.slack.connector import SlackConnector
from relaybot.core.testing.fake_slack import FakeSlackServer

from .conftest import ALICE, BOB, async_fixture

REPLY = Outgoing("reply")


class Clock:
    """A manual clock for the fake's rate windows and stream lifetimes."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@async_fixture
async def clock_slack() -> AsyncIterator[tuple[FakeSlackServer, Clock]]:
    clock = Clock()
    async with FakeSlackServer(clock=clock, stream_lifetime=300.0) as server:
        yield server, clock


def connector_for(slack: FakeSlackServer, **settings: Any) -> SlackConnector:
    config = SlackConfig(bot_token=slack.bot_token, app_token=slack.app_token, base_url=slack.api_url,
                         **settings)  # fmt: skip
    return SlackConnector("slack", config)


@async_fixture
async def conn(slack: FakeSlackServer) -> AsyncIterator[SlackConnector]:
    connector = connector_for(slack)
    await connector.start(SimpleNamespace(config=None))  # type: ignore[arg-type]
    yield connector
    await connector.aclose()


def dm_thread(slack: FakeSlackServer, conn: SlackConnector, user: str = ALICE) -> ChatKey:
    """A DM thread started by ``user``'s message (the fake stores it; nothing is delivered)."""
    channel = slack.dm_channel(user)
    message = slack._user_message(channel, user, "hi")
    return conn.chat_for(slack.workspace.team_id, channel, message.ts)


async def test_a_stream_in_a_dm_shows_start_appends_and_stop_in_order(
    slack: FakeSlackServer, conn: SlackConnector
) -> None:
    chat = dm_thread(slack, conn)
    ts = await conn.start_stream(chat, "Hello", outgoing=REPLY)
    await conn.append_stream(chat, ts, ", wor", outgoing=REPLY)
    await conn.stop_stream(chat, ts, "ld!", outgoing=REPLY)
    _team, channel = chat.chat.split(":")
    message = slack.message(channel, ts)
    assert message is not None and message.thread_ts == chat.thread
    assert message.visible == "Hello, world!" and message.stream is not None
    assert message.stream.state == "stopped" and message.stream.appends == ["Hello", ", wor", "ld!"]


async def test_a_channel_stream_names_the_asker_and_needs_one(
    slack: FakeSlackServer, conn: SlackConnector
) -> None:
    parent = slack._user_message(slack.general, BOB, "<@U0FAKEBOT> hi")
    chat = conn.chat_for(slack.workspace.team_id, slack.general, parent.ts)
    with pytest.raises(PlatformError, match="recipient"):
        await conn.start_stream(chat, "x", outgoing=REPLY)  # nobody asked here: no recipient
    conn._askers.remember(chat, BOB)
    ts = await conn.start_stream(chat, "", outgoing=REPLY)
    message = slack.message(slack.general, ts)
    assert message is not None and message.stream is not None
    assert (message.stream.recipient_user_id, message.stream.recipient_team_id) == (
        BOB,
        slack.workspace.team_id,
    )


async def test_an_expired_or_user_stopped_stream_raises_stream_ended(
    clock_slack: tuple[FakeSlackServer, Clock],
) -> None:
    slack, clock = clock_slack
    conn = connector_for(slack)
    await conn.start(SimpleNamespace(config=None))  # type: ignore[arg-type]
    try:
        chat = dm_thread(slack, conn)
        ts = await conn.start_stream(chat, "a", outgoing=REPLY)
        clock.now += 301  # Slack closed it server-side
        with pytest.raises(StreamEndedError) as ended:
            await conn.append_stream(chat, ts, "b", outgoing=REPLY)
        assert ended.value.editable
        await conn.edit_text(chat, ts, "a b", final=True, outgoing=REPLY)  # the advised fallback
        _team, channel = chat.chat.split(":")
        assert slack.message(channel, ts).visible == "a b"  # type: ignore[union-attr]
        ts2 = await conn.start_stream(chat, "c", outgoing=REPLY)
        slack.stop_stream_by_user(channel, ts2)
        with pytest.raises(StreamEndedError):
            await conn.append_stream(chat, ts2, "d", outgoing=REPLY)
    finally:
        await conn.aclose()


async def test_streams_unavailable_is_a_platform_error_not_a_stream_end(
    slack: FakeSlackServer, conn: SlackConnector
) -> None:
    slack.set_streaming_available(False)
    chat = dm_thread(slack, conn)
    with pytest.raises(PlatformError) as refused:
        await conn.start_stream(chat, "x", outgoing=REPLY)
    assert not isinstance(refused.value, StreamEndedError) and "method_not_supported" in str(refused.value)


async def test_a_429_is_raised_with_retry_after_for_the_whole_workspace(
    slack: FakeSlackServer, conn: SlackConnector
) -> None:
    chat = dm_thread(slack, conn)
    ts = await conn.start_stream(chat, "x", outgoing=REPLY)
    slack.fail_next("chat.appendStream", "ratelimited", retry_after=7)
    with pytest.raises(PlatformRateLimitError) as limited:
        await conn.append_stream(chat, ts, "y", outgoing=REPLY)
    assert limited.value.retry_after == 7.0 and limited.value.scope == "global"
    assert len(slack.calls("chat.appendStream")) == 1  # slack_sdk did not retry it


async def test_updating_a_message_still_streaming_stops_its_stream_first(
    slack: FakeSlackServer, conn: SlackConnector
) -> None:
    chat = dm_thread(slack, conn)
    ts = await conn.start_stream(chat, "partial", outgoing=REPLY)
    await conn.edit_text(chat, ts, "**whole** text", final=True, outgoing=REPLY)
    _team, channel = chat.chat.split(":")
    message = slack.message(channel, ts)
    assert message is not None and message.visible == "**whole** text"
    assert [c.error for c in slack.calls("chat.update")] == ["streaming_state_conflict", None]


async def test_final_posts_are_markdown_blocks_with_a_mrkdwn_fallback_and_frames_are_mrkdwn(
    slack: FakeSlackServer, conn: SlackConnector
) -> None:
    chat = dm_thread(slack, conn)
    _team, channel = chat.chat.split(":")
    ts = await conn.send_text(chat, "**bold** <b>", final=False, outgoing=REPLY)
    frame = slack.message(channel, ts)
    assert frame is not None and frame.text == "*bold* &lt;b&gt;" and frame.blocks is None
    await conn.edit_text(chat, ts, "**bold** <b>", final=True, outgoing=Outgoing("reply", interrupted=True))
    assert frame.blocks == [{"type": "markdown", "text": "**bold** <b>\n\n⏹ interrupted"}]
    assert frame.text.startswith("*bold* &lt;b&gt;") and frame.thread_ts == chat.thread


async def test_gone_channels_and_messages(slack: FakeSlackServer, conn: SlackConnector) -> None:
    chat = dm_thread(slack, conn)
    ts = await conn.send_text(chat, "bye", outgoing=REPLY)
    await conn.delete_message(chat, ts)
    with pytest.raises(MessageGoneError):
        await conn.delete_message(chat, ts)
    with pytest.raises(MessageGoneError):
        await conn.edit_text(chat, ts, "again", final=True)
    other = slack.add_channel("old")
    parent = slack._user_message(other.id, ALICE, "hi")
    slack.archive(other.id)
    with pytest.raises(MessageGoneError, match="is_archived"):
        await conn.send_text(conn.chat_for(slack.workspace.team_id, other.id, parent.ts), "x")


async def test_status_shows_loading_messages_and_respects_its_own_retry_after(
    slack: FakeSlackServer, conn: SlackConnector
) -> None:
    chat = dm_thread(slack, conn)
    await conn.send_typing(chat)
    [status] = slack.assistant_calls("setStatus")
    assert status["thread_ts"] == chat.thread and status["status"] == "is thinking…"
    assert status["loading_messages"] == list(conn.config.loading_messages)
    slack.fail_next("assistant.threads.setStatus", "ratelimited", retry_after=30)
    await conn.send_typing(chat)  # 429: kept quietly
    await conn.send_typing(chat)  # inside the window: not sent at all
    assert len(slack.calls("assistant.threads.setStatus")) == 2 and slack.calls_inside_retry_after == 0


async def test_images_go_up_with_files_v2_into_the_thread(
    slack: FakeSlackServer, conn: SlackConnector
) -> None:
    chat = dm_thread(slack, conn)
    file_id = await conn.send_image(chat, b"\x89PNG\r\n\x1a\nfake", caption="a **cat**", outgoing=REPLY)
    [uploaded] = slack.uploaded_files()
    assert uploaded.id == file_id and uploaded.thread_ts == chat.thread
    assert [c.method for c in slack.timeline if c.method.startswith("files.")] == [
        "files.getUploadURLExternal", "files.completeUploadExternal"]  # fmt: skip


async def test_a_refused_bot_token_is_a_config_error_naming_the_key(slack: FakeSlackServer) -> None:
    config = SlackConfig(bot_token="xoxb-wrong-token", app_token=slack.app_token, base_url=slack.api_url)
    conn = SlackConnector("work", config)
    with pytest.raises(ConfigError) as refused:
        await conn.start(SimpleNamespace(config=None))  # type: ignore[arg-type]
    assert "connectors.work.bot_token" in str(refused.value) and "invalid_auth" in str(refused.value)
    assert "xoxb-wrong-token" not in str(refused.value)
    await conn.aclose()


async def test_a_refused_app_token_is_a_config_error_naming_the_key(slack: FakeSlackServer) -> None:
    config = SlackConfig(bot_token=slack.bot_token, app_token="xapp-1-wrong", base_url=slack.api_url)
    conn = SlackConnector("slack", config)
    with pytest.raises(ConfigError, match=r"connectors\.slack\.app_token"):
        await conn.start(SimpleNamespace(config=None))  # type: ignore[arg-type]
    await conn.aclose()


def test_config_refuses_mixed_up_tokens() -> None:
    with pytest.raises(ValueError, match="app_token"):
        SlackConfig(bot_token="xapp-1-abc", app_token="")
    with pytest.raises(ValueError, match="signing_secret"):
        SlackConfig(bot_token="xoxb-1")
    with pytest.raises(ValueError, match="xapp"):
        SlackConfig(bot_token="xoxb-1", app_token="xoxb-2")
    assert SlackConfig(bot_token="xoxb-1", signing_secret="s").mode == "http"


def test_budgets_are_slacks_tiers_per_workspace(slack: FakeSlackServer) -> None:
    conn = connector_for(slack)
    policy = conn.policy
    assert policy.native_append and policy.append_max == 12_000
    limits = {tuple(sorted(b.methods)): (b.limit, b.per, b.scope) for b in policy.method_budgets}
    assert limits == {
        ("start",): (19, 60.0, "connector"),
        ("stop",): (19, 60.0, "connector"),
        ("append",): (95, 60.0, "connector"),
        ("delete", "edit"): (48, 60.0, "connector"),
    }
    assert conn.budget_group(ChatKey("slack", "T1:C1", "1.2")) == "T1"

