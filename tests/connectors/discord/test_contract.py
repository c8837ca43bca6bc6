"""The connector contract suite (relaybot.testing.ConnectorContract) on Discord.

The platform is :class:`~relaybot.testing.FakeDiscordServer` (REST + gateway on loopback), with
its own rate limits off (the 429s the suite needs are scripted by :meth:`flood`). A person's
message is a ``MESSAGE_CREATE`` the fake dispatches over the gateway to the connector's real
discord.py client: a DM per person for private chats; in a guild channel two people write,
mentioning the bot (the default ``channel_trigger``). What the platform shows is the bot's
messages the fake holds in that channel, as they read now, with their reply references;
images go in as attachments on the fake's loopback URLs and out as attachments it records.

discord.py's ``Route.BASE`` and gateway URL are process-wide: the connector sets them at start
and gives them back at stop, so a restart is a fresh connector pointed at the same fake.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image

from relaybot import ChatKey
from relaybot.core.testing.fake_discord import FakeChannel, FakeUser, RateLimits, StoredAttachment
from relaybot.testing import (
    ConnectorContract,
    ContractBot,
    ContractChat,
    FakeDiscordServer,
    Shown,
    split_interrupted,
)

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover
    async_fixture = pytest.fixture

#: the message-producing REST routes a 429 can answer while a reply streams
SEND = "POST /channels/{channel_id}/messages"
EDIT = "PATCH /channels/{channel_id}/messages/{message_id}"
#: file names Discord shows as pictures
IMAGE_NAMES = (".png", ".jpg", ".jpeg", ".gif", ".webp")


@dataclass
class DiscordWorld:
    """The fake Discord with one guild channel and four people (two DM, two in the guild)."""

    server: FakeDiscordServer
    general: FakeChannel
    people: dict[str, FakeUser]


def _is_picture(attachment: StoredAttachment) -> bool:
    """Whether an attachment the bot uploaded is a picture people see: a file Pillow reads as an
    image under an image file name. (Discord derives an upload's ``content_type`` from its file
    name; the fake records the multipart part's type, which discord.py always sends as
    ``application/octet-stream``, so the type it holds says nothing.)"""
    if attachment.data is None or not attachment.filename.lower().endswith(IMAGE_NAMES):
        return False
    try:
        with Image.open(io.BytesIO(attachment.data)) as image:
            image.verify()
    except Exception:
        return False
    return True


class TestDiscordContract(ConnectorContract):
    connector_name = "discord"
    has_groups = True
    reply_relations = True
    can_send_images = True
    can_show_images = True

    @async_fixture
    async def contract_fake(self) -> AsyncIterator[DiscordWorld]:
        async with FakeDiscordServer(limits=RateLimits.disabled()) as server:
            guild = server.add_guild("Contract Guild", channels=["general"])
            people = {name: server.add_user(name) for name in ("alice", "bob", "carol", "dave")}
            for name in ("carol", "dave"):
                server.add_member(guild, people[name])
            yield DiscordWorld(server, server.channel(guild, "general"), people)

    def connector_config(self, fake: DiscordWorld) -> dict[str, Any]:
        server = fake.server
        return {
            "token": server.token,
            "api_base": server.api_base,
            "gateway_url": server.gateway_url,
            "channel_interval": 0.05,  # the fake's limits are off: pace lightly
            "global_rate": 0,
        }

    def private_chat(self, fake: DiscordWorld, n: int) -> ContractChat:
        person = fake.people[("alice", "bob")[n]]
        dm = fake.server.dm_channel(person)  # a DM is its own channel, one per person
        return ContractChat(ChatKey("discord", str(dm.id)), dm, (str(person.id),))

    def group_chat(self, fake: DiscordWorld, n: int) -> ContractChat:
        users = tuple(str(fake.people[name].id) for name in ("carol", "dave"))
        return ContractChat(ChatKey("discord", str(fake.general.id)), fake.general, users, group=True)

    async def send(
        self, bot: ContractBot, chat: ContractChat, text: str, *, person: int = 0, image: bytes | None = None
    ) -> str:
        world: DiscordWorld = bot.fake
        server = world.server
        author = server.state.users[int(chat.users[person])]
        channel: FakeChannel = chat.ref
        if chat.group:  # in a guild channel the bot answers mentions (commands too: "@bot /stop")
            text = f"{server.bot.mention} {text}"
        attachments = [server.add_attachment(channel, "picture.png", image)] if image is not None else []
        sent = server.send_message(channel, author, text, attachments=attachments)
        return str(sent.id)

    async def shown(self, bot: ContractBot, chat: ContractChat) -> list[Shown]:
        shown = []
        for m in bot.fake.server.bot_messages(chat.ref.id):
            text, interrupted = split_interrupted(m.text)
            reply_to = str(m.reference_id) if m.reference_id is not None else None
            image = any(_is_picture(a) for a in m.attachments)
            shown.append(Shown(text, str(m.id), reply_to, image, interrupted))
        return shown

    def allow_only(self, users: Sequence[str], denied_message: str) -> dict[str, Any]:
        return {"allowed_users": list(users), "denied_message": denied_message}

    def flood(self, bot: ContractBot, chat: ContractChat, count: int) -> bool:
        server: FakeDiscordServer = bot.fake.server
        for route in (SEND, EDIT):
            server.rate_limit_next(route, retry_after=1.0, times=count)
        return True

    def count_429(self, bot: ContractBot) -> int:
        return len(bot.fake.server.rate_limited)
