"""The fake Discord, driven by discord.py for real (REST over loopback HTTP, gateway websocket)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands

from relaybot.core.testing.fake_discord import (
    BucketLimit,
    FakeChannel,
    FakeDiscordServer,
    FakeGuild,
    FakeUser,
    RateLimits,
)

SEND = "POST /channels/{channel_id}/messages"
EDIT = "PATCH /channels/{channel_id}/messages/{message_id}"


class ManualClock:
    """A clock tests advance by hand, so bucket results never depend on machine speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Bot:
    """A discord.py ``Client`` connected to the fake, collecting what it receives."""

    def __init__(self, fake: FakeDiscordServer, intents: discord.Intents) -> None:
        self.fake = fake
        self.client = discord.Client(intents=intents)
        self.messages: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.ready = asyncio.Event()
        self.resumed = asyncio.Event()
        self.tree = app_commands.CommandTree(self.client)
        self.task: asyncio.Task[None] | None = None

        @self.client.event
        async def on_ready() -> None:
            self.ready.set()

        @self.client.event
        async def on_resumed() -> None:
            self.resumed.set()

        @self.client.event
        async def on_message(message: discord.Message) -> None:
            await self.messages.put(message)

    async def start(self) -> None:
        await self.client.login(self.fake.token)
        self.task = asyncio.create_task(self.client.connect())
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait([ready, self.task], timeout=20, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            ready.cancel()
            self.task.result()  # re-raise what stopped the connection
        assert self.ready.is_set(), "READY never arrived"

    async def next_message(self, *, from_user: bool = True) -> discord.Message:
        """The next message received (by default skipping the bot's own)."""
        while True:
            message = await asyncio.wait_for(self.messages.get(), timeout=10)
            if not from_user or message.author != self.client.user:
                return message

    async def close(self) -> None:
        """Close the client; a connection that died of an error (a fake bug) fails the test."""
        await self.client.close()
        if self.task is not None:
            with contextlib.suppress(discord.PrivilegedIntentsRequired):
                await asyncio.wait_for(self.task, timeout=10)


def content_intents() -> discord.Intents:
    intents = discord.Intents.default()
    intents.message_content = True
    return intents


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscordServer]:
    async with FakeDiscordServer() as server:
        with server.patch_discord_py():
            yield server


@pytest.fixture
async def world(fake: FakeDiscordServer) -> tuple[FakeGuild, FakeChannel, FakeUser]:
    guild = fake.add_guild("Test Guild", channels=["general", "random"])
    alice = fake.add_user("alice")
    fake.add_member(guild, alice, roles=[fake.add_role(guild, "helpers")])
    return guild, fake.channel(guild, "general"), alice


@pytest.fixture
async def bot(fake: FakeDiscordServer, world: Any) -> AsyncIterator[Bot]:
    bot = Bot(fake, content_intents())
    await bot.start()
    yield bot
    await bot.close()


# -- start-up and the gateway --------------------------------------------------------------


async def test_login_connect_ready_and_an_injected_message(
    fake: FakeDiscordServer, world: Any, bot: Bot
) -> None:
    guild, general, alice = world
    client = bot.client
    assert client.user is not None and client.user.id == fake.bot.id
    assert client.application_id == fake.application_id
    cached = client.get_guild(guild.id)
    assert cached is not None and {c.name for c in cached.text_channels} == {"general", "random"}
    assert "helpers" in {r.name for r in cached.roles}
    assert [c.route for c in fake.calls[:2]] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    # discord.py asks for zstd-stream when zstandard is importable, zlib-stream otherwise
    assert fake.gateway.compressions in (["zlib-stream"], ["zstd-stream"])

    fake.send_message(general, alice, "hello there")
    received = await bot.next_message()
    assert received.content == "hello there"
    assert received.channel.id == general.id
    assert isinstance(received.author, discord.Member)
    assert [r.name for r in received.author.roles if not r.is_default()] == ["helpers"]


