"""Socket Mode end to end: a real relaybot, real slack-bolt, the fake Slack and a fake provider."""

from __future__ import annotations

from typing import Any

import pytest

from relaybot import ConfigError
from relaybot.core.testing.fake_slack import FakeSlackServer, RateLimits

from .conftest import ALICE, BOB, CAROL, settle, wait_thread_text, wait_until

BIG = 100 * 1024 * 1024


def chat_methods(slack: FakeSlackServer, channel: str) -> list[str]:
    return [c.method for c in slack.timeline if c.channel == channel and c.method.startswith("chat.")]


async def test_a_dm_is_answered_by_a_native_stream_with_the_exact_provider_text(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack)
    fake_openai.add_reply("Paris is the capital of **France**.", tokens_per_second=60, chunk_size_chars=3)
    delivery = slack.dm(ALICE, "What is the capital of France?")
    channel, ts = delivery.event["channel"], delivery.event["ts"]
    await wait_thread_text(slack, channel, ts, "Paris is the capital of **France**.")
    [reply] = slack.replies(channel, ts)
    assert reply.stream is not None and reply.stream.state == "stopped"
    methods = chat_methods(slack, channel)
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    assert "chat.postMessage" not in methods and "chat.update" not in methods
    assert [a.outcome for a in delivery.attempts] == ["acked"]
    status = slack.assistant_calls("setStatus")
    assert status and status[0]["thread_ts"] == ts  # "is thinking…" while the model starts


async def test_a_mention_is_answered_in_its_thread_with_the_asker_as_recipient(
    slack: FakeSlackServer, make_slack_bot: Any
) -> None:
    await make_slack_bot(slack)
    delivery = slack.mention(slack.general, ALICE, "hello there", with_message_event=True)
    ts = delivery.event["ts"]
    await wait_thread_text(slack, slack.general, ts, "You said: hello there")
    [reply] = slack.replies(slack.general, ts)
    assert reply.thread_ts == ts and reply.stream is not None
    assert reply.stream.recipient_user_id == ALICE
    assert reply.stream.recipient_team_id == slack.workspace.team_id
    await settle()
    assert len(slack.replies(slack.general, ts)) == 1  # the message twin was not answered too
    # a follow-up in that thread needs no new mention
    follow = slack.thread_reply(slack.general, BOB, "and me?", ts)
    await wait_thread_text(slack, slack.general, ts, "You said: hello there\nYou said: and me?")
    assert follow.attempts[-1].outcome == "acked"
    # a thread the bot is not in is left alone
    other = slack.channel_message(slack.general, BOB, "just chatting")
    slack.thread_reply(slack.general, CAROL, "me too", other.event["ts"])
    await settle()
    assert not slack.replies(slack.general, other.event["ts"])


async def test_three_people_mentioning_at_once_each_get_their_own_answer(
    make_slack_bot: Any, fake_openai: Any
) -> None:
    async with FakeSlackServer() as slack:  # Slack's real limits
        app = await make_slack_bot(slack, channel_interval=1.0)
        deliveries = {
            user: slack.mention(slack.general, user, f"question from {user}") for user in (ALICE, BOB, CAROL)
        }
        for user, delivery in deliveries.items():
            expected = f"You said: question from {user}"
            await wait_thread_text(slack, slack.general, delivery.event["ts"], expected,
                                   timeout=30)  # fmt: skip
        for user, delivery in deliveries.items():
            # streamed to its asker, or (complete before its turn in the channel) one post
            [reply] = slack.replies(slack.general, delivery.event["ts"])
            assert reply.stream is None or reply.stream.recipient_user_id == user
        assert slack.count_429 == 0 and slack.calls_inside_retry_after == 0
        await app.stop()


async def test_a_lost_ack_is_redelivered_and_answered_once(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack)
    slack.lose_acks(1)
    delivery = slack.dm(ALICE, "once please")
    channel, ts = delivery.event["channel"], delivery.event["ts"]
    await slack.wait_acked(delivery)
    await wait_thread_text(slack, channel, ts, "You said: once please")
    await settle()
    assert [a.outcome for a in delivery.attempts] == ["ack_lost", "acked"]
    assert len(slack.replies(channel, ts)) == 1 and len(fake_openai.requests) == 1


async def test_a_redelivery_while_the_first_is_still_streaming_is_not_answered_again(
    make_slack_bot: Any, fake_openai: Any
) -> None:
    # acks are "late" (Slack gives up after 10 ms): every event comes again while it streams
    async with FakeSlackServer(limits=RateLimits.disabled(), ack_timeout=0.01,
                               retry_delays=(0.0, 0.3)) as slack:  # fmt: skip
        app = await make_slack_bot(slack)
        text = ("A slow answer. " * 8).strip()
        fake_openai.add_reply(text, tokens_per_second=40, chunk_size_chars=5)
        delivery = slack.mention(slack.general, ALICE, "take your time")
        ts = delivery.event["ts"]
        await wait_until(lambda: delivery.done.is_set() and delivery.retries >= 1, 15, "re-deliveries")
        await wait_thread_text(slack, slack.general, ts, text, timeout=30)
        await settle()
        assert len(slack.replies(slack.general, ts)) == 1 and len(fake_openai.requests) == 1
        await app.stop()


