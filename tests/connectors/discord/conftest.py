"""Fixtures: discord.py's ``Client`` connected to the fake Discord, a small guild world, and a
real relaybot with the Discord connector against the fake Discord and the fake OpenAI server.

The platform pieces (routing, access, media, rate-limit buckets) are tested with real
``discord.Message`` objects that discord.py built from what the fake sent over the gateway;
the connector end to end with ``make_discord_bot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest

from relaybot.connectors.discord.ratelimits import BucketTracker
from relaybot.core.cli.config import parse_config
from relaybot.core.runtime.app import Relaybot
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
    return build_world(fake)


def build_world(fake: FakeDiscordServer) -> World:
    """Add the test guild, its role and people to ``fake``."""
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


# ── a real relaybot with the Discord connector ───────────────────────────────────────────────


async def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (generous timeout, no timing asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def final_texts(fake: FakeDiscordServer, channel_id: int) -> list[str]:
    """The bot's messages in a channel as they read now, oldest first."""
    return [m.text for m in fake.bot_messages(channel_id)]


async def wait_text(
    fake: FakeDiscordServer, channel_id: int, expected: str, timeout: float = 20.0
) -> StoredMessage:
    """Wait until a bot message in the channel reads exactly ``expected``; return it."""

    def find() -> StoredMessage | None:
        return next((m for m in fake.bot_messages(channel_id) if m.text == expected), None)

    found: StoredMessage = await wait_until(find, timeout, f"{expected[:40]!r} in channel {channel_id}")
    return found


@pytest.fixture
async def make_discord_bot(
    tmp_path: Path, fake_openai: Any
) -> AsyncIterator[Callable[..., Awaitable[Relaybot]]]:
    """Factory: ``app = await make_discord_bot(fake, **discord_settings)`` (stopped at teardown).

    The config's provider is the fake OpenAI server and ``[connectors.discord]`` points at the
    fake Discord (``api_base``, ``gateway_url``), so the plugin and config path runs for real.
    """
    apps: list[Relaybot] = []

    async def factory(
        fake: FakeDiscordServer, *, bot: dict[str, Any] | None = None, **settings: Any
    ) -> Relaybot:
        raw = {
            "bot": {"default_provider": "fake", "checkpoint_interval": 0.2, **(bot or {})},
            "storage": {
                "url": f"sqlite+aiosqlite:///{tmp_path / f'bot{len(apps)}.db'}",
                "media_dir": str(tmp_path / "media"),
            },
            "providers": {
                "fake": {
                    "type": "openai", "base_url": fake_openai.base_url, "api_key": "sk-test-key",
                    "model": "gpt-4o-mini",
                }
            },
            "connectors": {
                "discord": {"token": fake.token, "api_base": fake.api_base, "gateway_url": fake.gateway_url,
                            **settings}
            },
        }  # fmt: skip
        app = Relaybot(parse_config(raw, "<test>"))
        apps.append(app)
        await app.start()
        return app

    yield factory
    for app in reversed(apps):
        if app.started:
            await app.stop()


@pytest.fixture
async def plain_fake() -> AsyncIterator[FakeDiscordServer]:
    """A fake Discord with its real limits, discord.py NOT patched (the connector points
    discord.py at it from its config)."""
    async with FakeDiscordServer() as server:
        yield server
