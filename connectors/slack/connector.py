"""``SlackConnector``: slack-bolt for the wire, relaybot's scheduler for the pace.

Lifecycle: :meth:`~SlackConnector.start` checks the bot token (``auth.test``; a refused token
is a :class:`~relaybot.ConfigError` naming ``connectors.NAME.bot_token``), builds a slack-bolt
``AsyncApp`` on slack_sdk's ``AsyncWebClient`` (``base_url`` from the config, one pooled aiohttp
session, no retry handlers: the scheduler owns pacing and a retried post would duplicate it)
and starts receiving: Socket Mode with an app token, otherwise HTTP Events served by
:class:`relaybot.WebServer` (Bolt checks every request's signature: a bad one is 401 and nothing
is processed). :meth:`~SlackConnector.stop` stops intake; the Web API client stays usable until
:meth:`~SlackConnector.aclose`, so final texts can still go out.

Incoming (:mod:`.routing` decides what is answered and in which thread): every thread is its
own chat, ``ChatKey(NAME, "TEAM:CHANNEL", thread_ts)``. Each event is handed to the core with
:meth:`ConnectorHost.deliver` the moment it arrives, its preparation first *claiming* the
event id in the database (:meth:`ConnectorHost.claim_event`), so a re-delivery — a lost ack,
a dropped socket, a restart — is never answered twice. The event is acknowledged once the core
has stored the message, or after ``ack_within`` seconds whatever happens (Slack wants 3 s).
Denied people get one ephemeral answer; images are downloaded with the bot token.

Outgoing: Slack's chat streams are the *append* style (:class:`~relaybot.StreamPolicy`
``native_append``): ``chat.startStream`` in the thread (with the recipient in channels),
``chat.appendStream`` with what was added, ``chat.stopStream`` with the rest. A stream Slack
ended early (``message_not_in_streaming_state``, ``stopped_by_user``) raises
:class:`~relaybot.StreamEndedError` and the scheduler finishes by ``chat.update``; a workspace
without streams (``method_not_supported``…) raises :class:`~relaybot.PlatformError` at start and
the reply goes by ``chat.postMessage`` + ``chat.update``. Each method's tier is a
:class:`~relaybot.MethodBudget` shared by the workspace (:meth:`SlackConnector.budget_group`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from relaybot import (
    NOTICE,
    BaseConnector,
    ChatKey,
    ConfigError,
    ImageRef,
    IncomingMessage,
    MessageGoneError,
    MethodBudget,
    Outgoing,
    PlatformError,
    PlatformRateLimitError,
    RelaybotError,
    StreamEndedError,
    StreamPolicy,
    User,
    mark_interrupted,
)

from .access import AccessList, DeniedNotices
from .config import SlackConfig
from .errors import AUTH_ERRORS, error_code, redact, translate
from .formatting import MAX_MARKDOWN_BLOCK, MAX_TEXT, markdown_messages, to_mrkdwn
from .media import download_image, too_large, upload_image
from .routing import AssistantThreadStarted, Ignored, RoutedMessage, Router, route_command

if TYPE_CHECKING:
    from relaybot import ConnectorHost, WebServer

log = logging.getLogger("relaybot.connectors.slack")

#: Slack's default Web API endpoint
SLACK_API = "https://slack.com/api/"
#: remembered threads, askers, … (bounded: a busy workspace must not grow memory forever)
_MAX_REMEMBERED = 50_000
#: the router's reason for a channel-thread message in a thread the bot does not remember
_NOT_IN_THREAD = "a thread the bot is not in"
_MIME_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}


def policy_for(config: SlackConfig) -> StreamPolicy:
    """The streaming policy of a Slack app with these settings.

    Slack's tiers count per method per app per workspace (``scope="connector"`` with the
    workspace as :meth:`SlackConnector.budget_group`); ``chat.postMessage``'s ~1 per second per
    channel is the chat interval (every thread of a channel shares its channel's lane).
    """
    budgets = (
        MethodBudget(frozenset({"start"}), config.start_stream_per_minute, 60.0),
        MethodBudget(frozenset({"stop"}), config.stop_stream_per_minute, 60.0),
        MethodBudget(frozenset({"append"}), config.append_stream_per_minute, 60.0),
        MethodBudget(frozenset({"edit", "delete"}), config.update_per_minute, 60.0),
    )
    return StreamPolicy(
        max_length=MAX_MARKDOWN_BLOCK,
        length_unit="chars",
        private_interval=config.private_interval,
        group_interval=config.channel_interval,
        global_rate=0.0,  # Slack has no app-wide rate besides the per-method tiers
        can_edit=True,
        native_draft=False,
        typing_interval=config.status_interval if config.status else None,
        native_append=config.native_streaming,
        append_max=MAX_MARKDOWN_BLOCK,
        method_budgets=budgets,
    )


class _Bounded(OrderedDict[Any, Any]):
    """An insertion-ordered dict that forgets its oldest entries beyond ``limit``."""

    def __init__(self, limit: int = _MAX_REMEMBERED) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: Any, value: Any = True) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def split_chat(chat: ChatKey) -> tuple[str, str]:
    """``(team, channel)`` of a Slack chat key (``chat.chat`` is ``TEAM:CHANNEL``)."""
    team, _, channel = chat.chat.rpartition(":")
    return team, channel


class SlackConnector(BaseConnector):
    """A Slack app in one workspace (one ``[connectors.NAME]`` table). See the module docstring."""

    def __init__(self, name: str, config: SlackConfig) -> None:
        self.name = name
        self.config = config
        self.policy = policy_for(config)
        self.host: ConnectorHost | None = None
        self.client: AsyncWebClient | None = None
        self.bolt: AsyncApp | None = None
        self.router: Router | None = None
        #: ``auth.test``'s answer: the bot's user id, bot id and workspace
        self.bot_user_id = ""
        self.bot_id = ""
        self.team_id = ""
        self.web_server: WebServer | None = None
        self.access = AccessList(users=config.allowed_users, channels=config.allowed_channels,
                                 teams=config.allowed_teams, admins=config.admins,
                                 denied_message=config.denied_message)  # fmt: skip
        self._denied = DeniedNotices()
        self._session: aiohttp.ClientSession | None = None
        self._socket: Any = None
        self._accepting = False
        self._closed = False
        self._max_bytes = int(config.max_download_mb * 1024 * 1024)
        # threads the bot takes part in (follow-ups there are answered without a mention)
        self._threads = _Bounded()
        # per thread: who asked last (chat.startStream's recipient in channels)
        self._askers = _Bounded()
        # per (team, channel, user): the thread they last talked to the bot in (slash commands)
        self._last_thread = _Bounded()
        # assistant threads titled already (once each: the first message names the thread)
        self._titled = _Bounded()
        # the local Retry-After of assistant.threads.setStatus (best effort: never pauses replies)
        self._status_blocked_until = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()

    # ── lifecycle ───────────────────────────────────────────────────────────────────────────

    async def start(self, host: ConnectorHost) -> None:
        """Check the token, start receiving (Socket Mode or HTTP Events).

        Raises :class:`~relaybot.ConfigError` for a refused token (naming the key) and
        :class:`~relaybot.PlatformError` when Slack cannot be reached.
        """
        self.host = host
        cfg = self.config
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=cfg.request_timeout),
            connector=aiohttp.TCPConnector(limit=256),
        )
        self.client = AsyncWebClient(
            token=cfg.bot_token.get_secret_value().strip(), base_url=cfg.base_url or SLACK_API,
            session=self._session, timeout=int(cfg.request_timeout), retry_handlers=[],
        )  # fmt: skip
        try:
            await self._authenticate()
            self.router = Router(self.bot_user_id, self.bot_id, thread_follow_ups=cfg.thread_follow_ups,
                                 bot_in_thread=self._in_thread)  # fmt: skip
            self.bolt = self._build_app()
            self._accepting = True
            if cfg.mode == "socket":
                await self._start_socket_mode()
            else:
                await self._start_http()
        except BaseException:
            self._accepting = False
            await self._close_session()
            raise
        log.info(
            "slack %r running as <@%s> in %s (%s mode)", self.name, self.bot_user_id, self.team_id, cfg.mode
        )

    def _config_error(self, key: str, message: str) -> ConfigError:
        path = None
        if self.host is not None:
            path = getattr(self.host.config, "source", None)
        return ConfigError(message, path=path, key=f"connectors.{self.name}.{key}")

    async def _authenticate(self) -> None:
        assert self.client is not None
        where = self.config.base_url or SLACK_API
        try:
            auth = await self.client.auth_test()
        except SlackApiError as exc:
            code = error_code(exc)
            if code in AUTH_ERRORS:
                raise self._config_error(
                    "bot_token", f"Slack refused the bot token (auth.test answered {code}); set it to the "
                    "Bot User OAuth Token (xoxb-…) from the app's OAuth & Permissions page",
                ) from None  # fmt: skip
            raise PlatformError(f"auth.test at {where} failed: {redact(code or str(exc))}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PlatformError(f"cannot reach the Slack Web API at {where}: {type(exc).__name__}") from None
        self.bot_user_id = str(auth.get("user_id") or "")
        self.bot_id = str(auth.get("bot_id") or "")
        self.team_id = str(auth.get("team_id") or "")

    def _build_app(self) -> AsyncApp:
        cfg = self.config
        # Bolt's own client carries no token: requests are authorized by _authorize from the
        # auth.test answer we already have (Bolt's default calls auth.test again, once per
        # event of the first burst)
        bolt_client = AsyncWebClient(base_url=cfg.base_url or SLACK_API, session=self._session,
                                     timeout=int(cfg.request_timeout), retry_handlers=[])  # fmt: skip
        app = AsyncApp(
            client=bolt_client,
            authorize=self._authorizer(),
            signing_secret=cfg.signing_secret.get_secret_value() or "socket-mode-needs-no-secret",
            # the listener runs before the ack goes out: it only hands the message over (stored
            # in milliseconds) and returns, so the ack says "stored", within ack_within seconds
            process_before_response=True,
            request_verification_enabled=cfg.mode == "http",
            ignoring_self_events_enabled=False,  # the router knows the bot's own messages
        )  # fmt: skip
        app.event(re.compile(".*"))(self._on_event)
        app.command(cfg.slash_command)(self._on_command)
        return app

    def _authorizer(self) -> Callable[[], Awaitable[AuthorizeResult]]:
        """Bolt's authorization of every request: this app in its one workspace. (A closure
        without parameters: Bolt passes arguments by the function's parameter names.)"""
        token = self.config.bot_token.get_secret_value().strip()
        result = AuthorizeResult(enterprise_id=None, team_id=self.team_id, bot_user_id=self.bot_user_id,
                                 bot_id=self.bot_id, bot_token=token)  # fmt: skip

        async def authorize() -> AuthorizeResult:
            return result

        return authorize

    async def _start_socket_mode(self) -> None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        assert self.bolt is not None and self.client is not None
        app_token = self.config.app_token.get_secret_value().strip()
        # slack_sdk's connect() retries a refused token forever: ask once ourselves first
        try:
            await self.client.apps_connections_open(app_token=app_token)
        except SlackApiError as exc:
            code = error_code(exc)
            if code in AUTH_ERRORS:
                raise self._config_error(
                    "app_token", f"Slack refused the app-level token (apps.connections.open answered "
                    f"{code}); generate one with the connections:write scope under Basic Information",
                ) from None  # fmt: skip
            raise PlatformError(f"could not open a Socket Mode connection: {redact(code)}") from None
        handler = AsyncSocketModeHandler(self.bolt, app_token, web_client=self.client,
                                         ping_interval=self.config.ping_interval)  # fmt: skip
        try:
            await asyncio.wait_for(handler.connect_async(), self.config.request_timeout)
        except TimeoutError:
            await _quietly(handler.close_async())
            raise PlatformError("could not open a Socket Mode connection in time") from None
        self._socket = handler

    async def _start_http(self) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Route

        from relaybot import WebServer

        from .http_events import bolt_endpoint

        assert self.bolt is not None
        cfg = self.config
        web = Starlette(routes=[Route(cfg.http_path, bolt_endpoint(self.bolt), methods=["POST"])])
        server = WebServer(web, host=cfg.http_host, port=cfg.http_port, name=f"relaybot:{self.name}")
        try:
            await server.start()
        except OSError as exc:
            raise self._config_error(
                "http_port", f"cannot listen on {cfg.http_host}:{cfg.http_port} for Slack's events: {exc}"
            ) from None
        self.web_server = server

    @property
    def events_url(self) -> str:
        """HTTP Events mode: the local URL Slack's requests are served at."""
        if self.web_server is None:
            raise PlatformError(f"slack {self.name!r} does not serve HTTP events")
        return self.web_server.url + self.config.http_path

    async def stop(self) -> None:
        """Stop receiving (the socket or the web server); sending keeps working."""
        self._accepting = False
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await _bounded(socket.close_async(), 5.0, "closing the Socket Mode connection")
        if self.web_server is not None:
            server, self.web_server = self.web_server, None
            await _bounded(server.stop(), 5.0, "stopping the events server")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` ran."""
        return self._closed

    async def aclose(self) -> None:
        """Close the Web API client (after the schedulers finished). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._accepting or self._socket is not None or self.web_server is not None:
            await self.stop()
        await self._close_session()

    async def _close_session(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await _quietly(session.close())

    # ── incoming ────────────────────────────────────────────────────────────────────────────

    def _in_thread(self, team: str, channel: str, thread_ts: str) -> bool:
        return (team, channel, thread_ts) in self._threads

    def chat_for(self, team: str, channel: str, thread_ts: str | None) -> ChatKey:
        """The chat key of a Slack thread (``thread_ts`` None: the channel itself)."""
        return ChatKey(self.name, f"{team or self.team_id}:{channel}", thread_ts or None)

    async def _on_event(self, body: dict[str, Any]) -> None:
        """Every Events API callback (Bolt has acked nothing yet: we return, then it acks)."""
        if not self._accepting or self.router is None:
            return
        try:
            routed = self.router.route(body)
        except Exception:
            log.exception("could not read a Slack event; ignored")
            return
        if isinstance(routed, Ignored) and routed.reason == _NOT_IN_THREAD and await self._knows_thread(body):
            routed = self.router.route(body)  # the thread is remembered now
        if isinstance(routed, Ignored):
            log.debug("slack %r: ignored event %s: %s", self.name, routed.event_id, routed.reason)
            return
        if isinstance(routed, AssistantThreadStarted):
            self._spawn(self._greet(routed), f"slack-greet:{routed.thread_key}")
            return
        await self._take(routed)

    async def _knows_thread(self, body: Mapping[str, Any]) -> bool:
        """Was this channel thread a conversation before (the bot restarted since it answered
        there)? Then follow-ups are answered as before the restart; the thread is remembered."""
        if self.host is None or not self.config.thread_follow_ups:
            return False
        event = body.get("event") or {}
        team = str(event.get("team") or body.get("team_id") or self.team_id)
        channel, thread_ts = str(event.get("channel") or ""), str(event.get("thread_ts") or "")
        if not (channel and thread_ts):
            return False
        try:
            known = bool(await self.host.conversations(self.chat_for(team, channel, thread_ts)).list())
        except Exception:
            log.debug("could not look up the conversations of %s/%s", channel, thread_ts, exc_info=True)
            return False
        if known:
            self._threads.remember((team, channel, thread_ts))
        return known

    async def _take(self, routed: RoutedMessage) -> None:
        host = self.host
        assert host is not None
        team = routed.team or self.team_id
        if not self.access.allows(user=routed.user, channel=routed.channel, team=team):
            if self._denied.should_tell(team, routed.user):
                self._spawn(self._tell_denied(routed), f"slack-deny:{routed.channel}")
            return
        chat = self.chat_for(team, routed.channel, routed.thread_ts)
        self._threads.remember((team, routed.channel, routed.thread_ts))
        self._askers.remember(chat, routed.user)
        self._last_thread.remember((team, routed.channel, routed.user), routed.thread_ts)
        handover = host.deliver(chat, self._prepare(chat, routed))
        await self._until_accepted(handover)

    async def _until_accepted(self, handover: asyncio.Future[Any]) -> None:
        """Wait until the core holds the message, at most ``ack_within`` seconds (then Bolt acks)."""
        try:
            await asyncio.wait_for(asyncio.shield(handover), self.config.ack_within)
        except TimeoutError:
            log.info(
                "slack %r: acknowledging an event before it was stored (still in preparation)", self.name
            )

    def _command_text(self, text: str) -> str:
        """``!new`` → ``/new`` (the configured prefix; Slack keeps a leading ``/`` for itself)."""
        prefix = self.config.command_prefix
        if (
            prefix != "/"
            and text.startswith(prefix)
            and len(text) > len(prefix)
            and not text[len(prefix)].isspace()
        ):
            return "/" + text[len(prefix) :]
        return text

    async def _prepare(self, chat: ChatKey, routed: RoutedMessage) -> IncomingMessage | None:
        """Claim the event (a re-delivery stops here), fetch its images, build the message."""
        host = self.host
        assert host is not None
        if routed.event_id and not await host.claim_event(routed.event_id):
            log.info(
                "slack %r: event %s was delivered before; not answering it again", self.name, routed.event_id
            )
            return None
        if routed.assistant_thread and routed.text and routed.thread_key not in self._titled:
            self._titled.remember(routed.thread_key)
            self._spawn(self._set_title(routed), f"slack-title:{routed.thread_key}")
        attachments: list[ImageRef] = []
        for file in routed.images:
            try:
                if file.size is not None and file.size > self._max_bytes:
                    raise too_large(file.name, self._max_bytes)
                data = await download_image(file, bot_token=self.config.bot_token.get_secret_value(),
                                            max_bytes=self._max_bytes, session=self._session)  # fmt: skip
                attachments.append(await host.media.save(data, mime_type=file.mimetype))
            except RelaybotError as exc:
                log.info("%s: image %s refused: %s", chat, file.id, exc)
                await self._tell(chat, exc.user_message or "Sorry, I couldn't read that image.", routed.is_dm)
                return None
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("%s: could not download image %s: %s", chat, file.id, type(exc).__name__)
                await self._tell(
                    chat, "Sorry, I couldn't download that image. Please try again.", routed.is_dm
                )
                return None
        if not routed.text and not attachments:
            if routed.files:
                await self._tell(chat, "Sorry, I can only read images among files.", routed.is_dm)
            return None
        team = routed.team or self.team_id
        return IncomingMessage(
            chat=chat,
            user=User(routed.user, is_admin=self.access.is_admin(routed.user)),
            text=self._command_text(routed.text),
            attachments=tuple(attachments),
            platform_message_id=routed.ts,
            is_private=routed.is_dm,
            raw={"event_id": routed.event_id, "team": team, "channel": routed.channel},
        )

    async def _tell(self, chat: ChatKey, text: str, private: bool) -> None:
        """A one-off notice into ``chat`` through the scheduler (paced, 429-aware)."""
        if self.host is None:
            return
        try:
            await self.host.send(chat, text, private=private)
        except Exception as exc:
            log.warning("%s: could not answer: %s", chat, redact(str(exc)))

    async def _tell_denied(self, routed: RoutedMessage) -> None:
        """The one polite ephemeral answer to someone not on the lists."""
        try:
            text = to_mrkdwn(self.access.denied_message)
            await self._api("chat.postEphemeral", routed.channel, channel=routed.channel, user=routed.user,
                            text=text, thread_ts=routed.thread_ts)  # fmt: skip
        except PlatformError as exc:
            log.info("slack %r: could not tell %s they are not allowed: %s", self.name, routed.user, exc)

    async def _greet(self, started: AssistantThreadStarted) -> None:
        """The assistant pane opened: a greeting and the suggested prompts (once per thread)."""
        host = self.host
        assert host is not None
        team = started.team or self.team_id
        if not self.access.allows(user=started.user, channel=started.channel, team=team):
            return
        if started.event_id and not await host.claim_event(started.event_id):
            return
        chat = self.chat_for(team, started.channel, started.thread_ts)
        self._threads.remember((team, started.channel, started.thread_ts))
        self._askers.remember(chat, started.user)
        prompts = [p.model_dump() for p in self.config.suggested_prompts]
        if prompts:
            try:
                where = started.channel
                await self._api("assistant.threads.setSuggestedPrompts", where, channel_id=started.channel,
                                thread_ts=started.thread_ts, prompts=prompts)  # fmt: skip
            except PlatformError as exc:
                log.info("%s: could not set suggested prompts: %s", chat, exc)
        if self.config.assistant_greeting:
            await self._tell(chat, self.config.assistant_greeting, True)

    async def _set_title(self, routed: RoutedMessage) -> None:
        """An assistant thread is titled by its conversation's first words (best effort)."""
        title = " ".join(routed.text.split())
        if len(title) > 60:
            title = title[:59].rstrip() + "…"
        if self.host is not None:
            try:
                chat = self.chat_for(routed.team, routed.channel, routed.thread_ts)
                conversation = await self.host.conversations(chat).active()
                if conversation is not None and conversation.title:
                    title = conversation.title
            except Exception:
                log.debug("no conversation title for %s", routed.thread_key, exc_info=True)
        try:
            await self._api("assistant.threads.setTitle", routed.channel, channel_id=routed.channel,
                            thread_ts=routed.thread_ts, title=title)  # fmt: skip
        except PlatformError as exc:
            log.debug("%s: could not set the thread title: %s", routed.thread_key, exc)

    async def _on_command(self, ack: Any, body: dict[str, Any]) -> None:
        """``/relaybot new`` etc.: run the chat command in the thread the person last used here."""
        await ack()
        if not self._accepting or self.host is None:
            return
        command = route_command(body)
        team = command.team or self.team_id
        if not self.access.allows(user=command.user, channel=command.channel, team=team):
            if self._denied.should_tell(team, command.user):
                text = to_mrkdwn(self.access.denied_message)
                await self._api_quietly("chat.postEphemeral", command.channel, channel=command.channel,
                                        user=command.user, text=text)  # fmt: skip
            return
        words = command.text.lstrip("/!").strip() or "help"
        thread = self._last_thread.get((team, command.channel, command.user))
        chat = self.chat_for(team, command.channel, thread)
        message = IncomingMessage(
            chat=chat, user=User(command.user, is_admin=self.access.is_admin(command.user)),
            text="/" + words, is_private=command.is_dm, raw={"trigger_id": command.trigger_id},
        )  # fmt: skip
        host = self.host

        async def claimed() -> IncomingMessage | None:
            key = f"command:{command.trigger_id}" if command.trigger_id else ""
            if key and not await host.claim_event(key):
                return None
            return message

        await self._until_accepted(host.deliver(chat, claimed()))

    def _spawn(self, work: Awaitable[Any], name: str) -> None:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("slack %r: %s failed", self.name, name)

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ── Web API ─────────────────────────────────────────────────────────────────────────────

    async def _api(self, method: str, where: str, **args: Any) -> Mapping[str, Any]:
        """One Web API call as JSON; Slack's refusal becomes the relaybot error (:mod:`.errors`)."""
        client = self.client
        if client is None or self._closed:
            raise PlatformError(f"slack {self.name!r} is not running")
        payload = {k: v for k, v in args.items() if v is not None}
        try:
            response = await client.api_call(method, json=payload)
        except SlackApiError as exc:
            raise translate(exc, method=method, where=where) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PlatformError(f"{method} in {where}: {type(exc).__name__}") from None
        data = response.data
        return data if isinstance(data, Mapping) else {}

    async def _api_quietly(self, method: str, where: str, **args: Any) -> None:
        try:
            await self._api(method, where, **args)
        except PlatformError as exc:
            log.info("slack %r: %s failed: %s", self.name, method, exc)

    # ── primitives ──────────────────────────────────────────────────────────────────────────

    def budget_group(self, chat: ChatKey) -> str:
        """The workspace: Slack counts method tiers per app per workspace."""
        return split_chat(chat)[0]

    def _recipient(self, chat: ChatKey, reply_to: str | None) -> str | None:
        return self._askers.get(chat)

    async def start_stream(
        self, chat: ChatKey, text: str, *, reply_to: str | None = None, outgoing: Outgoing = NOTICE
    ) -> str:
        """``chat.startStream`` in the thread (the asker as recipient in channels)."""
        team, channel = split_chat(chat)
        if not chat.thread:
            raise PlatformError("chat streams are thread replies; this message is not in a thread")
        args: dict[str, Any] = {"channel": channel, "thread_ts": chat.thread}
        if text:
            args["markdown_text"] = text
        if not channel.startswith("D"):
            recipient = self._recipient(chat, reply_to)
            if recipient is None:
                raise PlatformError("no recipient known for a channel stream")
            args["recipient_user_id"] = recipient
            args["recipient_team_id"] = team
        data = await self._api("chat.startStream", str(chat), **args)
        self._threads.remember((team, channel, chat.thread))
        return str(data.get("ts") or "")

    async def append_stream(
        self, chat: ChatKey, message_id: str, text: str, *, outgoing: Outgoing = NOTICE
    ) -> None:
        """``chat.appendStream``; Slack ending the stream raises StreamEndedError."""
        _team, channel = split_chat(chat)
        await self._api("chat.appendStream", str(chat), channel=channel, ts=message_id, markdown_text=text)

    async def stop_stream(
        self, chat: ChatKey, message_id: str, text: str, *, outgoing: Outgoing = NOTICE
    ) -> None:
        """``chat.stopStream`` with the last text (and the interruption marker when interrupted)."""
        _team, channel = split_chat(chat)
        if outgoing.interrupted:
            text = text + "\n\n" + mark_interrupted("") if text else "\n\n" + mark_interrupted("")
        await self._api("chat.stopStream", str(chat), channel=channel, ts=message_id,
                        markdown_text=text or None)  # fmt: skip

    def _content(self, text: str, final: bool, outgoing: Outgoing) -> dict[str, Any]:
        """``text``/``blocks`` of a post or update: mid-stream frames as escaped mrkdwn text,
        final ones as a ``markdown`` block with a mrkdwn fallback."""
        if final and outgoing.interrupted:
            text = mark_interrupted(text)
        if final and text.strip():
            messages = markdown_messages(text)
            if len(messages) == 1:
                return messages[0]
        return {"text": to_mrkdwn(text)[:MAX_TEXT] or " "}

    async def send_text(
        self,
        chat: ChatKey,
        text: str,
        *,
        final: bool = True,
        reply_to: str | None = None,
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """``chat.postMessage`` in the thread (a ``markdown`` block when final, mrkdwn text
        mid-stream; if Slack refuses the block, once more as mrkdwn text)."""
        team, channel = split_chat(chat)
        content = self._content(text, final, outgoing)
        try:
            data = await self._api("chat.postMessage", str(chat), channel=channel, thread_ts=chat.thread,
                                   unfurl_links=False, unfurl_media=False, **content)  # fmt: skip
        except PlatformError as exc:
            if "blocks" not in content or not _is_block_error(exc):
                raise
            log.warning("%s: Slack refused the markdown block (%s); sending mrkdwn text", chat, exc)
            data = await self._api("chat.postMessage", str(chat), channel=channel, thread_ts=chat.thread,
                                   text=content["text"], unfurl_links=False, unfurl_media=False)  # fmt: skip
        if chat.thread:
            self._threads.remember((team, channel, chat.thread))
        return str(data.get("ts") or "")

    async def edit_text(
        self, chat: ChatKey, message_id: str, text: str, *, final: bool, outgoing: Outgoing = NOTICE
    ) -> None:
        """``chat.update`` (same content rules as :meth:`send_text`). A message still streaming
        (``streaming_state_conflict``) has its stream stopped first, then is updated."""
        _team, channel = split_chat(chat)
        content = self._content(text, final, outgoing)
        for attempt in range(2):
            try:
                await self._api("chat.update", str(chat), channel=channel, ts=message_id, **content)
                return
            except PlatformError as exc:
                if isinstance(exc, PlatformRateLimitError | MessageGoneError):
                    raise
                if "streaming_state_conflict" in str(exc) and attempt == 0:
                    try:
                        await self._api("chat.stopStream", str(chat), channel=channel, ts=message_id)
                    except StreamEndedError:
                        pass  # it ended meanwhile: the update can go now
                    continue
                if "blocks" in content and _is_block_error(exc) and attempt == 0:
                    content = {"text": content["text"]}
                    continue
                raise

    async def send_typing(self, chat: ChatKey) -> None:
        """``assistant.threads.setStatus`` with the loading messages (best effort).

        Its 429 is kept here (no status call inside the Retry-After window) instead of pausing
        every reply of the workspace: a status is not worth that.
        """
        if not chat.thread or not self.config.status:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._status_blocked_until:
            return
        _team, channel = split_chat(chat)
        try:
            await self._api("assistant.threads.setStatus", str(chat), channel_id=channel,
                            thread_ts=chat.thread, status=self.config.status,
                            loading_messages=list(self.config.loading_messages) or None)  # fmt: skip
        except PlatformRateLimitError as exc:
            self._status_blocked_until = loop.time() + exc.retry_after
        except PlatformError as exc:
            log.debug("%s: status not shown: %s", chat, exc)

    async def send_image(
        self,
        chat: ChatKey,
        image: bytes,
        *,
        caption: str = "",
        mime_type: str = "image/png",
        outgoing: Outgoing = NOTICE,
    ) -> str:
        """Files v2 (``getUploadURLExternal`` → upload → ``completeUploadExternal``) into the thread."""
        _team, channel = split_chat(chat)
        if self.client is None or self._closed:
            raise PlatformError(f"slack {self.name!r} is not running")
        extension = _MIME_EXTENSIONS.get(mime_type, "png")
        try:
            return await upload_image(self.client, image, channel=channel, thread_ts=chat.thread,
                                      filename=f"image.{extension}",
                                      comment=to_mrkdwn(caption) if caption else None)  # fmt: skip
        except SlackApiError as exc:
            raise translate(exc, method="files upload", where=str(chat)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PlatformError(f"files upload in {chat}: {type(exc).__name__}") from None

    async def delete_message(self, chat: ChatKey, message_id: str) -> None:
        """``chat.delete``."""
        _team, channel = split_chat(chat)
        await self._api("chat.delete", str(chat), channel=channel, ts=message_id)


def _is_block_error(exc: Exception) -> bool:
    return any(
        code in str(exc) for code in ("invalid_blocks", "invalid_blocks_format", "msg_blocks_too_long")
    )


async def _bounded(awaitable: Awaitable[Any], timeout: float, what: str) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        log.warning("slack: %s took longer than %.0fs; gave up waiting", what, timeout)
    except Exception as exc:
        log.warning("slack: %s failed: %s", what, redact(repr(exc)))


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.debug("ignored an error while cleaning up", exc_info=True)


__all__ = ["SlackConnector", "policy_for", "split_chat"]
