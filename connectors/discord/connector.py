"""``DiscordConnector``: discord.py for the wire, relaybot's scheduler for the pace.

Lifecycle: :meth:`~DiscordConnector.start` logs in (``GET /users/@me``: a refused token is a
``ConfigError`` naming ``connectors.NAME.token``), opens the gateway with the privileged
message-content intent (Discord closing it with 4014 is a ``ConfigError`` saying where to
enable the intent), syncs relaybot's commands as slash commands and starts taking messages.
:meth:`~DiscordConnector.stop` stops intake; the REST client stays usable until
:meth:`~DiscordConnector.aclose`, so final edits ("interrupted") still go out.

Incoming (:mod:`.routing`): DMs, mentions, replies to the bot, text commands and threads the
bot takes part in; a thread is its own chat; a reply to any message sets ``reply_to`` so the
core branches the conversation from it. Image attachments (≤ ``max_download_mb``) are
downloaded into the media store before the message is handed over; larger ones are refused
with a message. Allow-lists (:mod:`.access`) run as this connector's ``check_access`` hook.

Outgoing primitives never sleep on a 429 and never retry: a 429 raises
``PlatformRateLimitError`` at once (:meth:`.BucketTracker.raising_429s`), a 403 marks the
channel as lost for a while (``MessageGoneError`` without a request, so a lost channel never
becomes a retry storm: Discord bans IPs at 10,000 invalid requests in 10 minutes), and every
answer's ``X-RateLimit-*`` headers — in-flight requests counted — go to the scheduler through
:meth:`~relaybot.BaseConnector.observe_bucket`. Every message is sent with
``allowed_mentions`` none: a model can never ping ``@everyone``, a role or a person.
Mid-stream frames carry a "still writing" line that the final edit removes; the final text
is the model's Markdown as is (Discord renders standard Markdown).

Known limitation: discord.py builds REST URLs from the process-wide ``Route.BASE`` and opens
the gateway at the process-wide ``DiscordWebSocket.DEFAULT_GATEWAY``; ``api_base`` and
``gateway_url`` set them, so all Discord connectors of one process share one endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from typing import Any, Literal, cast

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands

from relaybot import (
    NOTICE,
    AccessDecision,
    BaseConnector,
    ChatKey,
    ConfigError,
    ConnectorHost,
    IncomingMessage,
    MessageGoneError,
    Outgoing,
    PlatformError,
    PlatformRateLimitError,
    RelaybotError,
    StreamPolicy,
    User,
    hookimpl,
    mark_interrupted,
    redact,
)

from .access import AccessList
from .config import DiscordConfig
from .media import download_image, image_file
from .ratelimits import EDIT_ROUTE, SEND_ROUTE, BucketTracker, RateLimitedResponse
from .routing import Routed, Router

log = logging.getLogger("relaybot.connectors.discord")

#: seconds a channel that answered 403 is not written to again (one request, not a storm)
LOST_FOR = 300.0
#: seconds between two typing requests into one channel (Discord shows one for ~10 s)
TYPING_EVERY = 8.0
#: how a Cloudflare ban (a 429 without ``Via``) pauses every request
BAN_PAUSE = 60.0
#: how many ids of messages the bot sent are remembered (for replies discord.py did not resolve)
REMEMBERED_IDS = 20_000
#: Discord's limits on slash commands
_MAX_SLASH = 100
_DELETE_ROUTE = "DELETE /channels/{channel_id}/messages/{message_id}"
#: the scheduler's request kinds this connector reports buckets for
Method = Literal["send", "edit", "image", "delete"]
_ROUTES: dict[str, str] = {
    "send": SEND_ROUTE,
    "image": SEND_ROUTE,
    "edit": EDIT_ROUTE,
    "delete": _DELETE_ROUTE,
}
_NO_MENTIONS = discord.AllowedMentions.none()
# the endpoints this process's discord.py was pointed at (Route.BASE and the gateway are global)
_ENDPOINTS: dict[str, tuple[str, str]] = {}
_DEFAULTS: list[Any] = []


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, as Discord counts."""
    return len(text.encode("utf-16-le")) // 2


