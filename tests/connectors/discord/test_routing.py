"""Where the bot answers: routing real discord.py messages built from the fake's gateway."""

from __future__ import annotations

from relaybot import ChatKey
from relaybot.connectors.discord.routing import UNSUPPORTED_FILE, Router
from relaybot.core.testing.fake_discord import FakeDiscordServer

from .conftest import DiscordBot, World


def router(bot: DiscordBot, **kwargs: object) -> Router:
    return Router(platform="discord", bot_id=bot.id, **kwargs)  # type: ignore[arg-type]


async def test_dms_are_always_answered(fake: FakeDiscordServer, world: World, bot: DiscordBot) -> None:
    dm = fake.dm_channel(world.bob)
    routed = router(bot).route(await bot.receive(fake.send_message(dm, world.bob, "hi there")))
    assert routed is not None
    assert (routed.reason, routed.is_private, routed.text) == ("dm", True, "hi there")
    assert routed.chat == ChatKey("discord", str(dm.id))
    assert (routed.user.id, routed.user.name) == (str(world.bob.id), "bob")


async def test_channels_need_a_mention_which_is_removed(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    r = router(bot)
    assert r.route(await bot.receive(fake.send_message(world.general, world.alice, "just chatting"))) is None
    sent = fake.mention_bot(
        world.general, world.alice, f"what does {world.bob.mention} think of {world.helpers.mention}?"
    )
    routed = r.route(await bot.receive(sent))
    assert routed is not None and routed.reason == "mention"
    assert routed.text == "what does @bob think of @helpers?"
    assert routed.chat == ChatKey("discord", str(world.general.id))
    assert (routed.reply_to, routed.is_private, routed.guild_id) == (None, False, str(world.guild.id))
    # a bare mention with nothing to say is nothing to answer
    assert r.route(await bot.receive(fake.mention_bot(world.general, world.alice, ""))) is None


async def test_a_reply_to_the_bot_is_answered_and_branches_from_that_message(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    r = router(bot)
    answer = await bot.channel(world.general).send("an earlier answer")
    mine = fake.store.messages[answer.id]
    routed = r.route(
        await bot.receive(fake.send_message(world.general, world.alice, "tell me more", reply_to=mine))
    )
    assert routed is not None and routed.reason == "reply"
    assert routed.reply_to == str(answer.id)


async def test_a_reply_to_anyone_carries_reply_to_when_addressed(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    r = router(bot)
    users_msg = fake.send_message(world.general, world.bob, "pineapple belongs on pizza")
    assert r.route(await bot.receive(users_msg)) is None
    # replying to bob without addressing the bot: not ours
    plain = fake.send_message(world.general, world.alice, "no it does not", reply_to=users_msg)
    assert r.route(await bot.receive(plain)) is None
    addressed = fake.mention_bot(world.general, world.alice, "settle this", reply_to=users_msg)
    routed = r.route(await bot.receive(addressed))
    assert routed is not None and routed.reply_to == str(users_msg.id)


async def test_a_reply_to_a_deleted_or_unresolved_bot_message_uses_the_connectors_record(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    answer = await bot.channel(world.general).send("soon deleted")
    sent_ids = {answer.id}
    r = router(bot, is_bot_message=sent_ids.__contains__)
    await answer.delete()
    deleted = fake.send_message(world.general, world.alice, "about that", reply_to=answer.id)
    routed = r.route(await bot.receive(deleted))
    assert routed is not None and (routed.reason, routed.reply_to) == ("reply", str(answer.id))
    other = await bot.channel(world.general).send("still here")
    sent_ids.add(other.id)
    unresolved = fake.send_message(
        world.general, world.alice, "and this", reply_to=other.id, resolve_reference=False
    )
    routed = r.route(await bot.receive(unresolved))
    assert routed is not None and routed.reason == "reply"


async def test_never_its_own_messages_nor_other_bots(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    r = router(bot)
    sent = fake.mention_bot(world.general, world.other_bot, "hello fellow bot")
    assert r.route(await bot.receive(sent)) is None
    own = await bot.channel(world.general).send("my own words")
    assert r.route(own) is None


async def test_threads_the_bot_started_or_was_mentioned_in(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    r = router(bot)
    mine = fake.add_thread(world.general, "bot thread")  # owner: the bot
    theirs = fake.add_thread(world.general, "alice's thread", owner=world.alice)
    # THREAD_CREATE goes out before the messages on the same ordered socket: no wait needed
    routed = r.route(await bot.receive(fake.send_message(mine, world.alice, "no mention needed")))
    assert routed is not None and routed.reason == "thread"
    assert routed.chat == ChatKey("discord", str(world.general.id), str(mine.id))
    assert r.route(await bot.receive(fake.send_message(theirs, world.alice, "talking among us"))) is None
    assert r.route(await bot.receive(fake.mention_bot(theirs, world.alice, "join us"))) is not None
    routed = r.route(await bot.receive(fake.send_message(theirs, world.bob, "now it listens")))
    assert routed is not None and routed.reason == "thread"
    assert r.route(await bot.receive(fake.send_message(world.general, world.bob, "but not here"))) is None


async def test_thread_trigger_mention_and_off(fake: FakeDiscordServer, world: World, bot: DiscordBot) -> None:
    mine = fake.add_thread(world.general, "bot thread")
    message = await bot.receive(fake.send_message(mine, world.alice, "hello"))
    assert router(bot, thread_trigger="mention").route(message) is None
    mention = await bot.receive(fake.mention_bot(mine, world.alice, "hello"))
    assert router(bot, thread_trigger="mention").route(mention) is not None
    assert router(bot, thread_trigger="off").route(mention) is None


async def test_text_commands_and_channel_trigger_all(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    r = router(bot, command_prefix="!", text_commands={"new", "switch"})
    command = await bot.receive(fake.send_message(world.general, world.alice, "!new"))
    routed = r.route(command)
    assert routed is not None and (routed.reason, routed.text) == ("command", "!new")
    assert r.route(await bot.receive(fake.send_message(world.general, world.alice, "!play music"))) is None
    anything = await bot.receive(fake.send_message(world.general, world.alice, "anything at all"))
    assert router(bot, channel_trigger="all").route(anything) is not None


async def test_images_are_collected_and_other_files_get_a_polite_answer(
    fake: FakeDiscordServer, world: World, bot: DiscordBot
) -> None:
    dm = fake.dm_channel(world.alice)
    image = fake.add_attachment(dm, "cat.png", b"\x89PNG...", content_type="image/png")
    pdf = fake.add_attachment(dm, "report.pdf", b"%PDF", content_type="application/pdf")
    routed = router(bot).route(
        await bot.receive(fake.send_message(dm, world.alice, "what is this", attachments=[image]))
    )
    assert routed is not None and [i.filename for i in routed.images] == ["cat.png"]
    assert routed.images[0].url == image.url and routed.unsupported is None
    routed = router(bot).route(await bot.receive(fake.send_message(dm, world.alice, "", attachments=[pdf])))
    assert routed is not None and routed.unsupported == UNSUPPORTED_FILE
