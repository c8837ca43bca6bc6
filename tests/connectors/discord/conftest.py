"""Fixtures: discord.py's ``Client`` connected to the fake Discord, and a small guild world.

The Discord connector class does not exist yet; these tests drive its platform pieces
(routing, access, media, rate-limit buckets) with real ``discord.Message`` objects that
discord.py built from what the fake sent over the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import discord
import pytest

from relaybot.connectors.discord.ratelimits import BucketTracker
from relaybot.core.testing.fake_discord import (
    FakeChannel,
    FakeDiscordServer,
    FakeGuild,
    FakeRole,
    FakeUser,
    StoredMessage,
)


class DiscordBot:
    """A discord.py client on the fake that hands over each message it receives."""

    def __init__(self, fake: FakeDiscordServer, *, intents: discord.Intents | None = None) -> None:
        if intents is None:
            intents = discord.Intents.default()
            intents.message_content = True
        self.fake = fake
        self.tracker = BucketTracker()
        self.client = discord.Client(intents=intents, http_trace=self.tracker.trace_config())
        self.inbox: asyncio.Queue[discord.Message] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

        @self.client.event
        async def on_ready() -> None:
            self._ready.set()

        @self.client.event
        async def on_message(message: discord.Message) -> None:
            if message.author != self.client.user:
                await self.inbox.put(message)

    @property
    def id(self) -> int:
        assert self.client.user is not None
        return self.client.user.id

    async def start(self) -> None:
        await self.client.login(self.fake.token)
        self._task = asyncio.create_task(self.client.connect())
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait([ready, self._task], timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            self._task.result()
        assert self._ready.is_set(), "READY never arrived"

    async def receive(self, sent: StoredMessage) -> discord.Message:
        """The ``discord.Message`` discord.py built for the injected ``sent``."""
        message = await asyncio.wait_for(self.inbox.get(), timeout=10)
        assert message.id == sent.id, "messages arrived out of order"
        return message

    def channel(self, fake_channel: FakeChannel) -> Any:
        found = self.client.get_channel(fake_channel.id)
        assert found is not None
        return found

    async def close(self) -> None:
        await self.client.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)


@dataclass
class World:
    """A guild with two channels, a role and three people."""

    guild: FakeGuild
    general: FakeChannel
    random: FakeChannel
    helpers: FakeRole
    alice: FakeUser  # has the helpers role
    bob: FakeUser  # no role
    other_bot: FakeUser


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscordServer]:
    async with FakeDiscordServer() as server:
        with server.patch_discord_py():
            yield server


@pytest.fixture
def world(fake: FakeDiscordServer) -> World:
    guild = fake.add_guild("Test Guild", channels=["general", "random"])
    helpers = fake.add_role(guild, "helpers")
    alice, bob, other = fake.add_user("alice"), fake.add_user("bob"), fake.add_user("otherbot", bot=True)
    fake.add_member(guild, alice, roles=[helpers])
    fake.add_member(guild, bob)
    fake.add_member(guild, other)
    return World(
        guild, fake.channel(guild, "general"), fake.channel(guild, "random"), helpers, alice, bob, other
    )


@pytest.fixture
async def bot(fake: FakeDiscordServer, world: World) -> AsyncIterator[DiscordBot]:
    bot = DiscordBot(fake)
    await bot.start()
    yield bot
    await bot.close()