async def test_an_autosharded_client_finds_the_gateway_through_rest() -> None:
    async with FakeDiscordServer() as fake:
        fake.add_guild()
        old = discord.http.Route.BASE
        discord.http.Route.BASE = fake.api_base  # only REST: the gateway URL comes from /gateway/bot
        try:
            client = discord.AutoShardedClient(intents=discord.Intents.default())
            ready = asyncio.Event()
            client.event(_setter("on_ready", ready))
            await client.login(fake.token)
            task = asyncio.create_task(client.connect())
            await asyncio.wait_for(ready.wait(), timeout=20)
            assert client.shard_count == 1 and len(client.guilds) == 1
            assert "GET /gateway/bot" in [c.route for c in fake.calls]
            await client.close()
            await asyncio.wait_for(task, timeout=10)
        finally:
            discord.http.Route.BASE = old


def _setter(name: str, event: asyncio.Event) -> Any:
    async def handler() -> None:
        event.set()

    handler.__name__ = name
    return handler


async def test_a_wrong_token_is_a_login_failure(fake: FakeDiscordServer) -> None:
    client = discord.Client(intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()
    assert fake.calls[-1].status == 401


async def test_message_content_intent_not_granted_closes_with_4014() -> None:
    async with FakeDiscordServer(granted_intents=()) as fake:
        with fake.patch_discord_py():
            bot = Bot(fake, content_intents())
            with pytest.raises(discord.PrivilegedIntentsRequired):
                await bot.start()
            await bot.close()
        assert any(e.close_code == 4014 for e in fake.gateway.events)


async def test_without_the_content_intent_guild_text_is_empty_unless_the_bot_is_mentioned(
    fake: FakeDiscordServer, world: Any
) -> None:
    _, general, alice = world
    bot = Bot(fake, discord.Intents.default())
    await bot.start()
    try:
        fake.send_message(general, alice, "nobody can read this")
        assert (await bot.next_message()).content == ""
        fake.mention_bot(general, alice, "but this one")
        mentioned = await bot.next_message()
        assert mentioned.content == f"<@{fake.bot.id}> but this one"
        assert bot.client.user in mentioned.mentions
        fake.send_message(fake.dm_channel(alice), alice, "DMs are readable")
        assert (await bot.next_message()).content == "DMs are readable"
    finally:
        await bot.close()


async def test_a_dropped_gateway_is_resumed_and_nothing_is_lost(
    fake: FakeDiscordServer, world: Any, bot: Bot
) -> None:
    _, general, alice = world
    fake.send_message(general, alice, "before")
    assert (await bot.next_message()).content == "before"
    assert await fake.drop_gateway() == 1
    fake.send_message(general, alice, "while disconnected")  # buffered, replayed on RESUME
    await asyncio.wait_for(bot.resumed.wait(), timeout=20)
    assert (await bot.next_message()).content == "while disconnected"
    fake.send_message(general, alice, "after")
    assert (await bot.next_message()).content == "after"
    assert bot.messages.empty()  # the replayed message came exactly once
    assert (fake.gateway.identifies, fake.gateway.resumes) == (1, 1)
    # the stream after the drop still works in both directions
    await bot.client.get_channel(general.id).send("still here")  # type: ignore[union-attr]
    assert fake.bot_messages(general.id)[-1].text == "still here"


async def test_a_reconnect_request_is_followed_by_a_resume(
    fake: FakeDiscordServer, world: Any, bot: Bot
) -> None:
    _, general, alice = world
    fake.gateway.request_reconnect()
    await asyncio.wait_for(bot.resumed.wait(), timeout=20)
    assert (fake.gateway.identifies, fake.gateway.resumes) == (1, 1)
    fake.send_message(general, alice, "after the reconnect")
    assert (await bot.next_message()).content == "after the reconnect"


async def test_a_non_resumable_invalid_session_makes_discord_py_identify_again(
    fake: FakeDiscordServer, world: Any, bot: Bot
) -> None:
    bot.ready.clear()
    fake.gateway.invalidate_sessions(resumable=False)
    await asyncio.wait_for(bot.ready.wait(), timeout=20)
    assert fake.gateway.identifies == 2


async def test_heartbeats_are_enforced_and_frames_are_zlib_streamed() -> None:
    async with FakeDiscordServer(heartbeat_interval=0.2) as fake:
        inflate = zlib.decompressobj()
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json&compress=zlib-stream") as ws:
                frame = await ws.receive(timeout=10)
                assert frame.type is aiohttp.WSMsgType.BINARY and frame.data.endswith(b"\x00\x00\xff\xff")
                hello = json.loads(inflate.decompress(frame.data))
                assert hello == {"op": 10, "d": {"heartbeat_interval": 200}}
                await ws.send_json({"op": 1, "d": None})
                ack = json.loads(inflate.decompress((await ws.receive(timeout=10)).data))
                assert ack["op"] == 11
                # no more heartbeats: the fake gives up on this client
                closed = await ws.receive(timeout=10)
                assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 4009


async def test_zstd_stream_frames_decode_with_one_streaming_decompressor() -> None:
    zstandard = pytest.importorskip("zstandard")
    async with FakeDiscordServer() as fake:
        inflate = zstandard.ZstdDecompressor().decompressobj()
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(fake.gateway_url + "?v=10&encoding=json&compress=zstd-stream") as ws:
                hello = json.loads(inflate.decompress((await ws.receive(timeout=10)).data))
                assert hello["op"] == 10
                await ws.send_json({"op": 1, "d": None})
                assert json.loads(inflate.decompress((await ws.receive(timeout=10)).data))["op"] == 11


# -- messages, limits and buckets ----------------------------------------------------------


async def test_send_and_edit_answer_with_bucket_headers(
    fake: FakeDiscordServer, world: Any, bot: Bot
) -> None:
    guild, general, _ = world
    channel = bot.client.get_channel(general.id)
    other = bot.client.get_channel(fake.channel(guild, "random").id)
    sent = await channel.send("first")  # type: ignore[union-attr]
    await sent.edit(content="first, edited")
    await other.send("elsewhere")  # type: ignore[union-attr]
    send1, edit, send2 = fake.calls_to(SEND)[0], fake.calls_to(EDIT)[0], fake.calls_to(SEND)[1]
    for call in (send1, edit, send2):
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Reset-After",
                "X-RateLimit-Bucket"} <= set(call.headers)  # fmt: skip
    assert (send1.headers["X-RateLimit-Limit"], send1.headers["X-RateLimit-Remaining"]) == ("5", "4")
    # one bucket hash per route group, shared by channels; counted per channel
    assert send1.headers["X-RateLimit-Bucket"] == send2.headers["X-RateLimit-Bucket"]
    assert send1.headers["X-RateLimit-Bucket"] != edit.headers["X-RateLimit-Bucket"]
    assert send2.headers["X-RateLimit-Remaining"] == "4"
    assert fake.bot_messages(general.id)[0].versions == ["first", "first, edited"]
    seen = [(e.kind, e.channel_id, e.text) for e in fake.timeline]
    assert seen == [
        ("created", general.id, "first"),
        ("edited", general.id, "first, edited"),
        ("created", other.id, "elsewhere"),
    ]


