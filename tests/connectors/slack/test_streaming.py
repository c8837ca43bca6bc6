"""How replies stream into Slack when streams run short, end early or are refused, and 429s."""

from __future__ import annotations

from typing import Any

from relaybot.core.testing.fake_slack import FakeSlackServer, RateLimits

from .conftest import ALICE, BOB, settle, wait_thread_text, wait_until

#: pacing for replies finished by updates: chat.update is Tier 3 (~50 a minute per workspace), so
#: frames every 20 ms would spend the minute's budget within a second and the final update waits
EDITS = {"private_interval": 0.3, "channel_interval": 0.3}
LONG = " ".join(f"Sentence number {i} of a longer answer." for i in range(1, 13))


def methods_in(slack: FakeSlackServer, channel: str) -> list[str]:
    return [c.method for c in slack.timeline if c.channel == channel and c.method.startswith("chat.")]


async def test_a_stream_expiring_mid_reply_is_finished_by_update_with_the_text_once(
    make_slack_bot: Any, fake_openai: Any
) -> None:
    async with FakeSlackServer(limits=RateLimits.disabled(), stream_lifetime=0.8) as slack:
        app = await make_slack_bot(slack, **EDITS)
        fake_openai.add_reply(LONG, tokens_per_second=80, chunk_size_chars=6)  # ~3 s of text
        delivery = slack.dm(ALICE, "tell me a lot")
        channel, ts = delivery.event["channel"], delivery.event["ts"]
        await wait_thread_text(slack, channel, ts, LONG, timeout=30)
        await settle()
        [reply] = slack.replies(channel, ts)
        assert reply.visible == LONG and reply.visible.count("Sentence number 12") == 1
        errors = [
            c.error for c in slack.calls("chat.appendStream") + slack.calls("chat.stopStream") if c.error
        ]
        assert "message_not_in_streaming_state" in errors  # Slack closed it half-way …
        assert slack.calls("chat.update")[-1].ok  # … and the rest came by update
        assert not slack.calls("chat.postMessage")
        await app.stop()


async def test_when_stream_starts_run_short_the_rest_start_by_post_and_update(
    make_slack_bot: Any, fake_openai: Any
) -> None:
    async with FakeSlackServer() as slack:  # Slack's tiers
        app = await make_slack_bot(slack, start_stream_per_minute=1, **EDITS)
        for _ in range(2):
            fake_openai.add_reply(LONG, tokens_per_second=60, chunk_size_chars=6)
        first = slack.dm(ALICE, "one")
        second = slack.dm(BOB, "two")
        for delivery in (first, second):
            await wait_thread_text(slack, delivery.event["channel"], delivery.event["ts"], LONG, timeout=40)
        assert len(slack.calls("chat.startStream")) == 1
        posted = [c.channel for c in slack.calls("chat.postMessage")]
        assert len(posted) == 1 and slack.calls("chat.update")
        assert slack.count_429 == 0 and slack.calls_inside_retry_after == 0
        await app.stop()


async def test_a_429_retry_after_is_honoured_with_no_call_inside_the_window(
    make_slack_bot: Any, fake_openai: Any
) -> None:
    async with FakeSlackServer() as slack:
        app = await make_slack_bot(slack)
        slack.fail_next("chat.appendStream", "ratelimited", retry_after=2)
        fake_openai.add_reply(LONG, tokens_per_second=60, chunk_size_chars=6)
        delivery = slack.dm(ALICE, "go")
        channel, ts = delivery.event["channel"], delivery.event["ts"]
        await wait_thread_text(slack, channel, ts, LONG, timeout=30)
        [limited] = [c for c in slack.timeline if c.status == 429]
        after = [c for c in slack.timeline if c.t > limited.t and c.method.startswith("chat.")]
        assert after and min(c.t for c in after) >= limited.t + 2 - 0.05  # waited out
        assert slack.count_429 == 1 and slack.calls_inside_retry_after == 0
        await app.stop()


async def test_a_workspace_without_streams_is_answered_by_post_and_update(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack, **EDITS)
    slack.set_streaming_available(False)
    fake_openai.add_reply(LONG, tokens_per_second=60, chunk_size_chars=6)
    delivery = slack.mention(slack.general, ALICE, "no streams here")
    ts = delivery.event["ts"]
    await wait_thread_text(slack, slack.general, ts, LONG, timeout=30)
    [reply] = slack.replies(slack.general, ts)
    assert reply.stream is None and reply.visible == LONG
    assert [c.error for c in slack.calls("chat.startStream")] == ["method_not_supported"]


async def test_a_person_pressing_stop_in_slack_still_gets_the_text_once(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack, **EDITS)
    fake_openai.add_reply(LONG, tokens_per_second=60, chunk_size_chars=6)
    delivery = slack.dm(ALICE, "go on")
    channel, ts = delivery.event["channel"], delivery.event["ts"]
    streaming = await wait_until(lambda: [m for m in slack.replies(channel, ts) if m.stream], what="a stream")
    slack.stop_stream_by_user(channel, streaming[0].ts)
    await wait_thread_text(slack, channel, ts, LONG, timeout=30)
    assert len(slack.replies(channel, ts)) == 1


async def test_stop_in_the_thread_stops_that_threads_stream(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack)
    fake_openai.add_reply(LONG * 3, tokens_per_second=20, chunk_size_chars=4)
    delivery = slack.dm(ALICE, "ramble")
    channel, ts = delivery.event["channel"], delivery.event["ts"]
    await wait_until(lambda: slack.replies(channel, ts), what="the reply to begin")
    slack.thread_reply(channel, ALICE, "!stop", ts)
    await wait_until(lambda: any("interrupted" in m.visible for m in slack.replies(channel, ts)),
                     timeout=15, what="the interrupted marker")  # fmt: skip
    await settle()
    [reply] = [m for m in slack.replies(channel, ts) if m.stream is not None]
    assert reply.stream is not None and reply.stream.state == "stopped"
    assert reply.visible.endswith("⏹ interrupted") and len(reply.visible) < len(LONG * 3)
    assert len(fake_openai.requests) == 1


async def test_prefixed_and_slash_commands_run_relaybots_commands(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack)
    delivery = slack.dm(ALICE, "hello")
    channel, ts = delivery.event["channel"], delivery.event["ts"]
    await wait_thread_text(slack, channel, ts, "You said: hello")
    slack.thread_reply(channel, ALICE, "!list", ts)
    await wait_until(lambda: len(slack.replies(channel, ts)) == 2, what="the /list answer")
    assert "▶" in slack.replies(channel, ts)[-1].visible
    command = slack.slash_command("/relaybot", "new", user=ALICE, channel=channel)
    await slack.wait_acked(command)
    await wait_until(
        lambda: len(slack.replies(channel, ts)) == 3, what="the /new answer"
    )  # the thread last used
    assert len(fake_openai.requests) == 1  # commands never reach the model
