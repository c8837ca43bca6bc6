"""The Discord connector end to end: a real relaybot, real discord.py, the fake Discord and the
fake OpenAI server on loopback (start-up, where it answers, branching, media, access, commands).
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import pytest
from PIL import Image

from relaybot import ConfigError
from relaybot.testing import FakeDiscordServer

from .conftest import build_world, wait_text, wait_until

pytestmark = pytest.mark.asyncio


def png(size: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def connector_of(app: Any) -> Any:
    return app.connectors["discord"]


# ── start-up ─────────────────────────────────────────────────────────────────────────────────


async def test_missing_message_content_intent_is_a_clear_start_up_error(make_discord_bot) -> None:
    async with FakeDiscordServer(granted_intents=()) as fake:
        build_world(fake)
        with pytest.raises(ConfigError) as info:
            await make_discord_bot(fake)
        message = str(info.value)
        assert "Message Content" in message and "4014" in message and "connectors.discord" in message
        assert any(e.close_code == 4014 for e in fake.gateway.events)


async def test_a_refused_token_is_a_config_error_naming_the_key(plain_fake, make_discord_bot, caplog) -> None:
    with pytest.raises(ConfigError) as info:
        await make_discord_bot(plain_fake, token="MTIz.WRONG.secret-token-value")
    message = str(info.value)
    assert "connectors.discord.token" in message
    assert "secret-token-value" not in message and "secret-token-value" not in caplog.text


async def test_discord_py_gets_its_own_endpoints_back_after_the_bot_stops(
    plain_fake, make_discord_bot
) -> None:
    import discord.http

    before = discord.http.Route.BASE
    build_world(plain_fake)
    app = await make_discord_bot(plain_fake)
    assert discord.http.Route.BASE == plain_fake.api_base  # process-wide: the known limitation
    await app.stop()
    assert discord.http.Route.BASE == before


# ── where it answers ─────────────────────────────────────────────────────────────────────────


async def test_a_dm_is_answered_with_the_exact_provider_text(
    plain_fake, make_discord_bot, fake_openai
) -> None:
    world = build_world(plain_fake)
    answer = "Paris is the capital of **France**.\n\n- one\n- two\n\n```python\nprint('hi')\n```"
    fake_openai.add_reply(answer)
    await make_discord_bot(plain_fake)
    dm = plain_fake.dm_channel(world.alice)
    asked = plain_fake.send_message(dm, world.alice, "What is the capital of France?")
    final = await wait_text(plain_fake, dm.id, answer)
    assert final.reference_id == asked.id  # the answer is a reply to the question
    assert fake_openai.requests[-1].json["messages"][-1]["content"] == "What is the capital of France?"
    assert plain_fake.rate_limited == []


async def test_channel_messages_need_a_mention_a_reply_or_a_command(
    plain_fake, make_discord_bot, fake_openai
) -> None:
    world = build_world(plain_fake)
    await make_discord_bot(plain_fake)
    plain_fake.send_message(world.general, world.alice, "just chatting, not to the bot")
    plain_fake.mention_bot(world.general, world.alice, "are you there?")
    answered = await wait_text(plain_fake, world.general.id, "You said: are you there?")
    follow = plain_fake.send_message(world.general, world.bob, "and you?", reply_to=answered)
    await wait_text(plain_fake, world.general.id, "You said: and you?")
    assert [r.json["messages"][-1]["content"] for r in fake_openai.requests] == ["are you there?", "and you?"]
    assert follow.id in {m.reference_id for m in plain_fake.bot_messages(world.general.id)}


async def test_mentions_in_model_output_never_ping(plain_fake, make_discord_bot, fake_openai) -> None:
    world = build_world(plain_fake)
    text = f"@everyone @here look, <@{world.bob.id}> and <@&{world.helpers.id}>!"
    fake_openai.add_reply(text)
    await make_discord_bot(plain_fake)
    plain_fake.mention_bot(world.general, world.alice, "ping everyone please")
    final = await wait_text(plain_fake, world.general.id, text)
    assert (
        final.allowed_mentions == {"parse": [], "replied_user": False}
        or final.allowed_mentions["parse"] == []
    )
    assert not final.mention_everyone and final.mentions == [] and final.mention_roles == []
    for call in plain_fake.calls_to("POST /channels/{channel_id}/messages", channel_id=world.general.id):
        assert call.json["allowed_mentions"]["parse"] == []


async def test_a_reply_to_an_old_answer_branches_the_conversation(
    plain_fake, make_discord_bot, fake_openai
) -> None:
    world = build_world(plain_fake)
    await make_discord_bot(plain_fake)
    dm = plain_fake.dm_channel(world.alice)
    plain_fake.send_message(dm, world.alice, "one")
    first = await wait_text(plain_fake, dm.id, "You said: one")
    plain_fake.send_message(dm, world.alice, "two")
    await wait_text(plain_fake, dm.id, "You said: two")
    plain_fake.send_message(dm, world.alice, "three", reply_to=first)
    await wait_text(plain_fake, dm.id, "You said: three")
    contents = [m["content"] for m in fake_openai.requests[-1].json["messages"] if m["role"] != "system"]
    assert contents == ["one", "You said: one", "three"]  # "two" is on another branch
    # the reply to an unresolved reference (Discord leaves it out at times) branches too
    plain_fake.send_message(dm, world.alice, "four", reply_to=first, resolve_reference=False)
    await wait_text(plain_fake, dm.id, "You said: four")
    contents = [m["content"] for m in fake_openai.requests[-1].json["messages"] if m["role"] != "system"]
    assert contents == ["one", "You said: one", "four"]


async def test_a_reply_to_a_deleted_answer_still_continues_from_it(
    plain_fake, make_discord_bot, fake_openai
) -> None:
    world = build_world(plain_fake)
    await make_discord_bot(plain_fake)
    plain_fake.mention_bot(world.general, world.alice, "one")
    first = await wait_text(plain_fake, world.general.id, "You said: one")
    plain_fake.mention_bot(world.general, world.alice, "two")
    await wait_text(plain_fake, world.general.id, "You said: two")
    plain_fake.delete_message(first)  # someone deletes the answer on Discord
    # no mention: it is a reply to the bot (the gateway says only "deleted"; the connector
    # remembers its own message ids), and relaybot's history still has the deleted answer
    plain_fake.send_message(world.general, world.alice, "three", reply_to=first)
    await wait_text(plain_fake, world.general.id, "You said: three")
    contents = [m["content"] for m in fake_openai.requests[-1].json["messages"] if m["role"] != "system"]
    assert contents == ["one", "You said: one", "three"]


async def test_a_thread_is_its_own_chat(plain_fake, make_discord_bot, fake_openai) -> None:
    world = build_world(plain_fake)
    await make_discord_bot(plain_fake)
    plain_fake.mention_bot(world.general, world.alice, "in the channel")
    await wait_text(plain_fake, world.general.id, "You said: in the channel")
    thread = plain_fake.add_thread(world.general, "a thread", owner=world.alice)
    plain_fake.mention_bot(thread, world.alice, "in the thread")
    await wait_text(plain_fake, thread.id, "You said: in the thread")
    plain_fake.send_message(thread, world.alice, "no mention needed now")  # the bot takes part
    await wait_text(plain_fake, thread.id, "You said: no mention needed now")
    contents = [m["content"] for m in fake_openai.requests[-1].json["messages"] if m["role"] != "system"]
    assert "in the channel" not in contents and contents[0] == "in the thread"


# ── media ────────────────────────────────────────────────────────────────────────────────────


async def test_an_image_attachment_reaches_the_model(plain_fake, make_discord_bot, fake_openai) -> None:
    world = build_world(plain_fake)
    await make_discord_bot(plain_fake)
    dm = plain_fake.dm_channel(world.alice)
    picture = plain_fake.add_attachment(dm, "cat.png", png())
    plain_fake.send_message(dm, world.alice, "what is this?", attachments=[picture])
    await wait_text(plain_fake, dm.id, "You said: what is this?")
    content = fake_openai.requests[-1].json["messages"][-1]["content"]
    assert isinstance(content, list) and any(part["type"] == "image_url" for part in content)
    assert picture.downloads == 1


async def test_a_30_mb_attachment_is_refused_with_a_message(
    plain_fake, make_discord_bot, fake_openai
) -> None:
    world = build_world(plain_fake)
    await make_discord_bot(plain_fake)
    dm = plain_fake.dm_channel(world.alice)
    huge = plain_fake.add_attachment(dm, "huge.png", size=30 * 1024 * 1024)
    plain_fake.send_message(dm, world.alice, "look at this", attachments=[huge])
    refusal = await wait_until(
        lambda: next((m for m in plain_fake.bot_messages(dm.id) if "too big" in m.text), None), what="refusal"
    )
    assert "30.0 MB" in refusal.text and "20 MB" in refusal.text
    assert huge.downloads == 0 and fake_openai.requests == []
    # the chat goes on
    plain_fake.send_message(dm, world.alice, "sorry, here is text")
    await wait_text(plain_fake, dm.id, "You said: sorry, here is text")


# ── access ───────────────────────────────────────────────────────────────────────────────────


async def test_a_denied_user_gets_one_polite_answer(plain_fake, make_discord_bot, fake_openai) -> None:
    world = build_world(plain_fake)
    await make_discord_bot(plain_fake, allowed_users=[world.alice.id], denied_message="Not for you, sorry.")
    plain_fake.mention_bot(world.general, world.bob, "hello?")
    await wait_text(plain_fake, world.general.id, "Not for you, sorry.")
    plain_fake.mention_bot(world.general, world.bob, "hello again?")
    plain_fake.mention_bot(world.general, world.alice, "and me?")
    await wait_text(plain_fake, world.general.id, "You said: and me?")
    texts = [m.text for m in plain_fake.bot_messages(world.general.id)]
    assert texts.count("Not for you, sorry.") == 1
    assert [r.json["messages"][-1]["content"] for r in fake_openai.requests] == ["and me?"]
    # a slash command is refused too, visible to them only
    interaction = plain_fake.slash_command(world.general, world.bob, "new")
    await wait_until(lambda: interaction.response_type == 4, what="the interaction answered")
    refusal = plain_fake.store.messages[interaction.original_id]
    assert refusal.text == "Not for you, sorry." and refusal.flags & 64  # ephemeral


async def test_a_channel_the_bot_lost_is_logged_without_a_retry_storm(
    plain_fake, make_discord_bot, fake_openai, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="relaybot")
    world = build_world(plain_fake)
    await make_discord_bot(plain_fake)
    plain_fake.revoke_access(world.general)
    plain_fake.mention_bot(world.general, world.alice, "question one")
    await wait_until(lambda: len(fake_openai.requests) == 1, what="the provider request")
    await wait_until(lambda: "403" in caplog.text, what="the 403 logged")
    await asyncio.sleep(1.5)  # what a retry storm would need to show
    forbidden = [c for c in plain_fake.calls if c.status == 403]
    assert len(forbidden) == 1, [c.route for c in forbidden]
    assert any("403" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    # a later question there costs no request to Discord at all (the channel is known lost)
    plain_fake.mention_bot(world.general, world.bob, "question two")
    await wait_until(lambda: len(fake_openai.requests) == 2, what="the second provider request")
    await asyncio.sleep(1.5)
    assert len([c for c in plain_fake.calls if c.status == 403]) == 1
    assert plain_fake.invalid_requests == 1
    # other channels are unaffected
    plain_fake.mention_bot(world.random, world.alice, "here?")
    await wait_text(plain_fake, world.random.id, "You said: here?")


# ── commands ─────────────────────────────────────────────────────────────────────────────────


async def test_commands_are_synced_as_slash_commands_and_run(plain_fake, make_discord_bot) -> None:
    world = build_world(plain_fake)
    await make_discord_bot(plain_fake)
    synced = {c["name"]: c for c in plain_fake.commands()}
    assert {"new", "list", "switch", "help"} <= set(synced)
    assert synced["new"]["options"][0]["name"] == "arguments"
    interaction = plain_fake.slash_command(world.general, world.alice, "new", {"arguments": "Trip plans"})
    await wait_until(lambda: interaction.response_type == 4, what="the interaction answered")
    echo = next(m for m in plain_fake.bot_messages(world.general.id) if m.id == interaction.original_id)
    assert echo.text == "/new Trip plans"
    output = await wait_until(
        lambda: next((m for m in plain_fake.bot_messages(world.general.id) if m.id > echo.id), None),
        what="the command's output",
    )
    assert "Trip plans" in output.text


async def test_text_commands_use_the_prefix(plain_fake, make_discord_bot, fake_openai) -> None:
    world = build_world(plain_fake)
    await make_discord_bot(plain_fake, command_prefix="!")
    plain_fake.send_message(world.general, world.alice, "!new Gardening")
    await wait_until(
        lambda: any("Gardening" in m.text for m in plain_fake.bot_messages(world.general.id)),
        what="/new output",
    )
    plain_fake.send_message(world.general, world.alice, "!list")
    await wait_until(
        lambda: sum("Gardening" in m.text for m in plain_fake.bot_messages(world.general.id)) >= 2,
        what="/list output",
    )
    plain_fake.send_message(world.general, world.alice, "!nonsense is not a command")
    await asyncio.sleep(0.5)
    assert fake_openai.requests == []  # neither a command nor addressed to the bot