async def test_discord_py_paces_itself_by_the_headers_without_a_429() -> None:
    limits = RateLimits(send=BucketLimit(3, 0.5))
    async with FakeDiscordServer(limits=limits) as fake:
        with fake.patch_discord_py():
            guild = fake.add_guild()
            bot = Bot(fake, content_intents())
            await bot.start()
            try:
                channel = bot.client.get_channel(fake.channel(guild, "general").id)
                await asyncio.gather(*(channel.send(f"m{i}") for i in range(7)))  # type: ignore[union-attr]
            finally:
                await bot.close()
        assert fake.rate_limited == []
        assert sorted(m.text for m in fake.bot_messages(fake.channel(guild, "general").id)) == [
            f"m{i}" for i in range(7)
        ]


async def test_a_429_with_via_is_slept_out_and_retried(fake: FakeDiscordServer, world: Any, bot: Bot) -> None:
    _, general, _ = world
    fake.rate_limit_next(SEND, retry_after=0.3)
    await bot.client.get_channel(general.id).send("patience")  # type: ignore[union-attr]
    assert [c.status for c in fake.calls_to(SEND)] == [429, 200]
    assert [m.text for m in fake.bot_messages(general.id)] == ["patience"]
    (limited,) = fake.rate_limited
    assert (limited.route, limited.retry_after, limited.scope) == (SEND, 0.3, "user")
    assert fake.invalid_requests == 1


