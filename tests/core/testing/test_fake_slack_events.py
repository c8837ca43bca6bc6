"""Events from the fake Slack: Socket Mode (slack_bolt + slack_sdk for real) and signed HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relaybot.core.testing.fake_slack import FakeSlackServer, RateLimits
from relaybot.core.testing.server import LoopbackServer

ALICE = "U0ALICE"
WAIT = 15.0  # generous: the machine is shared


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlackServer]:
    # short ack window and retry delays keep re-delivery tests quick; limits are not the subject
    async with FakeSlackServer(ack_timeout=1.0, retry_delays=(0.0, 0.2, 0.2),
                               limits=RateLimits.disabled()) as server:  # fmt: skip
        server.add_user(ALICE, "alice")
        yield server


class Seen(list[dict[str, Any]]):
    """Events a bolt handler saw; ``wait_until`` waits for a condition on them."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = asyncio.Event()

    def append(self, event: dict[str, Any]) -> None:
        super().append(event)
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Any, timeout: float = WAIT) -> None:
        async def _wait() -> None:
            while not predicate(self):
                await self._changed.wait()

        await asyncio.wait_for(_wait(), timeout)


def bolt_app(slack: FakeSlackServer, **kwargs: Any) -> AsyncApp:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    return AsyncApp(client=client, signing_secret=slack.signing_secret, **kwargs)


@pytest.fixture
async def socket_app(slack: FakeSlackServer) -> AsyncIterator[tuple[AsyncApp, Seen]]:
    """A bolt app on Socket Mode that answers mentions and DMs in the thread, recording events."""
    app = bolt_app(slack)
    seen = Seen()

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        seen.append(event)
        await say(text=f"echo: {event['text'].split('>', 1)[-1].strip()}", thread_ts=event["ts"])

    @app.event("message")
    async def on_message(event: dict[str, Any], say: Any) -> None:
        seen.append(event)
        if event.get("subtype") is None and event.get("channel_type") == "im":
            await say(text=f"dm: {event['text']}", thread_ts=event.get("thread_ts") or event["ts"])

    @app.event("assistant_thread_started")
    async def on_thread(event: dict[str, Any], client: AsyncWebClient) -> None:
        seen.append(event)
        thread = event["assistant_thread"]
        await client.assistant_threads_setSuggestedPrompts(
            channel_id=thread["channel_id"], thread_ts=thread["thread_ts"],
            prompts=[{"title": "Hi", "message": "Say hi"}],
        )  # fmt: skip

    @app.command("/relaybot")
    async def on_command(ack: Any, command: dict[str, Any]) -> None:
        await ack(text=f"running {command['text']}")

    @app.action("regenerate")
    async def on_button(ack: Any, body: dict[str, Any], say: Any) -> None:
        await ack()
        seen.append(body)
        await say(text=f"again: {body['actions'][0]['value']}", thread_ts=body["message"]["thread_ts"])

    handler = AsyncSocketModeHandler(app, slack.app_token)
    await handler.connect_async()
    await slack.wait_connected()
    try:
        yield app, seen
    finally:
        await handler.close_async()


# -- Socket Mode -----------------------------------------------------------------------------


async def test_bolt_socket_mode_receives_a_mention_acks_and_replies_in_the_thread(
    slack: FakeSlackServer, socket_app: tuple[AsyncApp, Seen]
) -> None:
    delivery = slack.mention(slack.general, ALICE, "hello there")
    await slack.wait_acked(delivery, WAIT)
    ts = delivery.event["ts"]
    await slack.wait_for(lambda: slack.replies(slack.general, ts))
    assert slack.thread_text(slack.general, ts) == "echo: hello there"
    assert [a.outcome for a in delivery.attempts] == ["acked"]
    assert delivery.event_id and delivery.event_id.startswith("Ev")