def policy_for(config: DiscordConfig) -> StreamPolicy:
    """The streaming policy of a Discord bot with these settings."""
    return StreamPolicy(
        max_length=config.max_length,
        length_unit="utf16",
        private_interval=config.channel_interval,
        group_interval=config.channel_interval,
        global_rate=config.global_rate,
        can_edit=True,
        native_draft=False,
        typing_interval=4.5,
        chain_parts=True,
    )


class DiscordHooks:
    """Hook implementations bound to one connector: its allow-lists."""

    def __init__(self, connector: DiscordConnector) -> None:
        self.connector = connector

    @hookimpl
    def check_access(self, message: IncomingMessage) -> AccessDecision | None:
        """Deny senders the allow-lists leave out (only for this connector's messages)."""
        connector = self.connector
        if message.chat.platform != connector.name or connector.access.open:
            return None
        raw = message.raw
        if raw is None:
            return None  # re-answered after a restart: it was allowed when it arrived
        result = connector.access.check(_as_message(raw))
        if result.allowed:
            return None
        log.info("%s: denied user %s (%s)", message.chat, message.user.id, result.reason)
        return AccessDecision.deny(connector.access.denied)


class DiscordConnector(BaseConnector):
    """A Discord bot (one ``[connectors.NAME]`` table). See the module docstring."""

    def __init__(self, name: str, config: DiscordConfig) -> None:
        self.name = name
        self.config = config
        self.policy = policy_for(config)
        self.tracker = BucketTracker()
        self.access = AccessList(
            users=config.allowed_users, roles=config.allowed_roles, channels=config.allowed_channels,
            guilds=config.allowed_guilds, admin_users=config.admin_users, admin_roles=config.admin_roles,
            allow_dms=config.allow_dms, denied=config.denied_message,
        )  # fmt: skip
        self.client: discord.Client | None = None
        self.tree: app_commands.CommandTree[discord.Client] | None = None
        self.router: Router | None = None
        self.host: ConnectorHost | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._accepting = False
        self._closed = False
        self._max_bytes = int(config.max_download_mb * 1024 * 1024)
        self._ours: OrderedDict[int, None] = OrderedDict()
        self._lost: dict[int, float] = {}
        self._typing_at: dict[int, float] = {}
        self._paused_until = 0.0
        self._tasks: set[asyncio.Future[None]] = set()
        #: gateway RESUMEs seen (a dropped connection that came back)
        self.resumes = 0

    # ── lifecycle ───────────────────────────────────────────────────────────────────────────

    async def start(self, host: ConnectorHost) -> None:
        """Log in, connect the gateway, sync slash commands, take messages.

        Raises ``ConfigError`` when Discord refuses the token or the message-content intent,
        ``PlatformError`` when Discord cannot be reached.
        """
        self.host = host
        self._point_discord_py()
        try:
            await self._start()
        except BaseException:
            self._release_endpoints()
            raise

    async def _start(self) -> None:
        host = self.host
        assert host is not None
        intents = discord.Intents.default()
        intents.message_content = True
        client = discord.Client(
            intents=intents, http_trace=self.tracker.trace_config(), allowed_mentions=_NO_MENTIONS,
            max_messages=None, chunk_guilds_at_startup=False,
        )  # fmt: skip
        self.client = client
        client.event(self._named("on_ready", self._on_ready))
        client.event(self._named("on_resumed", self._on_resumed))
        client.event(self._named("on_message", self._on_message))
        if self.config.slash_commands:
            self.tree = app_commands.CommandTree(client)
        token = self.config.token.get_secret_value().strip()
        try:
            await client.login(token)
        except discord.LoginFailure:
            await self._close_client()
            raise ConfigError(
                "Discord refused the bot token (401 Unauthorized); set it to the token from the "
                "Developer Portal (Bot → Reset Token)",
                path=self._config_source(), key=f"connectors.{self.name}.token",
            ) from None  # fmt: skip
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            await self._close_client()
            raise PlatformError(f"cannot reach Discord at {self._where()}: {redact(str(exc))}") from None
        self._task = asyncio.get_running_loop().create_task(
            client.connect(reconnect=True), name="discord-gateway"
        )
        await self._wait_ready()
        assert self._task is not None
        self._task.add_done_callback(self._gateway_ended)
        assert client.user is not None
        self.router = Router(
            platform=self.name, bot_id=client.user.id, channel_trigger=self.config.channel_trigger,
            thread_trigger=self.config.thread_trigger, command_prefix=self.config.command_prefix,
            text_commands=_CommandNames(self), is_bot_message=self._is_ours, is_admin=self.access.is_admin,
        )  # fmt: skip
        host.add_hooks(DiscordHooks(self), f"{self.name}-discord")
        if self.tree is not None:
            await self._sync_commands()
        self._accepting = True
        log.info("discord %r running as %s (%s)", self.name, client.user, self._where())

    async def _wait_ready(self) -> None:
        task = self._task
        assert task is not None
        ready = asyncio.ensure_future(self._ready.wait())
        await asyncio.wait(
            [ready, task], timeout=self.config.connect_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if self._ready.is_set():
            return
        ready.cancel()
        error: BaseException | None = None
        if task.done() and not task.cancelled():
            error = task.exception()
        await self._close_client()
        key = f"connectors.{self.name}"
        if isinstance(error, discord.PrivilegedIntentsRequired):
            raise ConfigError(
                "Discord refused the Message Content intent (gateway closed with 4014 "
                "'Disallowed intent(s)'): enable it in the Developer Portal → your application "
                "→ Bot → Privileged Gateway Intents → Message Content Intent",
                path=self._config_source(), key=key,
            ) from None  # fmt: skip
        if isinstance(error, discord.ConnectionClosed) and error.code == 4004:
            raise ConfigError("Discord refused the bot token on the gateway (4004)",
                              path=self._config_source(), key=f"{key}.token") from None  # fmt: skip
        what = repr(error) if error is not None else f"no READY within {self.config.connect_timeout:g}s"
        raise PlatformError(f"cannot connect to Discord's gateway at {self._where(gateway=True)}: {what}")

    def _point_discord_py(self) -> None:
        """Set discord.py's process-wide endpoints (``api_base``, ``gateway_url``)."""
        wanted = (self.config.api_base, self.config.gateway_url)
        for other, endpoints in _ENDPOINTS.items():
            if other != self.name and endpoints != wanted:
                raise ConfigError(
                    f"connectors {other!r} and {self.name!r} use different api_base/gateway_url; "
                    "discord.py has one endpoint per process (run them in separate processes)",
                    key=f"connectors.{self.name}.api_base",
                )
        if not _ENDPOINTS:  # the first one: remember discord.py's own, restored by the last
            _DEFAULTS[:] = [discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY]
        _ENDPOINTS[self.name] = wanted
        if self.config.api_base:
            discord.http.Route.BASE = self.config.api_base
        if self.config.gateway_url:
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.config.gateway_url)

    @property
    def _host(self) -> ConnectorHost:
        host = self.host
        if host is None:
            raise PlatformError(f"discord {self.name!r} is not started")
        return host

    def _config_source(self) -> str | None:
        host_config = getattr(self.host, "config", None)
        return getattr(host_config, "source", None)

    def _where(self, *, gateway: bool = False) -> str:
        if gateway:
            return self.config.gateway_url or "Discord's gateway"
        return self.config.api_base or "https://discord.com/api"

    @staticmethod
    def _named(name: str, handler: Any) -> Any:
        async def event(*args: Any) -> None:
            await handler(*args)

        event.__name__ = name
        return event

    async def stop(self) -> None:
        """Stop taking messages; sending keeps working until :meth:`aclose`."""
        self._accepting = False
        for task in list(self._tasks):
            task.cancel()  # a refusal still being sent: the bot is going away

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran."""
        return self._closed

    async def aclose(self) -> None:
        """Close the gateway and the REST client (after the schedulers finished). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._accepting = False
        await self._close_client()
        self._release_endpoints()

    def _release_endpoints(self) -> None:
        """The last Discord connector of the process gives discord.py its own endpoints back."""
        if _ENDPOINTS.pop(self.name, None) is not None and not _ENDPOINTS and _DEFAULTS:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = _DEFAULTS

    async def _close_client(self) -> None:
        client = self.client
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 10.0)
        task = self._task
        if task is not None:
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 10.0)
            self._task = None

    def _gateway_ended(self, task: asyncio.Task[None]) -> None:
        """discord.py reconnects by itself; its task ends only on close or a fatal error."""
        if self._closed or task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("discord %r: the gateway connection ended for good: %s", self.name, redact(repr(error)))
        self._accepting = False

    # ── gateway events ──────────────────────────────────────────────────────────────────────

    async def _on_ready(self) -> None:
        self._ready.set()

    async def _on_resumed(self) -> None:
        self.resumes += 1
        log.info("discord %r: gateway connection resumed", self.name)

    async def _on_message(self, message: discord.Message) -> None:
        router = self.router
        if not self._accepting or router is None:
            return
        try:
            routed = router.route(message)
        except Exception:
            log.exception("could not read a Discord message; ignored")
            return
        if routed is None:
            return
        host = self._host
        if not routed.images and routed.unsupported is None:
            host.deliver(routed.chat, self._incoming(routed, message))
            return
        if not self.access.check(message).allowed:
            host.deliver(routed.chat, self._incoming(routed, message))  # the core answers the denial
            return
        if not routed.images:
            self._spawn(self._tell(routed, routed.unsupported or ""))
            return
        host.deliver(routed.chat, self._with_images(routed, message))

    def _incoming(self, routed: Routed, raw: Any, attachments: tuple[Any, ...] = ()) -> IncomingMessage:
        return IncomingMessage(
            chat=routed.chat, user=routed.user, text=self._command_text(routed.text),
            attachments=attachments, reply_to=routed.reply_to, platform_message_id=routed.message_id,
            is_private=routed.is_private, raw=raw,
        )  # fmt: skip

    def _command_text(self, text: str) -> str:
        """``!new title`` → ``/new title`` for relaybot's known commands."""
        prefix = self.config.command_prefix
        if prefix and prefix != "/" and text.startswith(prefix):
            words = text[len(prefix) :].split(maxsplit=1)
            if words and self._host.command(words[0].lower()) is not None:
                return "/" + text[len(prefix) :]
        return text

    async def _with_images(self, routed: Routed, message: discord.Message) -> IncomingMessage | None:
        """Download the images into the media store; refuse (and say so) what is too large."""
        refs = []
        try:
            for image in routed.images:
                data = await download_image(image, max_bytes=self._max_bytes)
                refs.append(await self._host.media.save(data, mime_type=image.content_type))
        except RelaybotError as exc:
            log.info("%s: image refused: %s", routed.chat, exc)
            await self._tell(routed, exc.user_message)
            return None
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.warning("%s: could not download an image: %s", routed.chat, exc)
            await self._tell(routed, "Sorry, I couldn't download that image. Please try again.")
            return None
        return self._incoming(routed, message, tuple(refs))

    async def _tell(self, routed: Routed, text: str) -> None:
        """A one-off answer (not supported, too big), paced by the scheduler."""
        try:
            await self._host.send(routed.chat, text, private=routed.is_private, reply_to=routed.message_id)
        except Exception as exc:
            log.warning("%s: could not answer: %s", routed.chat, exc)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._tasks.discard)

    def _is_ours(self, message_id: int) -> bool:
        return message_id in self._ours

    def _remember(self, message_id: int) -> None:
        ours = self._ours
        ours[message_id] = None
        if len(ours) > REMEMBERED_IDS:
            ours.popitem(last=False)

    # ── slash commands ──────────────────────────────────────────────────────────────────────

    async def _sync_commands(self) -> None:
        """Register relaybot's commands as global slash commands (``PUT …/commands``)."""
        tree = self.tree
        assert tree is not None
        tree.clear_commands(guild=None)
        added = 0
        for command in self._host.commands:
            name = command.name
            if (
                not (1 <= len(name) <= 32 and all(c.isalnum() or c in "-_" for c in name))
                or name != name.lower()
            ):
                log.debug("command /%s cannot be a Discord slash command", name)
                continue
            if added >= _MAX_SLASH:
                break
            tree.add_command(self._slash(name, (command.help or name).strip(), command.usage.strip()))
            added += 1
        try:
            await tree.sync()
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.warning("discord %r: could not sync slash commands: %s", self.name, exc)

    def _slash(self, name: str, help_text: str, usage: str) -> app_commands.Command[Any, Any, None]:
        description = (help_text[:97] + "…") if len(help_text) > 100 else (help_text or name)
        if usage:

            @app_commands.describe(arguments=usage[:100])
            async def with_args(interaction: discord.Interaction, arguments: str | None = None) -> None:
                await self._on_slash(interaction, name, arguments or "")

            return app_commands.Command(name=name, description=description, callback=with_args)

        async def bare(interaction: discord.Interaction) -> None:
            await self._on_slash(interaction, name, "")

        return app_commands.Command(name=name, description=description, callback=bare)

    async def _on_slash(self, interaction: discord.Interaction, name: str, args: str) -> None:
        """Answer at once with the command line (Discord wants an answer in 3 s), then hand the
        command to the core; its output replies to that answer."""
        text = f"/{name} {args}".strip()
        chat = _chat_of(self.name, interaction.channel, interaction.channel_id)
        if not self._accepting or chat is None:
            await interaction.response.send_message("Not available right now.", ephemeral=True)
            return
        as_message = _as_message(interaction)
        decision = self.access.check(as_message)
        if not decision.allowed:
            await interaction.response.send_message(self.access.denied, ephemeral=True)
            return
        response = await interaction.response.send_message(text, allowed_mentions=_NO_MENTIONS)
        message_id = getattr(response, "message_id", None)
        if message_id is not None:
            self._remember(message_id)
        user = interaction.user
        incoming = IncomingMessage(
            chat=chat, user=User(str(user.id), user.display_name, decision.is_admin), text=text,
            platform_message_id=str(message_id) if message_id is not None else None,
            is_private=interaction.guild is None, raw=interaction,
        )  # fmt: skip
        self._host.deliver(chat, incoming)

    # ── primitives ──────────────────────────────────────────────────────────────────────────

    def _messageable(self, chat: ChatKey) -> discord.PartialMessageable:
        client = self.client
        if client is None or self._closed:
            raise PlatformError(f"discord {self.name!r} is not running")
        return client.get_partial_messageable(_channel_id(chat))

    def _frame(self, text: str, *, final: bool, outgoing: Outgoing) -> str:
        """The text a message shows: the final text as is (interrupted: with the marker),
        mid-stream frames with the "still writing" line when it fits."""
        if final:
            return mark_interrupted(text) if outgoing.interrupted else text
        marker = self.config.writing_marker
        if marker and text:
            framed = f"{text}\n\n{marker}"
            if utf16_len(framed) <= self.policy.max_length:
                return framed
        return text

    def _content(self, text: str) -> dict[str, Any]:
        if self.config.embeds:
            return {"content": None, "embed": discord.Embed(description=text)}
        return {"content": text}

    async def send_text(
        self,
        chat: ChatKey,
        text: str,
        *,
        final: bool = True,
        reply_to: str | None = None,
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """Post a message (a reply to ``reply_to``, which may since be deleted)."""
        channel = self._messageable(chat)
        kwargs = self._content(self._frame(text, final=final, outgoing=outgoing))
        if reply_to:
            # a reply to a message deleted meanwhile goes out as a plain message, not an error
            kwargs["reference"] = discord.MessageReference(
                message_id=int(reply_to), channel_id=channel.id, fail_if_not_exists=False
            )
        sent = await self._call(
            chat, "send", channel.id, lambda: channel.send(allowed_mentions=_NO_MENTIONS, **kwargs)
        )
        self._remember(sent.id)
        return str(sent.id)

    async def edit_text(
        self, chat: ChatKey, message_id: str, text: str, *, final: bool, outgoing: Outgoing = NOTICE
    ) -> None:
        """Replace a message's text (the final edit drops the "still writing" line)."""
        channel = self._messageable(chat)
        partial = channel.get_partial_message(int(message_id))
        kwargs = self._content(self._frame(text, final=final, outgoing=outgoing))
        await self._call(
            chat, "edit", channel.id, lambda: partial.edit(allowed_mentions=_NO_MENTIONS, **kwargs)
        )

    async def send_typing(self, chat: ChatKey) -> None:
        """One typing request per channel every few seconds, never into an empty bucket."""
        channel_id = _channel_id(chat)
        now = time.monotonic()
        if now - self._typing_at.get(channel_id, float("-inf")) < TYPING_EVERY or self._blocked(
            channel_id, now
        ):
            return
        state = self.tracker.state("POST /channels/{channel_id}/typing", channel_id)
        if state is not None and state.available(self.tracker.clock()) == 0:
            return
        self._typing_at[channel_id] = now
        if len(self._typing_at) > 4096:
            self._typing_at = {k: v for k, v in self._typing_at.items() if now - v < TYPING_EVERY}
        channel = self._messageable(chat)
        await self._call(chat, None, channel_id, lambda: channel.typing())

    async def send_image(
        self,
        chat: ChatKey,
        image: bytes,
        *,
        caption: str = "",
        mime_type: str = "image/png",
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """Post the image as an attachment, the caption as its text (a long one follows)."""
        channel = self._messageable(chat)
        try:
            file = image_file(image, name="image")
        except RelaybotError as exc:
            raise PlatformError(str(exc)) from None
        fits = utf16_len(caption) <= self.policy.max_length
        content = caption if caption and fits else None
        sent = await self._call(
            chat, "image", channel.id,
            lambda: channel.send(content=content, file=file, allowed_mentions=_NO_MENTIONS),
        )  # fmt: skip
        self._remember(sent.id)
        if caption and not fits:
            await self._host.send(chat, caption, private=not _is_guild(chat, self.client))
        return str(sent.id)

    async def delete_message(self, chat: ChatKey, message_id: str) -> None:
        """Delete one of the bot's messages (a notice an image replaces)."""
        channel = self._messageable(chat)
        partial = channel.get_partial_message(int(message_id))
        await self._call(chat, "delete", channel.id, lambda: partial.delete())

    # ── errors and buckets ──────────────────────────────────────────────────────────────────

    def _blocked(self, channel_id: int, now: float) -> bool:
        until = self._lost.get(channel_id)
        if until is not None and now >= until:
            del self._lost[channel_id]
            return False
        return until is not None

    async def _call(self, chat: ChatKey, method: Method | None, channel_id: int, request: Any) -> Any:
        """Make one REST request for the scheduler: 429 → PlatformRateLimitError at once,
        403 → the channel is lost for a while, 404 → MessageGoneError; report the buckets."""
        now = time.monotonic()
        if self._blocked(channel_id, now):
            raise MessageGoneError(f"{chat}: no access to channel {channel_id} (403 earlier)")
        if now < self._paused_until:
            raise PlatformRateLimitError(self._paused_until - now, scope="global", message="Cloudflare ban")
        try:
            with self.tracker.raising_429s():
                return await request()
        except RateLimitedResponse as exc:
            if exc.cloudflare:
                log.error("discord %r: Cloudflare refused us (429 without Via: too many invalid "
                          "requests); pausing every request for %.0fs", self.name, BAN_PAUSE)  # fmt: skip
                self._paused_until = time.monotonic() + BAN_PAUSE
                raise PlatformRateLimitError(BAN_PAUSE, scope="global", message=str(exc)) from None
            log.info("%s: Discord answered 429 (retry after %.2fs%s)", chat, exc.retry_after,
                     ", global" if exc.is_global else "")  # fmt: skip
            raise PlatformRateLimitError(
                exc.retry_after, scope="global" if exc.is_global else "chat", message=str(exc)
            ) from None
        except discord.RateLimited as exc:
            raise PlatformRateLimitError(exc.retry_after, scope="chat", message=str(exc)) from None
        except discord.Forbidden as exc:
            self._lost[channel_id] = time.monotonic() + LOST_FOR
            log.warning("%s: Discord refused access to channel %s (403, code %s: %s); not writing "
                        "there for %.0fs", chat, channel_id, exc.code, exc.text, LOST_FOR)  # fmt: skip
            raise MessageGoneError(f"403 {exc.code}: {exc.text}") from None
        except discord.NotFound as exc:
            raise MessageGoneError(f"404 {exc.code}: {exc.text}") from None
        except discord.HTTPException as exc:
            if exc.status == 429:  # discord.py's own Cloudflare check (no Via / not JSON)
                self._paused_until = time.monotonic() + BAN_PAUSE
                raise PlatformRateLimitError(BAN_PAUSE, scope="global", message="Cloudflare ban") from None
            detail = f"Discord answered {exc.status} (code {exc.code}): {exc.text}"
            raise PlatformError(redact(detail)) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PlatformError(redact(f"Discord request failed: {exc!r}")) from None
        finally:
            if method is not None:
                self._report(chat, method, channel_id)

    def _report(self, chat: ChatKey, method: Method, channel_id: int) -> None:
        """Tell the scheduler what Discord's headers say about ``method`` in this channel."""
        route = _ROUTES[method]
        now = self.tracker.clock()
        states = [self.tracker.state(route, channel_id)]
        if chat.thread:
            # the scheduler paces a thread with its parent channel (one lane), while Discord
            # keeps separate buckets: report the tighter of the two, so neither is overdrawn
            states.append(self.tracker.state(route, int(chat.chat)))
        known = [s for s in states if s is not None]
        if not known:
            return
        state = min(known, key=lambda s: (s.available(now), -s.reset_at))
        remaining = state.available(now)
        reset_after = max(state.reset_at - now, 0.0)
        self.observe_bucket(chat, method, remaining=remaining, reset_after=reset_after)
        if method in ("send", "image"):  # one Discord bucket, two scheduler methods
            self.observe_bucket(chat, "image" if method == "send" else "send",
                                remaining=remaining, reset_after=reset_after)  # fmt: skip


class _CommandNames:
    """The registered command names, looked up live (plugins may add commands later)."""

    def __init__(self, connector: DiscordConnector) -> None:
        self._connector = connector

    def __contains__(self, name: object) -> bool:
        host = self._connector.host
        return isinstance(name, str) and host is not None and host.command(name) is not None


class _MessageView:
    """What the allow-lists read of a message, for an interaction (author, guild, channel)."""

    def __init__(self, interaction: discord.Interaction) -> None:
        self.author = interaction.user
        self.guild = interaction.guild
        self.channel = interaction.channel


def _as_message(raw: Any) -> discord.Message:
    if isinstance(raw, discord.Interaction):
        return cast(discord.Message, _MessageView(raw))
    return cast(discord.Message, raw)


def _channel_id(chat: ChatKey) -> int:
    """The Discord channel a chat writes to: the thread, or the channel / DM."""
    return int(chat.thread) if chat.thread else int(chat.chat)


def _chat_of(platform: str, channel: Any, channel_id: int | None) -> ChatKey | None:
    if isinstance(channel, discord.Thread):
        return ChatKey(platform, str(channel.parent_id), str(channel.id))
    if channel_id is None:
        return None
    return ChatKey(platform, str(channel_id))


def _is_guild(chat: ChatKey, client: discord.Client | None) -> bool:
    if chat.thread:
        return True
    channel = client.get_channel(int(chat.chat)) if client is not None else None
    return channel is not None and getattr(channel, "guild", None) is not None