async def test_a_redelivery_after_a_restart_is_not_answered_again(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    app = await make_slack_bot(slack, database="shared.db")
    delivery = slack.dm(ALICE, "remember me")
    channel, ts = delivery.event["channel"], delivery.event["ts"]
    await wait_thread_text(slack, channel, ts, "You said: remember me")
    await app.stop()
    await make_slack_bot(slack, database="shared.db")
    again = slack.delivery.submit("events_api", delivery.payload)  # Slack's +1 minute retry
    await slack.wait_acked(again)
    await settle(1.0)
    assert len(slack.replies(channel, ts)) == 1 and len(fake_openai.requests) == 1
    # and the new process answers new events
    fresh = slack.dm(ALICE, "still there?")
    await wait_thread_text(slack, channel, fresh.event["ts"], "You said: still there?")


async def test_a_refused_bot_token_stops_the_start_with_the_config_key(
    slack: FakeSlackServer, make_slack_bot: Any
) -> None:
    with pytest.raises(ConfigError) as refused:
        await make_slack_bot(slack, bot_token="xoxb-not-the-token")
    assert "connectors.slack.bot_token" in str(refused.value) and "invalid_auth" in str(refused.value)
    assert "xoxb-not-the-token" not in str(refused.value)


async def test_a_100_mb_file_is_refused_with_a_message_and_never_downloaded(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack)
    channel = slack.dm_channel(ALICE)
    delivery, _file = slack.share_file(channel, ALICE, b"\x89PNG\r\n\x1a\n" + b"0" * 64, text="what is this?",
                                       reported_size=BIG)  # fmt: skip
    ts = delivery.event["ts"]
    await wait_until(lambda: slack.replies(channel, ts), what="the refusal")
    await settle()
    [refusal] = slack.replies(channel, ts)
    assert "too big" in refusal.visible and "20 MB" in refusal.visible
    assert slack.files.downloads == [] and fake_openai.requests == []


async def test_an_image_reaches_the_model(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    await make_slack_bot(slack)
    channel = slack.dm_channel(ALICE)
    delivery, _file = slack.share_file(channel, ALICE, buffer.getvalue(), text="describe")
    await wait_thread_text(slack, channel, delivery.event["ts"], "You said: describe")
    [request] = fake_openai.requests
    content = request.json["messages"][-1]["content"]
    assert any(part.get("type") == "image_url" for part in content)
    assert [status for _file_id, status in slack.files.downloads] == [200]


async def test_a_denied_user_gets_one_ephemeral_answer(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack, allowed_users=[ALICE])
    first = slack.mention(slack.general, BOB, "let me in")
    second = slack.mention(slack.general, BOB, "please")
    await slack.wait_acked(first)
    await slack.wait_acked(second)
    await wait_until(lambda: slack.ephemeral_messages, what="the ephemeral answer")
    await settle()
    [notice] = slack.ephemeral_messages
    assert notice["user"] == BOB and "not allowed" in notice["text"]
    assert slack.messages(slack.general) == [] and fake_openai.requests == []
    allowed = slack.mention(slack.general, ALICE, "hi")
    await wait_thread_text(slack, slack.general, allowed.event["ts"], "You said: hi")


async def test_the_bots_own_messages_edits_and_deletions_are_ignored(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack)
    delivery = slack.dm(ALICE, "hello")
    channel, ts = delivery.event["channel"], delivery.event["ts"]
    await wait_thread_text(slack, channel, ts, "You said: hello")
    [reply] = slack.replies(channel, ts)
    ignored = [
        slack.echo_bot_message(reply),
        slack.edit(channel, ts, "hello, edited"),
        slack.delete(channel, ts),
    ]
    for event in ignored:
        await slack.wait_acked(event)
    await settle()
    assert len(fake_openai.requests) == 1 and len(slack.replies(channel, ts)) == 1


async def test_socket_mode_reconnects_after_a_drop_without_losing_or_doubling_a_message(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack, ping_interval=0.5)
    await slack.wait_connected()
    slack.lose_acks(1)  # the first event's ack never arrives …
    lost = slack.dm(ALICE, "during the drop")
    await wait_until(lambda: slack.delivery.lose_acks == 0,
                     what="the first attempt")  # fmt: skip
    assert await slack.drop_connections() == 1  # … and the connection drops
    await slack.wait_acked(lost, timeout=20)
    after = slack.dm(ALICE, "after the drop")
    channel = lost.event["channel"]
    await wait_thread_text(slack, channel, lost.event["ts"], "You said: during the drop", timeout=20)
    await wait_thread_text(slack, channel, after.event["ts"], "You said: after the drop", timeout=20)
    await settle()
    assert len(slack.calls("apps.connections.open")) >= 3  # the check at start, the first, the new one
    assert len(fake_openai.requests) == 2


async def test_follow_ups_in_a_channel_thread_are_answered_after_a_restart(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    app = await make_slack_bot(slack, database="shared.db")
    delivery = slack.mention(slack.general, ALICE, "first")
    ts = delivery.event["ts"]
    await wait_thread_text(slack, slack.general, ts, "You said: first")
    await app.stop()
    await make_slack_bot(slack, database="shared.db")
    slack.thread_reply(slack.general, ALICE, "second", ts)  # no mention: the thread is known
    await wait_thread_text(slack, slack.general, ts, "You said: first\nYou said: second")


async def test_slacks_hourly_refresh_request_reconnects_and_messages_keep_coming(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack)
    await slack.wait_connected()
    opened = len(slack.calls("apps.connections.open"))
    assert await slack.request_refresh() == 1
    await slack.wait_for(lambda: len(slack.calls("apps.connections.open")) > opened)
    delivery = slack.dm(ALICE, "after the refresh")
    channel, ts = delivery.event["channel"], delivery.event["ts"]
    await wait_thread_text(slack, channel, ts, "You said: after the refresh")
    assert len(fake_openai.requests) == 1