async def test_dm_thread_follow_up_and_own_message_are_what_bolt_expects(
    slack: FakeSlackServer, socket_app: tuple[AsyncApp, Seen]
) -> None:
    _app, seen = socket_app
    dm = slack.dm_channel(ALICE)
    first = slack.dm(ALICE, "first")
    await slack.wait_for(lambda: slack.replies(dm, first.event["ts"]))
    follow_up = slack.dm(ALICE, "again", thread_ts=first.event["ts"])
    await slack.wait_for(lambda: len(slack.replies(dm, first.event["ts"])) == 2)
    assert slack.thread_text(dm, first.event["ts"], sep="|") == "dm: first|dm: again"
    assert follow_up.event["parent_user_id"] == ALICE
    # the bot's own message comes back as an event; bolt's default middleware drops it
    own = slack.echo_bot_message(slack.replies(dm, first.event["ts"])[0])
    edit = slack.edit(dm, first.event["ts"], "first (edited)")
    gone = slack.delete(dm, follow_up.event["ts"])
    for delivery in (own, edit, gone):
        await slack.wait_acked(delivery, WAIT)
    await seen.wait_until(lambda events: any(e.get("subtype") == "message_deleted" for e in events))
    subtypes = [e.get("subtype") for e in seen]
    assert subtypes == [None, None, "message_changed", "message_deleted"]
    assert seen[2]["message"]["text"] == "first (edited)" and seen[2]["previous_message"]["text"] == "first"
    assert len(slack.replies(dm, first.event["ts"])) == 2  # edits/deletions got no answer


async def test_assistant_thread_and_slash_command(
    slack: FakeSlackServer, socket_app: tuple[AsyncApp, Seen]
) -> None:
    started = slack.start_assistant_thread(ALICE, context_channel=slack.general)
    await slack.wait_for(lambda: slack.assistant_calls("setSuggestedPrompts"))
    call = slack.assistant_calls("setSuggestedPrompts")[0]
    assert call["thread_ts"] == started.event["assistant_thread"]["thread_ts"]
    command = slack.slash_command("/relaybot", "new", user=ALICE, channel=slack.general)
    await slack.wait_acked(command, WAIT)
    assert command.response == {"text": "running new"}


async def test_button_press_arrives_as_an_interactive_envelope(
    slack: FakeSlackServer, socket_app: tuple[AsyncApp, Seen]
) -> None:
    mention = slack.mention(slack.general, ALICE, "first")
    await slack.wait_for(lambda: slack.replies(slack.general, mention.event["ts"]))
    reply = slack.replies(slack.general, mention.event["ts"])[0]
    press = slack.press_button(slack.general, reply.ts, "regenerate", "v2", user=ALICE)
    await slack.wait_acked(press, WAIT)
    await slack.wait_for(lambda: len(slack.replies(slack.general, mention.event["ts"])) == 2)
    assert slack.replies(slack.general, mention.event["ts"])[1].text == "again: v2"
    assert press.kind == "interactive" and press.payload["type"] == "block_actions"