async def test_a_429_without_via_looks_like_a_cloudflare_ban(
    fake: FakeDiscordServer, world: Any, bot: Bot
) -> None:
    _, general, _ = world
    fake.rate_limit_next(SEND, retry_after=0.3, with_via=False)
    with pytest.raises(discord.HTTPException) as raised:
        await bot.client.get_channel(general.id).send("nope")  # type: ignore[union-attr]
    assert raised.value.status == 429
    assert len(fake.calls_to(SEND)) == 1  # raised at once, no retry


async def test_an_earned_429_has_discords_body_and_headers() -> None:
    clock = ManualClock()
    async with FakeDiscordServer(clock=clock) as fake:
        guild = fake.add_guild()
        url = f"{fake.api_base}/channels/{fake.channel(guild, 'general').id}/messages"
        headers = {"Authorization": f"Bot {fake.token}"}
        async with aiohttp.ClientSession() as http:
            for i in range(5):
                async with http.post(url, json={"content": f"{i}"}, headers=headers) as resp:
                    assert resp.status == 200
            async with http.post(url, json={"content": "one too many"}, headers=headers) as resp:
                assert resp.status == 429
                body = await resp.json()
                assert body == {"message": "You are being rate limited.", "retry_after": 5.0, "global": False}
                assert resp.headers["Retry-After"] == "5" and resp.headers["Via"]
                assert resp.headers["X-RateLimit-Scope"] == "user"
                assert resp.headers["X-RateLimit-Remaining"] == "0"
            clock.now += 5.0  # the window is over
            async with http.post(url, json={"content": "again"}, headers=headers) as resp:
                assert resp.status == 200 and resp.headers["X-RateLimit-Remaining"] == "4"


async def test_the_global_limit_and_the_invalid_request_ban() -> None:
    clock = ManualClock()
    limits = RateLimits(other=None, global_per_second=3, ban_threshold=4)
    async with FakeDiscordServer(clock=clock, limits=limits) as fake:
        me = f"{fake.api_base}/users/@me"
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(4):
                async with http.get(me, headers={"Authorization": f"Bot {fake.token}"}) as resp:
                    statuses.append(resp.status)
                    if resp.status == 429:
                        assert resp.headers["X-RateLimit-Global"] == "true"
                        assert (await resp.json())["global"] is True
            assert statuses == [200, 200, 200, 429]
            for _ in range(3):  # 401s count as invalid requests too
                async with http.get(me, headers={"Authorization": "Bot wrong"}) as resp:
                    assert resp.status == 401
            assert fake.limiter.banned
            clock.now += 2
            async with http.get(me, headers={"Authorization": f"Bot {fake.token}"}) as resp:
                assert resp.status == 429 and "Via" not in resp.headers
                assert "1015" in await resp.text()


async def test_content_over_2000_is_refused_with_50035(fake: FakeDiscordServer, world: Any, bot: Bot) -> None:
    _, general, _ = world
    channel = bot.client.get_channel(general.id)
    with pytest.raises(discord.HTTPException) as raised:
        await channel.send("x" * 2001)  # type: ignore[union-attr]
    assert (raised.value.status, raised.value.code) == (400, 50035)
    assert "Must be 2000 or fewer in length." in raised.value.text
    assert fake.bot_messages(general.id) == []
    await channel.send("x" * 2000)  # type: ignore[union-attr]
    # counted in UTF-16 units: an emoji outside the BMP counts twice
    with pytest.raises(discord.HTTPException):
        await channel.send("😀" * 1001)  # type: ignore[union-attr]
    sent = await channel.send("😀" * 1000)  # type: ignore[union-attr]
    with pytest.raises(discord.HTTPException) as raised:
        await sent.edit(content="y" * 2001)
    assert raised.value.code == 50035
    assert [len(m.text) for m in fake.bot_messages(general.id)] == [2000, 1000]


async def test_embed_limits(fake: FakeDiscordServer, world: Any, bot: Bot) -> None:
    _, general, _ = world
    channel = bot.client.get_channel(general.id)
    with pytest.raises(discord.HTTPException) as raised:
        await channel.send(embed=discord.Embed(description="d" * 4097))  # type: ignore[union-attr]
    assert "Must be 4096 or fewer in length." in raised.value.text
    too_big = discord.Embed(title="t" * 256, description="d" * 4096)
    for i in range(3):
        too_big.add_field(name=f"f{i}", value="v" * 1000)
    with pytest.raises(discord.HTTPException) as raised:
        await channel.send(embed=too_big)  # type: ignore[union-attr]
    assert "Embed size exceeds maximum size of 6000" in raised.value.text
    await channel.send(embed=discord.Embed(description="d" * 4096))  # type: ignore[union-attr]
    assert fake.bot_messages(general.id)[0].text == "d" * 4096


