"""Socket Mode end to end: a real relaybot, real slack-bolt, the fake Slack and a fake provider."""

from __future__ import annotations

from typing import Any

from relaybot.core.testing.fake_slack import FakeSlackServer

from .conftest import ALICE, BOB, CAROL, settle, wait_thread_text, wait_until


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
    assert [c.method for c in slack.timeline if c.channel == channel and c.method.startswith("chat.")][0] \
        == "chat.startStream"  # fmt: skip
    assert not slack.calls("chat.postMessage")
    assert [a.outcome for a in delivery.attempts] == ["acked"]