async def test_missing_ack_is_redelivered_with_retry_attempt_and_the_same_event_id(
    slack: FakeSlackServer,
) -> None:
    client = SocketModeClient(app_token=slack.app_token,
                              web_client=AsyncWebClient(base_url=slack.api_url))  # fmt: skip
    received: list[SocketModeRequest] = []

    async def listener(socket: SocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        if len(received) > 1:  # the first delivery goes unanswered
            await socket.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

    client.socket_mode_request_listeners.append(listener)
    await client.connect()
    try:
        delivery = slack.dm(ALICE, "are you there?")
        await slack.wait_acked(delivery, WAIT)
    finally:
        await client.close()
    assert [(r.retry_attempt, r.retry_reason) for r in received] == [(0, ""), (1, "timeout")]
    assert {r.payload["event_id"] for r in received} == {delivery.event_id}
    assert received[0].envelope_id != received[1].envelope_id
    assert [a.outcome for a in delivery.attempts] == ["timeout", "acked"]


async def test_lost_acks_make_slack_redeliver_events_bolt_already_handled(
    slack: FakeSlackServer, socket_app: tuple[AsyncApp, Seen]
) -> None:
    _app, seen = socket_app
    slack.lose_acks(1)
    delivery = slack.mention(slack.general, ALICE, "once please")
    await slack.wait_acked(delivery, WAIT)
    await slack.wait_for(lambda: len(slack.replies(slack.general, delivery.event["ts"])) == 2)
    # an app without event-id dedupe answers twice: what the connector must prevent
    assert [a.outcome for a in delivery.attempts] == ["ack_lost", "acked"]
    assert [e["ts"] for e in seen] == [delivery.event["ts"]] * 2


async def test_a_share_of_lost_acks_is_redelivered_and_every_event_arrives(slack: FakeSlackServer) -> None:
    client = SocketModeClient(app_token=slack.app_token, web_client=AsyncWebClient(base_url=slack.api_url))
    received: list[str] = []

    async def listener(socket: SocketModeClient, request: SocketModeRequest) -> None:
        received.append(request.payload["event_id"])
        await socket.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

    client.socket_mode_request_listeners.append(listener)
    slack.lose_acks(rate=0.5, seed=7)
    await client.connect()
    try:
        deliveries = [slack.dm(ALICE, f"message {i}") for i in range(10)]
        for delivery in deliveries:
            await slack.wait_acked(delivery, WAIT)
    finally:
        await client.close()
    redelivered = [d for d in deliveries if d.retries]
    assert 0 < len(redelivered) < len(deliveries)  # seeded: the same share every run
    assert sorted(set(received)) == sorted(d.event_id for d in deliveries)
    assert len(received) == len(deliveries) + sum(d.retries for d in deliveries)


async def test_dropped_socket_reconnects_and_unacked_events_are_redelivered(slack: FakeSlackServer) -> None:
    client = SocketModeClient(app_token=slack.app_token, web_client=AsyncWebClient(base_url=slack.api_url),
                              ping_interval=1)  # fmt: skip
    received: list[SocketModeRequest] = []
    hold = asyncio.Event()

    async def listener(socket: SocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        if len(received) == 1:
            hold.set()  # do not ack: the connection drops before we would
            return
        await socket.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

    client.socket_mode_request_listeners.append(listener)
    await client.connect()
    try:
        await slack.wait_connected()
        delivery = slack.dm(ALICE, "survive the drop")
        await asyncio.wait_for(hold.wait(), WAIT)
        assert await slack.drop_connections() == 1
        await slack.wait_acked(delivery, WAIT)
        assert len(slack.calls("apps.connections.open")) == 2  # the SDK asked for a new URL
        after = slack.dm(ALICE, "and after it")
        await slack.wait_acked(after, WAIT)
    finally:
        await client.close()
    assert [a.outcome for a in delivery.attempts][-1] == "acked"
    assert delivery.attempts[0].outcome in ("dropped", "timeout")
    assert [r.payload["event_id"] for r in received].count(delivery.event_id) == 2


async def test_refresh_requested_disconnect_makes_the_sdk_reconnect(
    slack: FakeSlackServer, socket_app: tuple[AsyncApp, Seen]
) -> None:
    assert await slack.request_refresh() == 1
    await slack.wait_for(lambda: len(slack.calls("apps.connections.open")) == 2)
    delivery = slack.mention(slack.general, ALICE, "still here?")
    await slack.wait_acked(delivery, WAIT)
    await slack.wait_for(lambda: slack.replies(slack.general, delivery.event["ts"]))


async def test_socket_url_is_single_use(slack: FakeSlackServer) -> None:
    import aiohttp

    web = AsyncWebClient(base_url=slack.api_url)
    url = (await web.apps_connections_open(app_token=slack.app_token))["url"]
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url) as ws:
            hello = await ws.receive_json(timeout=WAIT)
            assert hello["type"] == "hello" and hello["connection_info"]["app_id"] == slack.workspace.app_id
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(url)


# -- HTTP Events mode ------------------------------------------------------------------------


@pytest.fixture
async def http_app(slack: FakeSlackServer) -> AsyncIterator[Seen]:
    """A bolt app served over HTTP (request signatures verified by bolt)."""
    app = bolt_app(slack)
    seen = Seen()

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any], say: Any) -> None:
        seen.append(event)
        await say(text="got it", thread_ts=event["ts"])

    @app.command("/relaybot")
    async def on_command(ack: Any) -> None:
        await ack(text="ok")

    async def endpoint(request: Request) -> Response:
        bolt_request = AsyncBoltRequest(body=(await request.body()).decode(), headers=dict(request.headers))
        bolt_response = await app.async_dispatch(bolt_request)
        return Response(bolt_response.body, status_code=bolt_response.status,
                        headers={k: v[0] for k, v in bolt_response.headers.items()})  # fmt: skip

    web = Starlette(routes=[Route("/slack/events", endpoint, methods=["POST"])])
    async with LoopbackServer(web) as server:
        slack.use_http_events(server.url + "/slack/events")
        yield seen