async def test_allowed_mentions_are_recorded_and_honoured(
    fake: FakeDiscordServer, world: Any, bot: Bot
) -> None:
    _, general, alice = world
    channel = bot.client.get_channel(general.id)
    text = f"@everyone look, {alice.mention}"
    await channel.send(text, allowed_mentions=discord.AllowedMentions.none())  # type: ignore[union-attr]
    await channel.send(text)  # type: ignore[union-attr]
    quiet, loud = fake.bot_messages(general.id)
    assert quiet.allowed_mentions == {"parse": []}
    assert (quiet.mentions, quiet.mention_everyone) == ([], False)
    assert ([u.id for u in loud.mentions], loud.mention_everyone) == ([alice.id], True)


async def test_typing_is_recorded(fake: FakeDiscordServer, world: Any, bot: Bot) -> None:
    _, general, _ = world
    async with bot.client.get_channel(general.id).typing():  # type: ignore[union-attr]
        pass
    assert [c.status for c in fake.calls_to("POST /channels/{channel_id}/typing", channel_id=general.id)] == [
        204
    ]


async def test_replies_resolved_deleted_and_unresolved(fake: FakeDiscordServer, world: Any, bot: Bot) -> None:
    _, general, alice = world
    original = fake.send_message(general, alice, "the original")
    received = await bot.next_message()
    answer = await received.reply("a reply", mention_author=False)
    stored = fake.bot_messages(general.id)[-1]
    assert stored.reference_id == original.id and answer.reference is not None

    follow = fake.send_message(general, alice, "replying to the bot", reply_to=stored)
    got = await bot.next_message()
    assert got.reference is not None and isinstance(got.reference.resolved, discord.Message)
    assert got.reference.resolved.id == stored.id

    fake.delete_message(original)
    fake.send_message(general, alice, "replying to a deleted one", reply_to=original)
    got = await bot.next_message()
    assert isinstance(got.reference.resolved, discord.DeletedReferencedMessage)  # type: ignore[union-attr]

    fake.send_message(general, alice, "unresolved", reply_to=follow, resolve_reference=False)
    got = await bot.next_message()
    assert got.reference.resolved is None and got.reference.message_id == follow.id  # type: ignore[union-attr]
    fetched = await got.channel.fetch_message(follow.id)
    assert fetched.content == "replying to the bot"

    with pytest.raises(discord.NotFound) as raised:
        await got.channel.fetch_message(original.id)
    assert raised.value.code == 10008


async def test_lost_access_is_403_and_a_deleted_message_404(
    fake: FakeDiscordServer, world: Any, bot: Bot
) -> None:
    _, general, _ = world
    channel = bot.client.get_channel(general.id)
    sent = await channel.send("soon gone")  # type: ignore[union-attr]
    await sent.delete()
    with pytest.raises(discord.NotFound) as missing:
        await sent.edit(content="too late")
    assert (missing.value.status, missing.value.code) == (404, 10008)
    fake.revoke_access(general)
    with pytest.raises(discord.Forbidden) as forbidden:
        await channel.send("hello?")  # type: ignore[union-attr]
    assert (forbidden.value.code, forbidden.value.text) == (50001, "Missing Access")
    assert fake.invalid_requests == 1  # one refusal, no retry storm


async def test_threads_are_channels_with_a_parent(fake: FakeDiscordServer, world: Any, bot: Bot) -> None:
    _, general, alice = world
    started = fake.send_message(general, alice, "start a thread here")
    await bot.next_message()
    created = asyncio.ensure_future(bot.client.wait_for("thread_create", timeout=10))
    thread = fake.add_thread(general, "a topic", owner=alice, starter=started)
    assert (await created).id == thread.id
    fake.send_message(thread, alice, "inside the thread")
    got = await bot.next_message()
    assert isinstance(got.channel, discord.Thread)
    assert (got.channel.id, got.channel.parent_id, got.channel.owner_id) == (thread.id, general.id, alice.id)
    parent = bot.client.get_channel(general.id)
    mine = await parent.create_thread(name="bot's thread", type=discord.ChannelType.public_thread)  # type: ignore[union-attr]
    assert fake.state.channels[mine.id].owner_id == fake.bot.id


