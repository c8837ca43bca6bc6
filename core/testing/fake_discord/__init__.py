"""A fake Discord (REST API v10 + gateway) for tests and benchmarks (part of ``relaybot.testing``).

discord.py talks to it over real HTTP and a real websocket on loopback::

    async with FakeDiscordServer() as fake:
        guild = fake.add_guild("Test", channels=["general"])
        with fake.patch_discord_py():   # Route.BASE + DiscordWebSocket.DEFAULT_GATEWAY
            client = discord.Client(intents=discord.Intents.default() | message_content)
            await client.login(fake.token)
            asyncio.create_task(client.connect())

It enforces the rules a streaming bot runs into on Discord — per-route buckets with real
``X-RateLimit-*`` headers on every answer, realistic 429s (JSON body, ``Retry-After``, ``Via``),
the global limit, the invalid-request ban, 2,000-character content and embed limits with
Discord's 50035 bodies, Missing Access, Unknown Message, interaction deadlines — and speaks the
gateway (HELLO, IDENTIFY with intent checks, READY, GUILD_CREATE, heartbeats, RESUME,
zlib-stream). It records every call, every 429 and each message's texts over time. Modules:

- :mod:`.server` — :class:`FakeDiscordServer` (lifecycle, world building, injection, assertions)
- :mod:`.handlers` — the REST endpoints; :mod:`.rest` — routing, auth, headers, timeline
- :mod:`.ratelimit` — :class:`RateLimits` / buckets, global limit, invalid-request ban
- :mod:`.validation` — Discord's limits and error bodies
- :mod:`.gateway` — the websocket protocol and sessions
- :mod:`.objects`, :mod:`.state`, :mod:`.store` — users, guilds, channels; what is recorded
"""

from relaybot.core.testing.fake_discord.gateway import GatewayEvent
from relaybot.core.testing.fake_discord.objects import FakeChannel, FakeGuild, FakeMember, FakeRole, FakeUser
from relaybot.core.testing.fake_discord.ratelimit import BucketLimit, RateLimits, bucket_hash
from relaybot.core.testing.fake_discord.rest import ResponseHold
from relaybot.core.testing.fake_discord.server import FakeDiscordServer
from relaybot.core.testing.fake_discord.state import FakeInteraction
from relaybot.core.testing.fake_discord.store import (
    CallRecord,
    RateLimitRecord,
    StoredAttachment,
    StoredMessage,
    TextEvent,
)
from relaybot.core.testing.fake_discord.validation import utf16_len

__all__ = [
    "BucketLimit",
    "CallRecord",
    "FakeChannel",
    "FakeDiscordServer",
    "FakeGuild",
    "FakeInteraction",
    "FakeMember",
    "FakeRole",
    "FakeUser",
    "GatewayEvent",
    "RateLimitRecord",
    "RateLimits",
    "ResponseHold",
    "StoredAttachment",
    "StoredMessage",
    "TextEvent",
    "bucket_hash",
    "utf16_len",
]