async def test_http_events_are_signed_and_bolt_verifies_them(
    slack: FakeSlackServer, http_app: Seen
) -> None:
    delivery = slack.mention(slack.general, ALICE, "over http")
    await slack.wait_acked(delivery, WAIT)
    await slack.wait_for(lambda: slack.replies(slack.general, delivery.event["ts"]))
    assert slack.thread_text(slack.general, delivery.event["ts"]) == "got it"
    forged = slack.mention(slack.general, ALICE, "forged")
    await slack.wait_acked(forged, WAIT)  # (the genuine delivery of it)
    before = len(http_app)
    assert await slack.post_wrongly_signed(forged) == 401
    assert await slack.post_wrongly_signed(forged, stale=True) == 401
    assert len(http_app) == before  # nothing processed
    command = slack.slash_command("/relaybot", "help", user=ALICE, channel=slack.general)
    await slack.wait_acked(command, WAIT)
    assert command.response == "ok"  # bolt answers a text-only ack as a plain body


async def test_http_redelivery_carries_retry_headers(slack: FakeSlackServer) -> None:
    verifier = SignatureVerifier(slack.signing_secret)
    received: list[dict[str, str]] = []

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        assert verifier.is_valid_request(body, dict(request.headers))
        received.append(dict(request.headers))
        return Response(status_code=500 if len(received) == 1 else 200)

    async with LoopbackServer(Starlette(routes=[Route("/events", endpoint, methods=["POST"])])) as server:
        slack.use_http_events(server.url + "/events")
        delivery = slack.dm(ALICE, "hi")
        await slack.wait_acked(delivery, WAIT)
    assert "x-slack-retry-num" not in received[0]
    assert (received[1]["x-slack-retry-num"], received[1]["x-slack-retry-reason"]) == ("1", "http_error")
    assert [a.outcome for a in delivery.attempts] == ["http_500", "acked"]


async def test_a_slow_http_answer_is_redelivered_as_http_timeout(slack: FakeSlackServer) -> None:
    received: list[dict[str, str]] = []
    release = asyncio.Event()

    async def endpoint(request: Request) -> Response:
        received.append(dict(request.headers))
        if len(received) == 1:
            await release.wait()  # slower than Slack's ack window
        else:
            release.set()
        return Response(status_code=200)

    async with LoopbackServer(Starlette(routes=[Route("/events", endpoint, methods=["POST"])])) as server:
        slack.use_http_events(server.url + "/events")
        delivery = slack.dm(ALICE, "hi")
        await slack.wait_acked(delivery, WAIT)
        release.set()
    assert (received[1]["x-slack-retry-num"], received[1]["x-slack-retry-reason"]) == ("1", "http_timeout")
    assert [a.outcome for a in delivery.attempts] == ["timeout", "acked"]


async def test_file_share_event_links_a_downloadable_private_file(slack: FakeSlackServer) -> None:
    import aiohttp

    delivery, stored = slack.share_file(slack.dm_channel(ALICE), ALICE, b"\x89PNG...", text="what is this?")
    event = delivery.event
    assert event["subtype"] == "file_share" and event["files"][0]["id"] == stored.id
    url = event["files"][0]["url_private_download"]
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": f"Bearer {slack.bot_token}"}) as r:
            assert r.status == 200 and await r.read() == b"\x89PNG..."
    _, secret = slack.share_file(slack.general, ALICE, b"x", restricted=True, mention_bot=True)
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {slack.bot_token}"}
        async with session.get(secret.to_api(slack.url, slack.workspace.team_id)["url_private"],
                               headers=headers) as r:  # fmt: skip
            assert r.status == 403
