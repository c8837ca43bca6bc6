"""What goes wrong in Slack: archived channels, removed bots, unreadable files, long replies."""

from __future__ import annotations

from typing import Any

from relaybot.core.testing.fake_slack import FakeSlackServer

from .conftest import ALICE, settle, wait_thread_text, wait_until


async def test_a_mention_in_an_archived_or_left_channel_is_acked_and_given_up(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack)
    archived = slack.add_channel("old-news")
    left = slack.add_channel("left-behind")
    first = slack.mention(archived.id, ALICE, "anyone here?")
    second = slack.mention(left.id, ALICE, "hello?")
    slack.archive(archived.id)
    slack.remove_bot(left.id)
    for delivery in (first, second):
        await slack.wait_acked(delivery)
    await wait_until(lambda: len(fake_openai.requests) == 2, what="both questions asked")
    await settle(1.0)
    assert [a.outcome for a in first.attempts + second.attempts] == ["acked", "acked"]
    refused = [c.error for c in slack.timeline if c.channel in (archived.id, left.id) and c.error]
    assert refused and set(refused) <= {"is_archived", "not_in_channel"}
    await settle(1.5)
    again = [c for c in slack.timeline if c.channel in (archived.id, left.id) and c.error]
    assert len(again) == len(refused)  # given up, not retried in a loop
    # the bot still answers elsewhere
    fine = slack.mention(slack.general, ALICE, "and here?")
    await wait_thread_text(slack, slack.general, fine.event["ts"], "You said: and here?")


async def test_a_file_the_bot_may_not_read_is_answered_with_a_message(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack)
    channel = slack.dm_channel(ALICE)
    delivery, _file = slack.share_file(channel, ALICE, b"\x89PNG\r\n\x1a\n0000", text="look", restricted=True)
    ts = delivery.event["ts"]
    await wait_until(lambda: slack.replies(channel, ts), what="the answer")
    await settle()
    [answer] = slack.replies(channel, ts)
    assert "can't open" in answer.visible and fake_openai.requests == []
    assert [status for _file_id, status in slack.files.downloads] == [403]


async def test_a_reply_longer_than_a_markdown_block_continues_in_the_thread(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    await make_slack_bot(slack, private_interval=0.1)
    paragraphs = [f"Paragraph {i}: " + ("lorem ipsum dolor sit amet " * 20).strip() for i in range(50)]
    text = "\n\n".join(paragraphs)  # about 28,000 characters
    fake_openai.add_reply(text, chunk_size_chars=400, tokens_per_second=30)  # streamed over ~2 s
    delivery = slack.dm(ALICE, "write a lot")
    channel, ts = delivery.event["channel"], delivery.event["ts"]
    await wait_until(
        lambda: slack.thread_text(channel, ts, sep="\n\n") == text
        and all(m.stream is None or m.stream.state != "streaming" for m in slack.replies(channel, ts)),
        timeout=40, what="the whole reply",
    )  # fmt: skip
    replies = slack.replies(channel, ts)
    assert len(replies) >= 3 and all(len(m.visible) <= 12_000 for m in replies)
    assert replies[0].stream is not None  # streamed, cut at Slack's limit, continued


async def test_the_assistant_pane_greets_offers_prompts_and_titles_the_thread(
    slack: FakeSlackServer, make_slack_bot: Any, fake_openai: Any
) -> None:
    prompts = [{"title": "Summarise", "message": "Summarise this channel"}]
    await make_slack_bot(slack, suggested_prompts=prompts, assistant_greeting="Hello! Ask away.")
    opened = slack.start_assistant_thread(ALICE)
    pane = opened.event["assistant_thread"]
    channel, thread = pane["channel_id"], pane["thread_ts"]
    await wait_until(lambda: slack.replies(channel, thread), what="the greeting")
    assert slack.thread_text(channel, thread) == "Hello! Ask away."
    [offered] = slack.assistant_calls("setSuggestedPrompts")
    assert offered["prompts"] == prompts and offered["thread_ts"] == thread
    slack.dm(ALICE, "What is a haiku?", thread_ts=thread)
    await wait_thread_text(slack, channel, thread, "Hello! Ask away.\nYou said: What is a haiku?")
    titles = await wait_until(lambda: slack.assistant_calls("setTitle"), what="the title")
    assert titles[0]["thread_ts"] == thread and "haiku" in titles[0]["title"]
