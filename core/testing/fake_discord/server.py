"""``FakeDiscordServer``: a loopback Discord (REST v10 + gateway) discord.py talks to for real."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute

from relaybot.core.testing.fake_discord.gateway import Gateway
from relaybot.core.testing.fake_discord.handlers import Handlers, add_attachment
from relaybot.core.testing.fake_discord.objects import (
    GUILD_TEXT,
    PUBLIC_THREAD,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeRole,
    FakeUser,
)
from relaybot.core.testing.fake_discord.ratelimit import RateLimiter, RateLimits
from relaybot.core.testing.fake_discord.rest import ResponseHold, RestApi, ScriptedFailure
from relaybot.core.testing.fake_discord.state import FakeInteraction, State
from relaybot.core.testing.fake_discord.store import (
    CallRecord,
    RateLimitRecord,
    StoredAttachment,
    StoredMessage,
    TextEvent,
)
from relaybot.core.testing.fake_discord.validation import DiscordError, mentioned_ids
from relaybot.core.testing.server import LoopbackServer

ALL_PRIVILEGED = frozenset({"message_content", "members", "presences"})


class FakeDiscordServer:
    """Discord's REST API and gateway on ``127.0.0.1``, enforcing its rules, recording every call.

    Example::

        async with FakeDiscordServer() as fake:
            guild = fake.add_guild("Test", channels=["general"])
            general = guild.channels[next(iter(guild.channels))]
            with fake.patch_discord_py():     # Route.BASE and the gateway URL point here
                client = discord.Client(intents=intents)
                await client.login(fake.token)
                ...
                fake.send_message(general, fake.add_user("alice"), "hello")
            assert fake.messages(general.id)[-1].text == "Hi!"

    Args:
        token: the only bot token accepted (others: 401 / gateway close 4004).
        limits: rate limits (:class:`RateLimits`; ``RateLimits.disabled()`` turns them off).
        clock: time source for buckets, interactions and the timeline (``time.monotonic``).
        granted_intents: privileged intents enabled "in the developer portal"; identifying
            with one that is not closes the gateway with 4014 ``Disallowed intent(s).``
        heartbeat_interval: seconds, sent in HELLO; a client silent for 1.5× is closed (4009).
        interaction_timeout: seconds a bot has to answer an interaction (Discord: 3).
        upload_limit: bytes per uploaded file (Discord's default for bots: 10 MiB).
    """

    def __init__(
        self,
        token: str = "MTAwMDAwMDAwMDAwMDAwMDAw.fake.discord-token",
        *,
        limits: RateLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        granted_intents: Iterable[str] = ALL_PRIVILEGED,
        heartbeat_interval: float = 41.25,
        interaction_timeout: float = 3.0,
        upload_limit: int = 10 * 1024 * 1024,
        bot_name: str = "relaybot",
    ) -> None:
        self.token = token
        self.clock = clock
        self.state = State(bot_name, frozenset(granted_intents), clock)
        self.store = self.state.store
        self.limiter = RateLimiter(limits or RateLimits(), clock)
        self.gateway = Gateway(self.state, token=token, heartbeat_interval=heartbeat_interval, clock=clock,
                               url=lambda: self.gateway_url, notify=self.store.notify)  # fmt: skip
        self.handlers = Handlers(self.state, self.gateway, clock=clock, upload_limit=upload_limit,
                                 interaction_timeout=interaction_timeout,
                                 gateway_url=lambda: self.gateway_url)  # fmt: skip
        self.rest = RestApi(token, self.store, self.limiter, self.handlers.routes())
        self.app = Starlette(routes=[
            Route("/api/v{version:int}/{path:path}", self.rest.handle,
                  methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
            Route("/attachments/{channel_id}/{attachment_id:int}/{filename}", self._serve_attachment),
            WebSocketRoute("/gateway", self.gateway.endpoint),
            WebSocketRoute("/gateway/", self.gateway.endpoint),
        ])  # fmt: skip
        self._server = LoopbackServer(self.app)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on a free loopback port."""
        await self._server.start()

    async def stop(self) -> None:
        """Close gateway connections and stop the server."""
        await self.gateway.drop(1001, "Going away")
        await self._server.stop()

    async def __aenter__(self) -> FakeDiscordServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self._server.url

    @property
    def api_base(self) -> str:
        """The REST base for discord.py's ``Route.BASE`` (``[connectors.discord] api_base``)."""
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        """The gateway websocket (``[connectors.discord] gateway_url``); also what /gateway says."""
        return f"ws://127.0.0.1:{self._server.port}/gateway"

    @contextlib.contextmanager
    def patch_discord_py(self) -> Iterator[None]:
        """Point discord.py at this fake for the ``with`` block, then restore it.

        discord.py has no constructor option for its endpoints: REST URLs are built from the
        class attribute ``discord.http.Route.BASE`` (webhooks and interaction callbacks too)
        and the first gateway connection goes to ``DiscordWebSocket.DEFAULT_GATEWAY`` (then to
        READY's ``resume_gateway_url``). These two are process-wide, hence the restore.
        (``discord.AutoShardedClient`` asks ``GET /gateway/bot`` for its URL, so it needs only
        ``Route.BASE``.)
        """
        import discord.gateway
        import discord.http
        import yarl

        old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # -- the world -------------------------------------------------------------------------

    @property
    def bot(self) -> FakeUser:
        """The bot user (its id is also the application id)."""
        return self.state.bot

    @property
    def application_id(self) -> int:
        """The application id (what slash-command sync and interaction webhooks use)."""
        return self.state.application_id

    def add_user(self, username: str, *, bot: bool = False) -> FakeUser:
        """A new user (``bot=True`` for another bot)."""
        user = FakeUser(self.state.new_id(), username, bot=bot)
        self.state.users[user.id] = user
        return user

    def add_guild(self, name: str = "Test Guild", *, channels: Iterable[str] = ("general",),
                  owner: FakeUser | None = None) -> FakeGuild:  # fmt: skip
        """A guild with text ``channels``, an ``@everyone`` role and the bot as a member.

        Add it before the bot connects (it arrives in GUILD_CREATE), or later: then the fake
        dispatches GUILD_CREATE right away, as when the bot is invited.
        """
        owner = owner or self.add_user(f"{name.lower().replace(' ', '-')}-owner")
        guild = FakeGuild(self.state.new_id(), name, owner.id)
        guild.roles[guild.id] = FakeRole(guild.id, "@everyone")
        self.state.guilds[guild.id] = guild
        for member in (self.bot, owner):
            guild.members[member.id] = FakeMember(member)
        for channel_name in channels:
            self.add_channel(guild, channel_name, _announce=False)
        if self.gateway.sessions:
            self.gateway.dispatch("GUILD_CREATE", guild.to_api())
        return guild

    def add_channel(self, guild: FakeGuild, name: str, *, _announce: bool = True) -> FakeChannel:
        """A text channel in ``guild``."""
        channel = FakeChannel(self.state.new_id(), GUILD_TEXT, name=name, guild_id=guild.id)
        guild.channels[channel.id] = channel
        self.state.channels[channel.id] = channel
        if _announce and self.gateway.sessions:
            self.gateway.dispatch("CHANNEL_CREATE", channel.to_api())
        return channel

    def channel(self, guild: FakeGuild, name: str) -> FakeChannel:
        """The channel of ``guild`` called ``name``."""
        return next(c for c in guild.channels.values() if c.name == name)

    def add_role(self, guild: FakeGuild, name: str, *, permissions: int | None = None) -> FakeRole:
        """A role in ``guild`` (defaults to view + send)."""
        role = FakeRole(self.state.new_id(), name, position=len(guild.roles))
        if permissions is not None:
            role.permissions = permissions
        guild.roles[role.id] = role
        return role

    def add_member(self, guild: FakeGuild, user: FakeUser, *, roles: Iterable[FakeRole] = (),
                   nick: str | None = None) -> FakeMember:  # fmt: skip
        """Make ``user`` a member of ``guild`` with ``roles``."""
        member = FakeMember(user, [r.id for r in roles], nick)
        guild.members[user.id] = member
        return member

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between the bot and ``user``."""
        return self.state.dm_channel(user)

    def add_thread(self, parent: FakeChannel, name: str, *, owner: FakeUser | None = None,
                   starter: StoredMessage | None = None) -> FakeChannel:  # fmt: skip
        """A public thread under ``parent`` started by ``owner`` (a user; default the bot).

        With ``starter`` the thread hangs off that message (and has its id). THREAD_CREATE is
        dispatched.
        """
        thread_id = starter.id if starter is not None else self.state.new_id()
        owner_id = (owner or self.bot).id
        thread = FakeChannel(thread_id, PUBLIC_THREAD, name=name, guild_id=parent.guild_id,
                             parent_id=parent.id, owner_id=owner_id)  # fmt: skip
        self.state.channels[thread.id] = thread
        if parent.guild_id is not None:
            self.state.guilds[parent.guild_id].channels[thread.id] = thread
        self.gateway.dispatch("THREAD_CREATE", thread.to_api() | {"newly_created": True})
        return thread

    def revoke_access(self, channel: FakeChannel) -> None:
        """The bot loses access to ``channel`` (and its threads): REST answers 403 Missing Access."""
        channel.accessible = False

    def add_attachment(
        self, channel: FakeChannel, filename: str, data: bytes | None = None, *,
        content_type: str = "image/png", size: int | None = None,
    ) -> StoredAttachment:  # fmt: skip
        """A file on a loopback URL for a user message; ``size`` without ``data`` is a synthetic
        file of that many bytes, streamed when fetched (the 30 MB attachment)."""
        return add_attachment(self.state, channel.id, filename, data, content_type, self.url, size=size)

    # -- what users do ---------------------------------------------------------------------

    def send_message(
        self, channel: FakeChannel, author: FakeUser, content: str = "", *,
        reply_to: StoredMessage | int | None = None, resolve_reference: bool = True,
        attachments: Iterable[StoredAttachment] = (), embeds: Iterable[dict[str, Any]] = (),
    ) -> StoredMessage:  # fmt: skip
        """``author`` posts ``content`` in ``channel`` (dispatched as MESSAGE_CREATE).

        Mentions are parsed from the text (``<@id>``, ``<@&id>``, ``@everyone``), as Discord
        does. ``reply_to`` makes it a reply; to a deleted message the gateway carries
        ``referenced_message: null`` (discord.py: ``DeletedReferencedMessage``);
        ``resolve_reference=False`` leaves ``referenced_message`` out (discord.py: ``None``,
        fetch it by id), which Discord does too at times.
        """
        reply_id = reply_to.id if isinstance(reply_to, StoredMessage) else reply_to
        message = StoredMessage(
            id=self.state.new_id(), channel_id=channel.id, guild_id=channel.guild_id, author=author,
            content=content, embeds=list(embeds), attachments=list(attachments), reference_id=reply_id,
            member=self.state.member(channel.guild_id, author.id),
        )  # fmt: skip
        users, roles, everyone = mentioned_ids(content)
        message.mentions = [self.state.users[u] for u in dict.fromkeys(users) if u in self.state.users]
        guild = self.state.guilds.get(channel.guild_id) if channel.guild_id else None
        message.mention_roles = [r for r in dict.fromkeys(roles) if guild and r in guild.roles]
        message.mention_everyone = everyone
        self.store.add_message(message)
        channel.last_message_id = message.id
        payload = self.state.message_payload(message)
        if not resolve_reference:
            payload.pop("referenced_message", None)
        self.gateway.dispatch("MESSAGE_CREATE", payload, message=message)
        return message

    def mention_bot(self, channel: FakeChannel, author: FakeUser, text: str, **kwargs: Any) -> StoredMessage:
        """``author`` writes ``@bot text`` in ``channel``."""
        return self.send_message(channel, author, f"{self.bot.mention} {text}", **kwargs)

    def delete_message(self, message: StoredMessage) -> None:
        """Someone deletes ``message`` (MESSAGE_DELETE; the API answers 404 Unknown Message)."""
        self.handlers.delete(message)

    def slash_command(
        self, channel: FakeChannel, user: FakeUser, name: str,
        options: dict[str, str | int | float | bool] | None = None,
    ) -> FakeInteraction:  # fmt: skip
        """``user`` runs ``/name`` in ``channel`` (INTERACTION_CREATE; answer within 3 s)."""
        guild_id = channel.guild_id
        guild_commands = self.state.commands.get(guild_id, []) if guild_id is not None else []
        in_guild = next((c for c in guild_commands if c["name"] == name), None)
        found = in_guild or next((c for c in self.state.commands.get(None, []) if c["name"] == name), None)
        types = {bool: 5, int: 4, float: 10, str: 3}
        data: dict[str, Any] = {"id": found["id"] if found else str(self.state.new_id()), "name": name,
                                "type": 1, "options": [{"name": k, "type": types[type(v)], "value": v}
                                                       for k, v in (options or {}).items()]}  # fmt: skip
        if in_guild is not None:
            data["guild_id"] = str(guild_id)  # only for a command registered to this guild
        interaction = FakeInteraction(self.state.new_id(), self.state.new_token(), channel.id, guild_id,
                                      user, data, self.clock())  # fmt: skip
        self.state.interactions[interaction.id] = interaction
        payload: dict[str, Any] = {
            "id": str(interaction.id), "application_id": str(self.application_id), "type": 2,
            "data": data, "channel_id": str(channel.id), "channel": channel.to_api(),
            "token": interaction.token, "version": 1, "locale": "en-US", "entitlements": [],
            "app_permissions": str((1 << 41) - 1), "context": 0 if guild_id else 1,
            "attachment_size_limit": self.handlers.upload_limit,
            "authorizing_integration_owners": {"0": str(guild_id)} if guild_id else {},
        }  # fmt: skip
        member = self.state.member(guild_id, user.id)
        if guild_id is not None and member is not None:
            payload["guild_id"] = str(guild_id)
            payload["guild_locale"] = "en-US"
            payload["member"] = member.to_api() | {"permissions": str((1 << 41) - 1)}
        else:
            payload["user"] = user.to_api()
        self.gateway.dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def drop_gateway(self, code: int = 4000, reason: str = "Unknown error") -> int:
        """Close the bot's gateway connections (resumable): discord.py reconnects and RESUMEs."""
        return await self.gateway.drop(code, reason)

    # -- scripting -------------------------------------------------------------------------

    def rate_limit_next(self, route: str, retry_after: float = 1.0, *, is_global: bool = False,
                        with_via: bool = True, times: int = 1) -> None:  # fmt: skip
        """Answer the next ``times`` calls of ``route`` (``"POST /channels/{channel_id}/messages"``)
        with a 429 of ``retry_after`` seconds; ``with_via=False`` looks like a Cloudflare ban."""
        for _ in range(times):
            self.rest.scripted[route].append(ScriptedFailure(retry_after=retry_after, is_global=is_global,
                                                             with_via=with_via))  # fmt: skip

    def hold_responses(self, route: str) -> ResponseHold:
        """Hold back the answers of ``route`` until ``.release()`` (``.pending`` counts them)."""
        hold = self.rest.holds[route] = ResponseHold(self.store.notify)
        return hold

    def fail_next(self, route: str, status: int, code: int, message: str) -> None:
        """Answer the next call of ``route`` with Discord's error ``{"message", "code"}``."""
        self.rest.scripted[route].append(ScriptedFailure(error=DiscordError(status, code, message)))

    # -- assertions ------------------------------------------------------------------------

    @property
    def calls(self) -> list[CallRecord]:
        """Every REST call, in order."""
        return self.store.calls

    def calls_to(self, route: str, *, channel_id: int | None = None) -> list[CallRecord]:
        """Calls of one route template (optionally in one channel)."""
        return [c for c in self.store.calls
                if c.route == route and (channel_id is None or c.channel_id == channel_id)]  # fmt: skip

    @property
    def rate_limited(self) -> list[RateLimitRecord]:
        """Every 429 answered (scripted or earned)."""
        return self.store.rate_limited

    @property
    def invalid_requests(self) -> int:
        """401/403/429 answers in the last 10 minutes (Discord bans an IP at 10,000)."""
        return self.limiter.invalid_requests

    def messages(self, channel_id: int, *, include_deleted: bool = False) -> list[StoredMessage]:
        """Messages in a channel, oldest first."""
        return [m for m in self.store.by_channel.get(channel_id, []) if include_deleted or not m.deleted]

    @property
    def timeline(self) -> list[TextEvent]:
        """Every create, edit and delete users saw, in order, with the text shown then."""
        return self.store.timeline

    def bot_messages(self, channel_id: int) -> list[StoredMessage]:
        """The bot's (not deleted) messages in a channel, oldest first."""
        return [m for m in self.messages(channel_id) if m.author.id == self.bot.id]

    def commands(self, guild_id: int | None = None) -> list[dict[str, Any]]:
        """The synced application commands (global, or of one guild)."""
        return self.state.commands.get(guild_id, [])

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return once ``predicate()`` holds (re-checked on every call and gateway change)."""
        await self.store.wait_for(predicate, timeout)

    # -- attachments -----------------------------------------------------------------------

    async def _serve_attachment(self, request: Request) -> Response:
        found = self.store.attachments.get(request.path_params["attachment_id"])
        if found is None or found.filename != request.path_params["filename"]:
            return JSONResponse({"message": "404: Not Found", "code": 0}, 404)
        found.downloads += 1
        self.store.notify()
        headers = {"Content-Length": str(found.size)}
        if found.data is not None:
            return Response(found.data, media_type=found.content_type, headers=headers)
        return StreamingResponse(_zeros(found.size), media_type=found.content_type, headers=headers)


async def _zeros(size: int, chunk: int = 1 << 20) -> Any:
    sent = 0
    block = bytes(chunk)
    while sent < size:
        n = min(chunk, size - sent)
        yield block[:n]
        sent += n
