"""Delivering events to the app like Slack: Socket Mode envelopes or signed HTTP requests.

Slack wants every event acknowledged within 3 seconds; otherwise it re-delivers (immediately,
then after 1 and 5 minutes), marking the retry — ``retry_attempt``/``retry_reason`` in a Socket
Mode envelope, ``X-Slack-Retry-Num``/``X-Slack-Retry-Reason`` headers over HTTP — with the same
``event_id``. The fake does exactly that, with the timeout and delays configurable, and can
*lose* acks (as when a network hiccup swallows one) so tests and benchmarks see re-deliveries.

A :class:`Delivery` is one event's story: every attempt, when it was acked, what the app
answered. Socket Mode sends to the newest open connection; while none is open the event waits
(Slack queues briefly too), and a connection that drops with an unacked envelope makes Slack
re-deliver it on the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

#: Slack's re-delivery schedule after a missed ack: immediately, +1 minute, +5 minutes
SLACK_RETRY_DELAYS: tuple[float, ...] = (0.0, 60.0, 300.0)


@dataclass(slots=True)
class Attempt:
    """One try at delivering an event.

    ``outcome``: ``acked``, ``timeout`` (no ack in time), ``ack_lost`` (the app acked but the
    fake was told to lose it), ``dropped`` (the connection closed first), ``http_<status>`` or
    ``connection_failed``.
    """

    t: float
    transport: str  # socket | http
    retry_num: int
    envelope_id: str | None = None
    outcome: str = "pending"


@dataclass(slots=True)
class Delivery:
    """One injected event/command and what happened to it."""

    kind: str  # events_api | slash_commands | interactive
    payload: dict[str, Any]
    attempts: list[Attempt] = field(default_factory=list)
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: what the app sent back: the ack's ``payload`` (Socket Mode) or the HTTP body
    response: Any = None

    @property
    def event_id(self) -> str | None:
        """The ``event_id`` of an Events API payload (the dedupe key), else None."""
        return self.payload.get("event_id") if self.kind == "events_api" else None

    @property
    def event(self) -> dict[str, Any]:
        """The inner ``event`` of an Events API payload (``{}`` for commands/interactions)."""
        return self.payload.get("event", {}) if self.kind == "events_api" else {}

    @property
    def retries(self) -> int:
        """How many times it was re-delivered."""
        return max(0, len(self.attempts) - 1)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's request signature: ``v0=`` + HMAC-SHA256 of ``v0:{ts}:{body}``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


class SocketConnection:
    """One open Socket Mode websocket (a Starlette ``WebSocket``)."""

    def __init__(self, websocket: Any, connection_id: int) -> None:
        self.websocket = websocket
        self.id = connection_id
        self.open = True
        #: envelope ids sent on this connection and not yet acked: (ack future, retry number)
        self.pending: dict[str, tuple[asyncio.Future[Any], int]] = {}

    async def send(self, message: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(message))


class EventDelivery:
    """Queue, send, await acks and re-deliver (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        signing_secret: str,
        ack_timeout: float,
        retry_delays: tuple[float, ...],
        seed: int = 0,
    ) -> None:
        self.clock = clock
        self.signing_secret = signing_secret
        self.ack_timeout = ack_timeout
        self.retry_delays = tuple(retry_delays)
        #: HTTP Events mode when set: the app's Request URL; Socket Mode otherwise
        self.events_url: str | None = None
        self.connections: list[SocketConnection] = []
        self.deliveries: list[Delivery] = []
        #: acks (envelope ids) that arrived after their attempt had timed out
        self.late_acks: list[str] = []
        #: the next N acks are lost; ``ack_loss_rate`` loses a random share of first deliveries' acks
        self.lose_acks = 0
        self.ack_loss_rate = 0.0
        self.random = random.Random(seed)
        self._lost: set[str] = set()
        #: replaced (after being set) whenever a connection opens or closes
        self.changed = asyncio.Event()
        #: called whenever something a test may wait for happened (an ack, a connection)
        self.on_change: Callable[[], None] = lambda: None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: Any = None
        self._connection_ids = 0

    async def start(self) -> None:
        import httpx  # lazy: part of the testing kit only

        self._http = httpx.AsyncClient(timeout=None)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.websocket.close(code=1001)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- submitting ------------------------------------------------------------------------

    def submit(self, kind: str, payload: dict[str, Any]) -> Delivery:
        """Start delivering ``payload``; returns its :class:`Delivery` at once."""
        delivery = Delivery(kind, payload)
        self.deliveries.append(delivery)
        task = asyncio.get_running_loop().create_task(self._run(delivery), name=f"fake-slack-{kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery

    async def _run(self, delivery: Delivery) -> None:
        try:
            for retry_num in range(len(self.retry_delays) + 1):
                if retry_num:
                    await asyncio.sleep(self.retry_delays[retry_num - 1])
                if self.events_url is None:
                    acked = await self._via_socket(delivery, retry_num)
                else:
                    acked = await self._via_http(delivery, retry_num)
                if acked:
                    delivery.acked.set()
                    return
        finally:
            delivery.done.set()
            self.on_change()

    # -- Socket Mode -----------------------------------------------------------------------

    def connected(self, websocket: Any) -> SocketConnection:
        """Register a new websocket (called by the route once accepted)."""
        self._connection_ids += 1
        conn = SocketConnection(websocket, self._connection_ids)
        self.connections.append(conn)
        self._signal()
        return conn

    def disconnected(self, conn: SocketConnection) -> None:
        """Forget ``conn``; its unacked envelopes count as dropped (and will be re-delivered)."""
        conn.open = False
        if conn in self.connections:
            self.connections.remove(conn)
        self._signal()
        for future, _retry_num in conn.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("websocket closed"))
        conn.pending.clear()

    def _signal(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()
        self.on_change()

    async def wait_for_connection(self) -> SocketConnection:
        """The newest open connection, waiting for one if there is none."""
        while not any(c.open for c in self.connections):
            await self.changed.wait()
        return [c for c in self.connections if c.open][-1]

    def received(self, conn: SocketConnection, message: dict[str, Any]) -> None:
        """An app message on the socket: an ack ``{"envelope_id": …, "payload"?: …}``."""
        envelope_id = message.get("envelope_id")
        if not isinstance(envelope_id, str):
            return
        entry = conn.pending.pop(envelope_id, None)
        if entry is None or entry[0].done():
            self.late_acks.append(envelope_id)
            return
        future, retry_num = entry
        if self._lose(retry_num):
            self._lost.add(envelope_id)
            return
        future.set_result(message.get("payload"))

    def _lose(self, retry_num: int) -> bool:
        """Is this ack lost? The next ``lose_acks`` are; then a share ``ack_loss_rate`` of first
        deliveries (never a re-delivery's, so every event still arrives in the end)."""
        if self.lose_acks > 0:
            self.lose_acks -= 1
            return True
        return bool(self.ack_loss_rate) and retry_num == 0 and self.random.random() < self.ack_loss_rate

    async def _via_socket(self, delivery: Delivery, retry_num: int) -> bool:
        conn = await self.wait_for_connection()
        envelope_id = str(uuid.uuid4())
        attempt = Attempt(self.clock(), "socket", retry_num, envelope_id)
        delivery.attempts.append(attempt)
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id, "payload": delivery.payload, "type": delivery.kind,
            "accepts_response_payload": delivery.kind != "events_api",
        }  # fmt: skip
        if delivery.kind == "events_api":
            envelope["retry_attempt"] = retry_num
            envelope["retry_reason"] = "timeout" if retry_num else ""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        conn.pending[envelope_id] = (future, retry_num)
        try:
            await conn.send(envelope)
            delivery.response = await asyncio.wait_for(future, self.ack_timeout)
        except TimeoutError:
            conn.pending.pop(envelope_id, None)
            attempt.outcome = "ack_lost" if envelope_id in self._lost else "timeout"
            return False
        except Exception:  # closed under us: ConnectionError, or the websocket library's own
            attempt.outcome = "dropped"
            return False
        attempt.outcome = "acked"
        return True

    # -- HTTP Events mode ------------------------------------------------------------------

    def encode(self, delivery: Delivery) -> tuple[bytes, str]:
        """The HTTP body and content type Slack uses for this kind of payload."""
        if delivery.kind == "events_api":
            return json.dumps(delivery.payload).encode(), "application/json"
        if delivery.kind == "slash_commands":
            return urlencode(delivery.payload).encode(), "application/x-www-form-urlencoded"
        form = urlencode({"payload": json.dumps(delivery.payload)}).encode()
        return form, "application/x-www-form-urlencoded"

    def signed_headers(self, body: bytes, content_type: str, *, secret: str | None = None) -> dict[str, str]:
        """Headers of a signed request (wall-clock timestamp: apps reject stale ones)."""
        timestamp = str(int(time.time()))
        return {"Content-Type": content_type, "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": sign(secret or self.signing_secret, timestamp, body),
                "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"}  # fmt: skip

    async def _via_http(self, delivery: Delivery, retry_num: int) -> bool:
        assert self.events_url is not None and self._http is not None
        body, content_type = self.encode(delivery)
        headers = self.signed_headers(body, content_type)
        if retry_num:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            previous = delivery.attempts[-1].outcome if delivery.attempts else "timeout"
            timed_out = previous in ("timeout", "ack_lost")
            headers["X-Slack-Retry-Reason"] = "http_timeout" if timed_out else "http_error"
        attempt = Attempt(self.clock(), "http", retry_num)
        delivery.attempts.append(attempt)
        try:
            response = await asyncio.wait_for(
                self._http.post(self.events_url, content=body, headers=headers), self.ack_timeout
            )
        except TimeoutError:
            attempt.outcome = "timeout"
            return False
        except Exception:  # refused, reset …: Slack says connection_failed
            attempt.outcome = "connection_failed"
            return False
        if response.status_code != 200:
            attempt.outcome = f"http_{response.status_code}"
            return False
        if self._lose(retry_num):
            attempt.outcome = "ack_lost"
            return False
        attempt.outcome = "acked"
        delivery.response = response.text
        return True

    async def post_wrongly_signed(self, delivery: Delivery, *, stale: bool = False) -> int:
        """POST ``delivery`` once with a bad signature (or a stale timestamp); the HTTP status."""
        assert self.events_url is not None and self._http is not None
        body, content_type = self.encode(delivery)
        headers = self.signed_headers(body, content_type, secret="not-the-signing-secret")
        if stale:
            old = str(int(time.time()) - 600)
            headers["X-Slack-Request-Timestamp"] = old
            headers["X-Slack-Signature"] = sign(self.signing_secret, old, body)
        response = await self._http.post(self.events_url, content=body, headers=headers)
        return response.status_code
