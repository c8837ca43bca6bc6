"""HTTP Events mode end to end: the fake Slack signs and POSTs events to the connector's server."""

from __future__ import annotations

from typing import Any

from relaybot.core.testing.fake_slack import FakeSlackServer, RateLimits

from .conftest import ALICE, settle, wait_thread_text


async def test_a_signed_mention_is_answered_in_its_thread(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack, mode="http")
    delivery = slack.mention(slack.general, ALICE, "over http")
    await wait_thread_text(slack, slack.general, delivery.event["ts"], "You said: over http")
    assert [a.transport for a in delivery.attempts] == ["http"]
    assert [a.outcome for a in delivery.attempts] == ["acked"]
    assert not slack.calls("apps.connections.open")


async def test_a_bad_or_stale_signature_is_401_and_nothing_is_processed(
    make_slack_bot: Any, fake_openai: Any
) -> None:
    async with FakeSlackServer(limits=RateLimits.disabled(), retry_delays=()) as slack:
        app = await make_slack_bot(slack, mode="http")
        events_url = slack.delivery.events_url
        slack.use_http_events("http://127.0.0.1:9/nowhere")  # the genuine copy goes nowhere
        forged = slack.mention(slack.general, ALICE, "forged")
        await slack.wait_for(lambda: forged.done.is_set())
        slack.use_http_events(events_url)
        assert await slack.post_wrongly_signed(forged) == 401
        assert await slack.post_wrongly_signed(forged, stale=True) == 401
        await settle()
        assert fake_openai.requests == [] and slack.messages(slack.general) == []
        genuine = slack.mention(slack.general, ALICE, "genuine")  # the server still works
        await wait_thread_text(slack, slack.general, genuine.event["ts"], "You said: genuine")
        await app.stop()


async def test_an_http_redelivery_with_retry_headers_is_answered_once(
    make_slack_bot: Any, fake_openai: Any
) -> None:
    async with FakeSlackServer(limits=RateLimits.disabled(), retry_delays=(0.0,)) as slack:
        app = await make_slack_bot(slack, mode="http")
        slack.lose_acks(1)  # Slack did not see the 200: it re-sends with X-Slack-Retry-Num: 1
        delivery = slack.dm(ALICE, "just once")
        channel, ts = delivery.event["channel"], delivery.event["ts"]
        await slack.wait_acked(delivery)
        await wait_thread_text(slack, channel, ts, "You said: just once")
        await settle()
        assert [a.outcome for a in delivery.attempts] == ["ack_lost", "acked"]
        assert len(slack.replies(channel, ts)) == 1 and len(fake_openai.requests) == 1
        await app.stop()