async def test_attachments_on_loopback_urls(fake: FakeDiscordServer, world: Any, bot: Bot) -> None:
    _, general, alice = world
    png = _png()
    image = fake.add_attachment(general, "cat.png", png)
    huge = fake.add_attachment(general, "huge.png", size=30 * 1024 * 1024)
    fake.send_message(general, alice, "look", attachments=[image, huge])
    got = await bot.next_message()
    small, big = got.attachments
    assert (small.filename, small.content_type, small.width, small.height) == ("cat.png", "image/png", 2, 3)
    assert small.url.startswith(fake.url) and await small.read() == png
    assert big.size == 30 * 1024 * 1024
    await got.channel.send("here is one", file=discord.File(io.BytesIO(png), "gen.png"))
    uploaded = fake.bot_messages(general.id)[-1].attachments[0]
    assert uploaded.data == png and uploaded.filename == "gen.png"
    async with aiohttp.ClientSession() as http, http.get(uploaded.url) as resp:
        assert await resp.read() == png
    with pytest.raises(discord.HTTPException) as raised:
        await got.channel.send(file=discord.File(io.BytesIO(bytes(11 * 1024 * 1024)), "big.bin"))
    assert (raised.value.status, raised.value.code) == (413, 40005)


# -- application commands and interactions -------------------------------------------------


async def test_slash_commands_sync_and_an_interaction_is_answered(
    fake: FakeDiscordServer, world: Any, bot: Bot
) -> None:
    _, general, alice = world
    seen: list[str] = []

    @bot.tree.command(name="ask", description="Ask the assistant")
    async def ask(interaction: discord.Interaction, question: str) -> None:
        seen.append(question)
        await interaction.response.send_message(f"you asked: {question}")
        await interaction.followup.send("and a follow-up")

    @bot.tree.command(name="slow", description="Think first")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content="done thinking")

    synced = await bot.tree.sync()
    assert sorted(c.name for c in synced) == ["ask", "slow"]
    assert sorted(c["name"] for c in fake.commands()) == ["ask", "slow"]
    assert all(c.id for c in synced)

    ask_interaction = fake.slash_command(general, alice, "ask", {"question": "why?"})
    await fake.wait_for(lambda: len(ask_interaction.followup_ids) == 1)
    assert seen == ["why?"]
    assert [m.text for m in fake.bot_messages(general.id)] == ["you asked: why?", "and a follow-up"]

    slow_interaction = fake.slash_command(general, alice, "slow")
    await fake.wait_for(lambda: fake.bot_messages(general.id)[-1].text == "done thinking")
    original = fake.store.messages[slow_interaction.original_id or 0]
    assert original.versions == ["", "done thinking"] and original.flags == 0
    assert slow_interaction.response_type == 5


async def test_an_interaction_answered_twice_or_late_is_refused() -> None:
    clock = ManualClock()
    async with FakeDiscordServer(clock=clock) as fake:
        guild = fake.add_guild()
        user = fake.add_user("bob")
        fake.add_member(guild, user)
        general = fake.channel(guild, "general")
        async with aiohttp.ClientSession() as http:
            first = fake.slash_command(general, user, "ping")
            url = f"{fake.api_base}/interactions/{first.id}/{first.token}/callback"
            answer = {"type": 4, "data": {"content": "pong"}}
            async with http.post(url, json=answer) as resp:
                assert resp.status == 204
            async with http.post(url, json=answer) as resp:
                assert (resp.status, (await resp.json())["code"]) == (400, 40060)
            late = fake.slash_command(general, user, "ping")
            clock.now += 3.5
            url = f"{fake.api_base}/interactions/{late.id}/{late.token}/callback"
            async with http.post(url, json=answer) as resp:
                assert (resp.status, (await resp.json())["code"]) == (404, 10062)
        assert [m.text for m in fake.bot_messages(general.id)] == ["pong"]


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (2, 3), "red").save(buffer, "PNG")
    return buffer.getvalue()
