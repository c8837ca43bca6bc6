"""Routing real-shaped Slack payloads (built by the fake Slack) to what relaybot answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from relaybot.connectors.slack.routing import (
    AssistantThreadStarted,
    Ignored,
    RoutedMessage,
    Router,
    route_command,
)
from relaybot.core.testing.fake_slack import FakeSlackServer, RateLimits

ALICE = "U0ALICE"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlackServer]:
    # nothing connects: the payloads are routed directly, deliveries just wait
    async with FakeSlackServer(limits=RateLimits.disabled()) as server:
        yield server


@pytest.fixture
def router(slack: FakeSlackServer) -> Router:
    ws = slack.workspace
    return Router(ws.bot_user_id, ws.bot_id)


def routed(router: Router, payload: dict) -> RoutedMessage:  # type: ignore[type-arg]
    result = router.route(payload)
    assert isinstance(result, RoutedMessage), result
    return result


async def test_a_top_level_dm_starts_a_conversation_in_its_own_thread(
    slack: FakeSlackServer, router: Router
) -> None:
    delivery = slack.dm(ALICE, "hello <@U0FAKEBOT>  there")
    message = routed(router, delivery.payload)
    assert message.kind == "dm" and message.is_dm
    assert message.text == "hello there"
    assert message.thread_ts == message.ts == delivery.event["ts"]
    assert message.event_id == delivery.event_id
    assert message.thread_key == f"{slack.workspace.team_id}:{slack.dm_channel(ALICE)}:{message.ts}"
    follow_up = routed(router, slack.dm(ALICE, "and more", thread_ts=message.ts).payload)
    assert follow_up.thread_key == message.thread_key  # the DM thread is one conversation
    other = routed(router, slack.dm(ALICE, "new topic").payload)
    assert other.thread_key != message.thread_key


async def test_a_mention_is_answered_in_the_thread_of_the_mention(
    slack: FakeSlackServer, router: Router
) -> None:
    mention = routed(router, slack.mention(slack.general, ALICE, "what is 2+2?").payload)
    assert (mention.kind, mention.is_dm, mention.text) == ("mention", False, "what is 2+2?")
    assert mention.thread_ts == mention.ts
    inside = routed(router, slack.mention(slack.general, ALICE, "and 3+3?", thread_ts=mention.ts).payload)
    assert inside.thread_ts == mention.ts and inside.ts != mention.ts


async def test_the_message_twin_of_a_mention_is_ignored(slack: FakeSlackServer, router: Router) -> None:
    slack.mention(slack.general, ALICE, "hi", with_message_event=True)
    app_mention, twin = slack.deliveries[-2:]
    assert isinstance(router.route(app_mention.payload), RoutedMessage)
    assert isinstance(router.route(twin.payload), Ignored)  # else the bot answers twice


async def test_thread_follow_ups_only_where_the_bot_is_and_when_enabled(slack: FakeSlackServer) -> None:
    ws = slack.workspace
    mention = slack.mention(slack.general, ALICE, "start").event["ts"]
    answered = {(ws.team_id, slack.general, mention)}
    router = Router(ws.bot_user_id, ws.bot_id, bot_in_thread=lambda *key: key in answered)
    follow_up = routed(router, slack.thread_reply(slack.general, ALICE, "more please", mention).payload)
    assert (follow_up.kind, follow_up.thread_ts) == ("follow_up", mention)
    stranger = slack.channel_message(slack.general, ALICE, "unrelated").event["ts"]
    elsewhere = slack.thread_reply(slack.general, ALICE, "chat", stranger)
    assert isinstance(router.route(elsewhere.payload), Ignored)
    assert isinstance(router.route(slack.channel_message(slack.general, ALICE, "top level").payload), Ignored)
    off = Router(ws.bot_user_id, ws.bot_id, thread_follow_ups=False, bot_in_thread=lambda *key: True)
    assert isinstance(off.route(slack.thread_reply(slack.general, ALICE, "x", mention).payload), Ignored)


async def test_never_answered_own_messages_edits_deletions_and_other_subtypes(
    slack: FakeSlackServer, router: Router
) -> None:
    dm = slack.dm_channel(ALICE)
    first = slack.dm(ALICE, "hi").event["ts"]
    slack.api.new_message(dm, text="Hello!", thread_ts=first, method="chat.postMessage")
    own = slack.echo_bot_message(slack.replies(dm, first)[0])
    edit = slack.edit(dm, first, "hi (edited)")
    gone = slack.delete(dm, first)
    join = slack.inject_event({"type": "message", "subtype": "channel_join", "user": ALICE,
                               "channel": slack.general, "ts": "1.000001", "text": "joined"})  # fmt: skip
    beep = {"type": "message", "bot_id": "B0OTHER", "user": "U0OTHERBOT", "channel": dm,
            "channel_type": "im", "ts": "1.000002", "text": "beep"}  # fmt: skip
    other_bot = slack.inject_event(beep)
    reasons = [router.route(d.payload) for d in (own, edit, gone, join, other_bot)]
    assert all(isinstance(r, Ignored) for r in reasons), reasons
    assert [r.reason for r in reasons] == [  # type: ignore[union-attr]
        "a bot's message", "subtype 'message_changed'", "subtype 'message_deleted'",
        "subtype 'channel_join'", "a bot's message",
    ]  # fmt: skip


async def test_files_and_assistant_threads(slack: FakeSlackServer, router: Router) -> None:
    delivery, stored = slack.share_file(slack.dm_channel(ALICE), ALICE, b"\x89PNG", text="what is it?")
    message = routed(router, delivery.payload)
    [image] = message.images
    assert (image.id, image.mimetype, image.size) == (stored.id, "image/png", 4)
    assert image.url.startswith(slack.url) and message.text == "what is it?"
    started = router.route(slack.start_assistant_thread(ALICE, context_channel=slack.general).payload)
    assert isinstance(started, AssistantThreadStarted)
    question = routed(router, slack.dm(ALICE, "plan my trip", thread_ts=started.thread_ts).payload)
    assert question.assistant_thread and question.thread_key == started.thread_key
    assert not message.assistant_thread
    assert (started.user, started.channel, started.context_channel) == (ALICE, slack.dm_channel(ALICE),
                                                                        slack.general)  # fmt: skip


async def test_slash_command_record(slack: FakeSlackServer) -> None:
    command = route_command(
        slack.slash_command("/relaybot", " new ", user=ALICE, channel=slack.general).payload
    )
    assert (command.command, command.text, command.user, command.is_dm) == ("/relaybot", "new", ALICE, False)
    assert command.response_url.startswith(slack.url)
