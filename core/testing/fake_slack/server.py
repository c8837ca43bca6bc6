"""``FakeSlackServer``: a loopback Slack (Web API, Socket Mode, HTTP Events) for real SDKs."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from relaybot.core.testing.fake_slack.delivery import SLACK_RETRY_DELAYS, Delivery, EventDelivery
from relaybot.core.testing.fake_slack.files import Files
from relaybot.core.testing.fake_slack.inject import Injector
from relaybot.core.testing.fake_slack.limits import RateLimiter, RateLimits
from relaybot.core.testing.fake_slack.methods import CallInfo, Handler, WebApi, Workspace
from relaybot.core.testing.fake_slack.protocol import SlackError, bearer_token, read_params
from relaybot.core.testing.fake_slack.store import (
    Channel,
    Ids,
    SlackMessage,
    Store,
    StoredFile,
    TimelineRecord,
    User,
)
from relaybot.core.testing.fake_slack.streams import Streams
from relaybot.core.testing.server import LoopbackServer

#: methods called with the app-level (``xapp-``) token; all others want the bot token
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})


class FakeSlackServer(Injector):
    """A Slack workspace on ``127.0.0.1`` that enforces Slack's rules and records every call.

    Example::

        async with FakeSlackServer() as slack:
            client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
            app = AsyncApp(client=client, signing_secret=slack.signing_secret)
            handler = AsyncSocketModeHandler(app, slack.app_token)
            await handler.connect_async()
            delivery = slack.mention(slack.general, "U1ALICE", "hello")
            await slack.wait_acked(delivery)
            ...
            assert slack.thread_text(slack.general, delivery.event["ts"]) == "Hello!"

    Args:
        bot_token / app_token / signing_secret: the credentials the fake accepts (other
            tokens answer ``invalid_auth``).
        limits: rate limits (``RateLimits.disabled()`` to turn them off).
        clock: time source for rate limits, stream lifetimes and the timeline (default
            ``time.monotonic``); a manual clock makes limit tests deterministic.
        ack_timeout: seconds the app has to acknowledge an event (Slack: 3). This and
            ``retry_delays`` are real (event-loop) seconds whatever ``clock`` says: they race
            the app's own work.
        retry_delays: waits before each re-delivery of an unacknowledged event (Slack:
            immediately, 1 min, 5 min); its length is the number of retries.
        stream_lifetime: seconds after ``chat.startStream`` when Slack closes a stream
            server-side (about 5 minutes, undocumented).
        workspace: the team and bot identity (:class:`~.methods.Workspace`).
    """

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-0000-fake-bot-token",
        app_token: str = "xapp-1-A0FAKEAPP-0000-fake-app-token",
        signing_secret: str = "fake-signing-secret-0123456789abcdef",
        limits: RateLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        ack_timeout: float = 3.0,
        retry_delays: tuple[float, ...] = SLACK_RETRY_DELAYS,
        stream_lifetime: float = 300.0,
        workspace: Workspace | None = None,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.clock = clock
        self.workspace = workspace or Workspace()
        self.store = Store()
        self.ids = Ids()
        self.limiter = RateLimiter(limits or RateLimits(), clock)
        self.api = WebApi(self.store, self.ids, self.workspace, clock)
        self.api.stream_lifetime = stream_lifetime
        self.streams = Streams(self.api)
        self.files = Files(self.api, lambda: self.url, lambda: {self.bot_token})
        self.delivery = EventDelivery(clock=clock, signing_secret=signing_secret,
                                      ack_timeout=ack_timeout, retry_delays=retry_delays)  # fmt: skip
        self.handlers: dict[str, Handler] = {
            **self.api.handlers, **self.streams.handlers, **self.files.handlers,
            "apps.connections.open": self._connections_open,
        }  # fmt: skip
        self.revoked_tokens: set[str] = set()
        self._scripted: defaultdict[str, deque[SlackError]] = defaultdict(deque)
        self._tickets: set[str] = set()
        #: what the app posted to slash-command/interaction ``response_url`` s, in order
        self.responses: list[dict[str, Any]] = []
        self.app = Starlette(routes=[
            Route("/api/{method}", self._handle_method, methods=["GET", "POST"]),
            Route("/upload/v1/{key}", self.files.handle_upload, methods=["POST"]),
            Route("/files-pri/{file_key}/{name:path}", self.files.handle_download, methods=["GET"]),
            Route("/signin", self.files.handle_sign_in, methods=["GET"]),
            Route("/commands/{key}", self._handle_response_url, methods=["POST"]),
            WebSocketRoute("/link/", self._handle_socket),
        ])  # fmt: skip
        self._server = LoopbackServer(self.app)
        self._changed = asyncio.Event()
        self.delivery.on_change = self._notify
        self.bot_user = User(self.workspace.bot_user_id, self.workspace.bot_name, self.workspace.team_id,
                             is_bot=True, real_name="Relaybot")  # fmt: skip
        self.store.users[self.bot_user.id] = self.bot_user
        #: a public channel the bot is in, ready for mentions
        self.general = self.add_channel("general", kind="channel").id

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on a free loopback port."""
        await self.delivery.start()
        await self._server.start()

    async def stop(self) -> None:
        """Stop deliveries, close sockets and the HTTP server."""
        await self.delivery.stop()
        await self._server.stop()

    async def __aenter__(self) -> FakeSlackServer:
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
    def api_url(self) -> str:
        """The ``base_url`` for slack_sdk's ``AsyncWebClient`` (ends with ``/api/``)."""
        return f"{self.url}/api/"

    # -- HTTP ------------------------------------------------------------------------------

    def _authenticate(self, method: str, token: str | None) -> None:
        if not token:
            raise SlackError("not_authed")
        if token in self.revoked_tokens:
            raise SlackError("token_revoked")
        wants_app_token = method in _APP_TOKEN_METHODS
        if token == (self.app_token if wants_app_token else self.bot_token):
            return
        if token in (self.app_token, self.bot_token):
            raise SlackError("not_allowed_token_type")
        raise SlackError("invalid_auth")

    async def _handle_method(self, request: Request) -> Response:
        method = request.path_params["method"]
        call = CallInfo()
        status, error, inside = 200, None, False
        try:
            params = await read_params(request)
            call.channel = params.get_str("channel") or params.get_str("channel_id")
            handler = self.handlers.get(method)
            if handler is None:
                raise SlackError("unknown_method")
            self._authenticate(method, bearer_token(request) or params.get_str("token"))
            verdict = self.limiter.check(self.workspace.team_id, method, call.channel)
            if verdict.retry_after is not None:
                inside = verdict.inside_window
                call.extra["retry_after"] = verdict.retry_after
                raise SlackError("ratelimited", status=429,
                                 headers={"Retry-After": str(verdict.retry_after)})  # fmt: skip
            scripted = self._scripted.get(method)
            if scripted:
                failure = scripted.popleft()
                if failure.status == 429:  # a scripted 429 opens a real Retry-After window
                    seconds = int(failure.headers.get("Retry-After", "1"))
                    self.limiter.block(self.workspace.team_id, method, call.channel, seconds)
                raise failure
            body = {"ok": True, **(await handler(params, call))}
            response: Response = JSONResponse(body)
        except SlackError as exc:
            status, error = exc.status, exc.error
            response = JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        self.store.record(TimelineRecord(self.clock(), method, call.channel, call.ts, call.text,
                                         status, error, inside, call.extra))  # fmt: skip
        self._notify()
        return response

    async def _connections_open(self, params: Any, call: CallInfo) -> dict[str, Any]:
        ticket = secrets.token_urlsafe(16)
        self._tickets.add(ticket)
        host = self.url.removeprefix("http://")
        return {"url": f"ws://{host}/link/?ticket={ticket}&app_id={self.workspace.app_id}"}

    async def _handle_socket(self, websocket: WebSocket) -> None:
        ticket = websocket.query_params.get("ticket", "")
        if ticket not in self._tickets:
            await websocket.close(code=4001)  # Slack refuses URLs it did not hand out
            return
        self._tickets.discard(ticket)  # each URL is good for one connection
        await websocket.accept()
        conn = self.delivery.connected(websocket)
        try:
            await conn.send({
                "type": "hello", "num_connections": len(self.delivery.connections),
                "debug_info": {"host": "applink-fake-1", "build_number": 1,
                               "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.workspace.app_id},
            })  # fmt: skip
            while True:
                text = await websocket.receive_text()
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    self.delivery.received(conn, message)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.delivery.disconnected(conn)

    async def _handle_response_url(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return JSONResponse({"ok": False, "error": "invalid_json"})
        self.responses.append({"key": request.path_params["key"], "body": body})
        return JSONResponse({"ok": True})

    # -- scripting -------------------------------------------------------------------------

    def fail_next(self, method: str, error: str, *, status: int = 200,
                  retry_after: int | None = None) -> None:  # fmt: skip
        """Make the next call of ``method`` answer ``error`` (``ratelimited`` + ``retry_after``
        gives a 429 with ``Retry-After``). Several calls queue several failures."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        if retry_after is not None and status == 200:
            status = 429
        self._scripted[method].append(SlackError(error, status=status, headers=headers))

    def set_streaming_available(self, available: bool, error: str = "method_not_supported") -> None:
        """Simulate a workspace without chat streaming: the three methods answer ``error``."""
        self.streams.unavailable = None if available else error

    def stop_stream_by_user(self, channel: str, ts: str) -> None:
        """A person pressed stop on a streaming reply: appends now get ``stopped_by_user``."""
        self.streams.stop_by_user(self.store.messages[(channel, ts)])

    def add_channel(self, name: str, *, kind: str = "channel", is_member: bool = True,
                    channel_id: str | None = None) -> Channel:  # fmt: skip
        """Create a conversation (``kind``: ``channel``, ``group``, ``mpim``, ``im``)."""
        prefix = {"channel": "C", "group": "G", "mpim": "G", "im": "D"}[kind]
        channel = Channel(channel_id or self.ids.new(prefix), kind, name=name, is_member=is_member)
        self.store.channels[channel.id] = channel
        return channel

    def add_user(self, user_id: str, name: str | None = None, *, real_name: str = "") -> User:
        """Create (or return) a workspace member."""
        user = self.api.ensure_user(user_id)
        if name:
            user.name = name
        if real_name:
            user.real_name = real_name
        return user

    def dm_channel(self, user_id: str) -> str:
        """The DM conversation between ``user_id`` and the bot (created on first use)."""
        self.add_user(user_id)
        for channel in self.store.channels.values():
            if channel.kind == "im" and channel.user == user_id:
                return channel.id
        channel = self.add_channel("", kind="im")
        channel.user = user_id
        return channel.id

    def archive(self, channel: str) -> None:
        """Archive a channel: posts answer ``is_archived``."""
        self.store.channels[channel].is_archived = True

    def remove_bot(self, channel: str) -> None:
        """The bot is removed from ``channel``: ``not_in_channel`` / ``channel_not_found``."""
        self.store.channels[channel].is_member = False

    def revoke(self, token: str) -> None:
        """Revoke a token: calls with it answer ``token_revoked``."""
        self.revoked_tokens.add(token)

    # -- delivery --------------------------------------------------------------------------

    def use_http_events(self, url: str | None) -> None:
        """Deliver events to ``url`` (HTTP Events mode, signed); None switches to Socket Mode."""
        self.delivery.events_url = url

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def lose_acks(self, count: int = 0, *, rate: float = 0.0, seed: int = 0) -> None:
        """Lose the next ``count`` acks, and then the acks of a ``rate`` share of first
        deliveries (seeded, so runs repeat; a re-delivery's ack is never lost by ``rate``, so
        every event arrives in the end): Slack re-delivers those as if never acknowledged."""
        import random

        self.delivery.lose_acks = count
        self.delivery.ack_loss_rate = rate
        self.delivery.random = random.Random(seed)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` is true, re-checking after every API call, ack and
        connection change (``TimeoutError`` after ``timeout`` seconds)."""

        async def _wait() -> None:
            while not predicate():
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)

    async def wait_acked(self, delivery: Delivery, timeout: float = 10.0) -> None:
        """Wait until the app acknowledged ``delivery`` (``TimeoutError`` otherwise)."""
        await asyncio.wait_for(delivery.acked.wait(), timeout)

    async def wait_connected(self, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``count`` Socket Mode connections are open."""
        await self.wait_for(lambda: len(self.delivery.connections) >= count, timeout)

    async def drop_connections(self, code: int = 1006) -> int:
        """Close every Socket Mode websocket (a network drop); returns how many were open."""
        conns = list(self.delivery.connections)
        for conn in conns:
            conn.open = False
            try:
                await conn.websocket.close(code=1011 if code == 1006 else code)
            except Exception:  # already closing
                pass
        return len(conns)

    async def request_refresh(self) -> int:
        """Send ``disconnect`` / ``refresh_requested`` on every socket (Slack does this hourly)."""
        conns = list(self.delivery.connections)
        for conn in conns:
            await conn.send({"type": "disconnect", "reason": "refresh_requested",
                             "debug_info": {"host": "applink-fake-1"}})  # fmt: skip
        return len(conns)

    async def post_wrongly_signed(self, delivery: Delivery, *, stale: bool = False) -> int:
        """POST an event to the HTTP Events URL with a bad signature; returns the status."""
        return await self.delivery.post_wrongly_signed(delivery, stale=stale)

    # -- inspecting ------------------------------------------------------------------------

    @property
    def timeline(self) -> list[TimelineRecord]:
        """Every Web API call so far, in order (the live list)."""
        return self.store.timeline

    def calls(self, method: str) -> list[TimelineRecord]:
        """The calls of one method (Slack's spelling, e.g. ``"chat.postMessage"``)."""
        return list(self.store.by_method.get(method, ()))

    @property
    def count_429(self) -> int:
        """How many calls were answered 429 ``ratelimited``."""
        return self.store.count_429

    @property
    def calls_inside_retry_after(self) -> int:
        """Calls made while a Retry-After the fake announced for that budget was running."""
        return self.store.inside_retry_after

    def message(self, channel: str, ts: str) -> SlackMessage | None:
        """Any message (bot's or user's, deleted ones too)."""
        return self.store.messages.get((channel, ts))

    def messages(self, channel: str) -> list[SlackMessage]:
        """The bot's live messages in ``channel``, oldest first."""
        return [m for m in self.store.by_channel.get(channel, {}).values() if m.from_bot and not m.deleted]

    def replies(self, channel: str, thread_ts: str) -> list[SlackMessage]:
        """The bot's live replies in one thread, oldest first."""
        return [m for m in self.store.thread(channel, thread_ts) if m.from_bot and m.ts != thread_ts]

    def thread_text(self, channel: str, thread_ts: str, sep: str = "\n") -> str:
        """What a person reads of the bot's replies in a thread, joined by ``sep``."""
        return sep.join(m.visible for m in self.replies(channel, thread_ts))

    @property
    def ephemeral_messages(self) -> list[dict[str, Any]]:
        """``chat.postEphemeral`` messages, in order."""
        return list(self.store.ephemeral)

    def assistant_calls(self, method: str | None = None) -> list[dict[str, Any]]:
        """``assistant.threads.*`` calls (``method``: ``setStatus``, ``setTitle`` …)."""
        return [c for c in self.store.assistant if method is None or c["method"] == method]

    def uploaded_files(self) -> list[StoredFile]:
        """Files the bot shared with ``files.completeUploadExternal``."""
        return [f for f in self.store.files.values() if f.user == self.bot_user.id and f.completed]

    @property
    def deliveries(self) -> list[Delivery]:
        """Every injected event/command, in order."""
        return self.delivery.deliveries
