"""Streaming into Discord end to end: long answers split into chained parts, several streams in
one channel paced by Discord's own headers, a gateway drop mid-stream, 429s and the primitives.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from relaybot import ChatKey, MessageGoneError, Outgoing, PlatformRateLimitError
from relaybot.testing import FakeDiscordServer

from .conftest import build_world, wait_text, wait_until

pytestmark = pytest.mark.asyncio

SEND = "POST /channels/{channel_id}/messages"
EDIT = "PATCH /channels/{channel_id}/messages/{message_id}"
_FENCE = re.compile(r"^ {0,3}(```|~~~)", re.MULTILINE)


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def normalised(text: str) -> str:
    """The text without fence lines and with whitespace collapsed: a split reply's parts close
    and reopen code fences at the cuts and drop trailing whitespace, nothing else."""
    lines = [line for line in text.splitlines() if not _FENCE.match(line)]
    return " ".join(" ".join(lines).split())


def long_answer(seed: str = "A") -> str:
    """About 9,000 characters: prose, then a code block that crosses the 2,000 limit, then prose."""
    prose = "".join(f"{seed} sentence number {i} is here 😀. " for i in range(120))
    code = "\n".join(f"    value_{i} = compute({i}) * 2  # {seed}" for i in range(120))
    tail = "".join(f"{seed} closing line {i}.\n" for i in range(60))
    return f"{prose}\n\n```python\n{code}\n```\n\n{tail}The end of {seed}."


def connector_of(app: Any) -> Any:
    return app.connectors["discord"]


async def test_a_9000_character_answer_is_split_into_chained_parts(
    plain_fake, make_discord_bot, fake_openai
) -> None:
    world = build_world(plain_fake)
    answer = long_answer()
    assert len(answer) > 9000
    fake_openai.add_reply(answer, chunk_size_chars=100, tokens_per_second=30)
    await make_discord_bot(plain_fake, channel_interval=0.2)
    asked = plain_fake.mention_bot(world.general, world.alice, "a long one please")
    await wait_until(
        lambda: any(m.text.endswith("The end of A.") for m in plain_fake.bot_messages(world.general.id)),
        timeout=60, what="the last part",
    )  # fmt: skip
    await asyncio.sleep(0.3)
    parts = plain_fake.bot_messages(world.general.id)
    assert len(parts) >= 5
    for part in parts:
        assert utf16(part.text) <= 2000
        assert len(_FENCE.findall(part.text)) % 2 == 0, "a part with an unbalanced code fence"
        assert "writing…" not in part.text  # the marker is gone from every final text
    # each part answers the previous one; the first answers the question
    assert [p.reference_id for p in parts] == [asked.id] + [p.id for p in parts[:-1]]
    assert normalised("\n".join(p.text for p in parts)) == normalised(answer)
    assert "".join(p.text for p in parts).count("value_") == answer.count("value_")
    # the code block continues as code in the next part
    assert sum("```python" in p.text for p in parts) >= 2
    # mid-stream frames showed the "still writing" marker
    assert any("writing…" in version for p in parts for version in p.versions)
    assert plain_fake.rate_limited == []


async def test_three_streams_in_one_channel_stay_within_discords_buckets(
    plain_fake, make_discord_bot, fake_openai
) -> None:
    # The fake enforces Discord's observed limits (5 sends and 5 edits per 5 s per channel).
    # The connector is told to pace at 5 requests a second in the channel, far faster than
    # that: only the X-RateLimit-* headers it reports keep it out of 429s.
    world = build_world(plain_fake)
    topics = {"tides": world.alice, "comets": world.bob}
    carol = plain_fake.add_user("carol")
    plain_fake.add_member(world.guild, carol)
    topics["ferns"] = carol

    def answer(body: dict[str, Any]) -> str:
        topic = body["messages"][-1]["content"].rsplit(" ", 1)[-1]
        return f"All about {topic}: " + " ".join(f"{topic} fact {i}." for i in range(60))

    fake_openai.default = answer
    fake_openai.default_tokens_per_second = 60
    app = await make_discord_bot(plain_fake, channel_interval=0.2)
    asked = {
        topic: plain_fake.mention_bot(world.general, user, f"tell me about {topic}")
        for topic, user in topics.items()
    }
    finals = {}
    for topic in topics:
        expected = f"All about {topic}: " + " ".join(f"{topic} fact {i}." for i in range(60))
        finals[topic] = await wait_text(plain_fake, world.general.id, expected, timeout=90)
    assert plain_fake.rate_limited == []
    assert connector_of(app).tracker.rate_limited == 0
    for topic, final in finals.items():  # each answer is a reply to its own question
        assert final.reference_id == asked[topic].id
    edits = plain_fake.calls_to(EDIT, channel_id=world.general.id)
    assert edits and all(c.status == 200 for c in edits)
    # the buckets were learned from the answers' headers
    assert connector_of(app).tracker.edits(world.general.id) is not None


async def test_a_gateway_drop_mid_stream_resumes_and_the_stream_finishes(
    plain_fake, make_discord_bot, fake_openai
) -> None:
    world = build_world(plain_fake)
    answer = " ".join(f"word{i}" for i in range(150))
    fake_openai.add_reply(answer, tokens_per_second=40, chunk_size_chars=8)
    app = await make_discord_bot(plain_fake, channel_interval=0.3)
    general = world.general
    plain_fake.mention_bot(general, world.alice, "talk for a while")
    await wait_until(lambda: plain_fake.bot_messages(general.id), what="the first frame")
    assert await plain_fake.drop_gateway() == 1
    # sent while the gateway is down: replayed on RESUME (another person, so it does not
    # interrupt the answer being written)
    plain_fake.mention_bot(general, world.bob, "sent while the gateway was down")
    await wait_text(plain_fake, general.id, answer, timeout=30)
    await wait_text(plain_fake, general.id, "You said: sent while the gateway was down", timeout=30)
    assert plain_fake.gateway.resumes == 1 and connector_of(app).resumes == 1
    assert sorted(r.json["messages"][-1]["content"] for r in fake_openai.requests) == [
        "sent while the gateway was down",
        "talk for a while",
    ]  # the replayed message came exactly once


# ── the primitives (what the scheduler calls) ────────────────────────────────────────────────


async def test_a_429_is_a_platform_rate_limit_error_at_once(plain_fake, make_discord_bot) -> None:
    world = build_world(plain_fake)
    app = await make_discord_bot(plain_fake)
    connector = connector_of(app)
    chat = ChatKey("discord", str(world.general.id))
    plain_fake.rate_limit_next(SEND, retry_after=7.5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(PlatformRateLimitError) as info:
        await connector.send_text(chat, "hello", final=True)
    assert info.value.retry_after == pytest.approx(7.5, abs=0.01)
    assert loop.time() - began < 5  # discord.py did not sleep it out
    assert len(plain_fake.rate_limited) == 1
    assert len(plain_fake.calls_to(SEND, channel_id=world.general.id)) == 1  # and did not retry it
    # discord.py's own requests outside the primitives keep its handling
    sent = await connector.send_text(chat, "hello again", final=True)
    assert plain_fake.bot_messages(world.general.id)[-1].id == int(sent)


async def test_primitives_send_edit_image_delete_and_the_writing_marker(plain_fake, make_discord_bot) -> None:
    from relaybot.connectors.discord.connector import DiscordConnector

    world = build_world(plain_fake)
    app = await make_discord_bot(plain_fake)
    connector: DiscordConnector = connector_of(app)
    chat = ChatKey("discord", str(world.general.id))
    mid = await connector.send_text(chat, "partial **bo", final=False)
    stored = plain_fake.bot_messages(world.general.id)[-1]
    assert stored.text == "partial **bo\n\n" + connector.config.writing_marker
    await connector.edit_text(
        chat, mid, "partial **bold** done", final=True, outgoing=Outgoing("reply", interrupted=True)
    )
    assert stored.text == "partial **bold** done\n\n⏹ interrupted"
    # a frame too long for the marker goes without it
    await connector.edit_text(chat, mid, "x" * 1995, final=False)
    assert stored.text == "x" * 1995
    image_id = await connector.send_image(chat, _png(), caption="a square")
    image = plain_fake.bot_messages(world.general.id)[-1]
    assert (
        image.id == int(image_id)
        and image.text == "a square"
        and image.attachments[0].filename == "image.png"
    )
    await connector.delete_message(chat, image_id)
    assert image.deleted
    with pytest.raises(MessageGoneError):
        await connector.delete_message(chat, image_id)


async def test_send_text_into_a_thread_goes_to_the_thread(plain_fake, make_discord_bot) -> None:
    world = build_world(plain_fake)
    app = await make_discord_bot(plain_fake)
    thread = plain_fake.add_thread(world.general, "t")
    chat = ChatKey("discord", str(world.general.id), str(thread.id))
    await connector_of(app).send_text(chat, "in the thread")
    assert [m.text for m in plain_fake.bot_messages(thread.id)] == ["in the thread"]
    assert plain_fake.bot_messages(world.general.id) == []


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(out, "PNG")
    return out.getvalue()


async def test_embeds_carry_4096_characters(make_discord_bot, fake_openai) -> None:
    async with FakeDiscordServer() as fake:
        world = build_world(fake)
        answer = "Embedded answer. " * 300  # ~5,100 characters: two embeds
        fake_openai.add_reply(answer.strip())
        await make_discord_bot(fake, embeds=True, channel_interval=0.2)
        dm = fake.dm_channel(world.alice)
        fake.send_message(dm, world.alice, "embed please")

        def done() -> bool:
            shown = fake.bot_messages(dm.id)
            return len(shown) == 2 and shown[-1].text.endswith("answer.")

        await wait_until(done, timeout=30, what="two embeds")
        parts = fake.bot_messages(dm.id)
        assert all(p.content == "" and len(p.embeds) == 1 for p in parts)
        assert all(utf16(p.embeds[0]["description"]) <= 4096 for p in parts)
        assert normalised(" ".join(p.embeds[0]["description"] for p in parts)) == normalised(answer)


async def test_a_thread_and_its_channel_streaming_together_stay_within_both_buckets(
    plain_fake, make_discord_bot, fake_openai
) -> None:
    # the scheduler paces a thread with its parent channel (one lane); Discord counts them
    # apart: both streams finish with no 429 in either channel
    world = build_world(plain_fake)
    thread = plain_fake.add_thread(world.general, "side talk", owner=world.bob)

    def answer(body: dict[str, Any]) -> str:
        topic = body["messages"][-1]["content"].rsplit(" ", 1)[-1]
        return " ".join(f"{topic} point {i}." for i in range(80))

    fake_openai.default = answer
    fake_openai.default_tokens_per_second = 50
    await make_discord_bot(plain_fake, channel_interval=0.2)
    plain_fake.mention_bot(world.general, world.alice, "about rivers")
    plain_fake.mention_bot(thread, world.bob, "about hills")
    await wait_text(plain_fake, world.general.id, answer({"messages": [{"content": "rivers"}]}), timeout=90)
    await wait_text(plain_fake, thread.id, answer({"messages": [{"content": "hills"}]}), timeout=90)
    assert plain_fake.rate_limited == []
    assert len(plain_fake.calls_to(EDIT, channel_id=world.general.id)) >= 2
    assert len(plain_fake.calls_to(EDIT, channel_id=thread.id)) >= 2


async def test_a_thread_reports_the_tighter_of_its_own_and_its_channels_bucket() -> None:
    from relaybot.connectors.discord.config import DiscordConfig
    from relaybot.connectors.discord.connector import DiscordConnector

    connector = DiscordConnector("discord", DiscordConfig.model_validate({"token": "t.t.t"}))
    seen: list[tuple[ChatKey, str, int, float]] = []
    connector.bucket_observer = lambda chat, method, remaining, reset: seen.append(
        (chat, method, remaining, reset)
    )
    tracker = connector.tracker

    def answer(channel: int, remaining: int, reset_after: float) -> None:
        headers = {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": str(remaining),
                   "X-RateLimit-Reset-After": str(reset_after), "X-RateLimit-Bucket": "edits"}  # fmt: skip
        tracker.observe("PATCH", f"http://x/api/v10/channels/{channel}/messages/9", 200, headers)

    answer(100, 0, 3.0)  # the parent channel's edit bucket is empty for 3 s
    answer(200, 4, 5.0)  # the thread's has room
    thread_chat = ChatKey("discord", "100", "200")
    connector._report(thread_chat, "edit", 200)
    assert seen[-1][1:3] == ("edit", 0) and seen[-1][3] == pytest.approx(3.0, abs=0.2)
    answer(100, 3, 4.0)
    connector._report(thread_chat, "edit", 200)
    assert seen[-1][1:3] == ("edit", 3)  # the parent is now the tighter one
