"""The gateway websocket: HELLO, IDENTIFY, READY, GUILD_CREATE, heartbeats, RESUME, dispatch.

discord.py connects to ``ws://127.0.0.1:PORT/gateway?v=10&encoding=json&compress=zlib-stream``.
Every frame the fake sends goes through one per-connection writer (so a synchronous
:meth:`Gateway.dispatch` from a test keeps its order) and is compressed as the client asked:
``zlib-stream`` (one deflate stream per connection, each message ending in a sync flush,
``00 00 ff ff``) or ``zstd-stream`` when ``zstandard`` is importable; plain JSON text otherwise.

Sessions outlive connections: a dispatch while the bot is disconnected is buffered with its
sequence number, and a RESUME replays everything after the client's ``seq`` before
``RESUMED``; :meth:`Gateway.request_reconnect` sends op 7 (RECONNECT). Close codes are
Discord's: 4001 unknown opcode, 4002 decode error, 4003 not authenticated, 4004 authentication
failed, 4005 already authenticated, 4009 session timed out (no heartbeat), 4013 invalid
intents, 4014 disallowed intents.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from starlette.websockets import WebSocket, WebSocketDisconnect

from relaybot.core.testing.fake_discord.state import MESSAGE_CONTENT_INTENT, PRIVILEGED_INTENTS, State
from relaybot.core.testing.fake_discord.store import StoredMessage

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE, RESUME, RECONNECT, REQUEST_MEMBERS = 0, 1, 2, 3, 4, 6, 7, 8
INVALID_SESSION, HELLO, HEARTBEAT_ACK = 9, 10, 11

GUILDS_INTENT = 1 << 0
GUILD_MESSAGES_INTENT = 1 << 9
DIRECT_MESSAGES_INTENT = 1 << 12
_ALL_INTENTS = (1 << 26) - 1


class GatewayEvent(NamedTuple):
    """One gateway frame as the fake saw it: ``direction`` ``"sent"`` or ``"received"``."""

    t: float
    direction: str
    op: int | None
    event: str | None
    close_code: int | None = None


class _Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class _Encoder:
    """Per-connection transport compression (the stream spans the whole connection)."""

    def __init__(self, compress: str | None) -> None:
        self.kind = compress
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd: Any = None
        if compress == "zstd-stream":
            import zstandard  # the caller checked it is importable

            self._zstd = zstandard.ZstdCompressor().compressobj()
            self._zstd_flush = zstandard.COMPRESSOBJ_FLUSH_BLOCK

    def encode(self, text: str) -> bytes | str:
        if self._zlib is not None:
            return self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
        if self._zstd is not None:
            return self._zstd.compress(text.encode()) + self._zstd.flush(self._zstd_flush)
        return text


@dataclass(eq=False)
class _Connection:
    ws: WebSocket
    encoder: _Encoder
    queue: asyncio.Queue[dict[str, Any] | _Close] = field(default_factory=asyncio.Queue)
    session: GatewaySession | None = None


@dataclass(eq=False)
class GatewaySession:
    """A gateway session: its id, the intents it identified with, and its dispatch buffer."""

    session_id: str
    intents: int
    seq: int = 0
    buffer: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10_000))
    connection: _Connection | None = None
    valid: bool = True

    def send(self, event: str, data: dict[str, Any]) -> None:
        """Number, buffer and (when connected) send one dispatch."""
        self.seq += 1
        payload = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
        self.buffer.append(payload)
        if self.connection is not None:
            self.connection.queue.put_nowait(payload)


class Gateway:
    """Accepts gateway connections for one bot and dispatches events to its sessions."""

    def __init__(self, state: State, *, token: str, heartbeat_interval: float, clock: Callable[[], float],
                 url: Callable[[], str], notify: Callable[[], None]) -> None:  # fmt: skip
        self.state = state
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self.clock = clock
        self.url = url
        self._notify = notify
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: list[_Connection] = []
        self.events: list[GatewayEvent] = []
        self.identifies = 0
        self.resumes = 0
        self.compressions: list[str | None] = []  # the transport each connection asked for

    # -- test-side ---------------------------------------------------------------------------

    def dispatch(self, event: str, data: dict[str, Any], *, message: StoredMessage | None = None) -> None:
        """Send ``event`` to every valid session (buffered for disconnected ones).

        A guild ``MESSAGE_CREATE`` reaches a session without the MESSAGE_CONTENT intent with
        its content, embeds and attachments empty unless it mentions the bot (Discord's rule).
        """
        for session in self.sessions.values():
            if not session.valid or not self._wants(session, event, data):
                continue
            payload = data
            if message is not None and not session.intents & MESSAGE_CONTENT_INTENT:
                payload = _without_content(data, message, self.state.bot.id)
            session.send(event, payload)
        self._notify()

    async def drop(self, code: int = 4000, reason: str = "Unknown error") -> int:
        """Close every open connection with ``code`` (the sessions stay resumable).

        Returns how many connections were closed. 4000 is what Discord uses for a generic
        drop; discord.py reconnects and RESUMEs.
        """
        closing = list(self.connections)
        for conn in closing:
            conn.queue.put_nowait(_Close(code, reason))
        return len(closing)

    def request_reconnect(self) -> None:
        """Send RECONNECT (op 7) on every connection, as Discord does before a restart."""
        for conn in list(self.connections):
            conn.queue.put_nowait({"op": RECONNECT, "d": None})

    def invalidate_sessions(self, *, resumable: bool = False) -> None:
        """Send INVALID_SESSION (op 9) on every connection; ``resumable=False`` forgets them."""
        for conn in list(self.connections):
            conn.queue.put_nowait({"op": INVALID_SESSION, "d": resumable})
            if not resumable and conn.session is not None:
                conn.session.valid = False

    @property
    def connected(self) -> int:
        """How many connections have identified or resumed and are still open."""
        return sum(1 for c in self.connections if c.session is not None)

    # -- the websocket ---------------------------------------------------------------------

    async def endpoint(self, ws: WebSocket) -> None:
        """The ASGI websocket endpoint."""
        await ws.accept()
        compress = ws.query_params.get("compress")
        if compress == "zstd-stream" and not _zstd_available():
            await ws.close(4000, "zstd-stream needs the zstandard package in the fake's environment")
            return
        conn = _Connection(ws, _Encoder(compress if compress in ("zlib-stream", "zstd-stream") else None))
        self.compressions.append(conn.encoder.kind)
        self.connections.append(conn)
        writer = asyncio.create_task(self._writer(conn))
        conn.queue.put_nowait({"op": HELLO, "d": {"heartbeat_interval": int(self.heartbeat_interval * 1000)}})
        closing = False
        try:
            await self._reader(conn)
        except _Close as close:
            closing = True
            conn.queue.put_nowait(close)
        except WebSocketDisconnect:
            pass
        finally:
            if conn in self.connections:
                self.connections.remove(conn)
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            if closing:  # let the writer flush what is queued and send the close frame
                await asyncio.wait([writer], timeout=5)
            writer.cancel()
            self._notify()

    async def _writer(self, conn: _Connection) -> None:
        while True:
            item = await conn.queue.get()
            if isinstance(item, _Close):
                self._record("sent", None, None, item.code)
                try:
                    await conn.ws.close(item.code, item.reason)
                except (RuntimeError, OSError):
                    pass  # already closed by the client
                if conn in self.connections:
                    self.connections.remove(conn)
                return
            frame = conn.encoder.encode(json.dumps(item, separators=(",", ":")))
            try:
                if isinstance(frame, bytes):
                    await conn.ws.send_bytes(frame)
                else:
                    await conn.ws.send_text(frame)
            except (WebSocketDisconnect, RuntimeError, OSError):
                return  # the client went away; a resumed session gets the buffer replayed
            self._record("sent", item.get("op"), item.get("t"))

    async def _reader(self, conn: _Connection) -> None:
        # Discord allows the interval plus some latency before it gives up on a client
        deadline = self.clock() + self.heartbeat_interval * 1.5
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise _Close(4009, "Session timed out.")
            try:
                message = await asyncio.wait_for(conn.ws.receive(), timeout=remaining)
            except TimeoutError:
                raise _Close(4009, "Session timed out.") from None
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or message.get("bytes") or b""
            try:
                payload = json.loads(raw)
                op = payload["op"]
            except (ValueError, TypeError, KeyError):
                raise _Close(4002, "Error while decoding payload.") from None
            self._record("received", op, None)
            if op == HEARTBEAT:
                deadline = self.clock() + self.heartbeat_interval * 1.5
                conn.queue.put_nowait({"op": HEARTBEAT_ACK})
            elif op == IDENTIFY:
                self._identify(conn, payload.get("d") or {})
            elif op == RESUME:
                self._resume(conn, payload.get("d") or {})
            elif conn.session is None:
                raise _Close(4003, "Not authenticated.")
            elif op == REQUEST_MEMBERS:
                self._members_chunk(conn.session, payload.get("d") or {})
            elif op not in (PRESENCE, VOICE):
                raise _Close(4001, "Unknown opcode.")

    def _identify(self, conn: _Connection, data: dict[str, Any]) -> None:
        if conn.session is not None:
            raise _Close(4005, "Already authenticated.")
        if data.get("token") != self.token:
            raise _Close(4004, "Authentication failed.")
        intents = data.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents & ~_ALL_INTENTS:
            raise _Close(4013, "Invalid intent(s).")
        for name, bit in PRIVILEGED_INTENTS.items():
            if intents & bit and name not in self.state.granted_intents:
                # discord.py turns this into PrivilegedIntentsRequired
                raise _Close(4014, "Disallowed intent(s).")
        self.identifies += 1
        session = GatewaySession(secrets.token_hex(16), intents, connection=conn)
        conn.session = session
        self.sessions[session.session_id] = session
        st = self.state
        session.send("READY", {
            "v": 10, "user": st.bot.to_api() | {"verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": str(g), "unavailable": True} for g in st.guilds],
            "session_id": session.session_id, "resume_gateway_url": self.url(),
            "session_type": "normal", "private_channels": [], "relationships": [],
            "presences": [], "guild_join_requests": [], "geo_ordered_rtc_regions": [],
            "application": {"id": str(st.application_id), "flags": st.application_flags},
            "user_settings": {}, "auth": {}, "_trace": ["fake-discord"],
        } | ({"shard": data["shard"]} if "shard" in data else {}))  # fmt: skip
        if intents & GUILDS_INTENT:
            for guild in st.guilds.values():
                session.send("GUILD_CREATE", guild.to_api())
        self._notify()

    def _resume(self, conn: _Connection, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            raise _Close(4004, "Authentication failed.")
        session = self.sessions.get(str(data.get("session_id")))
        seq = data.get("seq")
        oldest = session.buffer[0]["s"] if session and session.buffer else 1
        if session is None or not session.valid or not isinstance(seq, int) or seq + 1 < oldest:
            conn.queue.put_nowait({"op": INVALID_SESSION, "d": False})
            return
        if session.connection is not None and session.connection is not conn:
            session.connection.queue.put_nowait(_Close(4000, "Session resumed elsewhere."))
        self.resumes += 1
        session.connection = conn
        conn.session = session
        for payload in session.buffer:
            if payload["s"] > seq:
                conn.queue.put_nowait(payload)
        session.send("RESUMED", {"_trace": ["fake-discord"]})
        self._notify()

    def _members_chunk(self, session: GatewaySession, data: dict[str, Any]) -> None:
        guild = self.state.guilds.get(int(data.get("guild_id") or 0))
        if guild is None:
            return
        chunk = {"guild_id": str(guild.id), "members": [m.to_api() for m in guild.members.values()],
                 "chunk_index": 0, "chunk_count": 1, "not_found": []}  # fmt: skip
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        session.send("GUILD_MEMBERS_CHUNK", chunk)

    def _wants(self, session: GatewaySession, event: str, data: dict[str, Any]) -> bool:
        if event.startswith("MESSAGE_"):
            bit = GUILD_MESSAGES_INTENT if "guild_id" in data else DIRECT_MESSAGES_INTENT
            return bool(session.intents & bit)
        if event.startswith(("GUILD_", "THREAD_", "CHANNEL_")):
            return bool(session.intents & GUILDS_INTENT)
        return True

    def _record(self, direction: str, op: int | None, event: str | None, code: int | None = None) -> None:
        self.events.append(GatewayEvent(self.clock(), direction, op, event, code))


def _without_content(data: dict[str, Any], message: StoredMessage, bot_id: int) -> dict[str, Any]:
    mentioned = any(u.id == bot_id for u in message.mentions)
    if message.guild_id is None or message.author.id == bot_id or mentioned:
        return data
    return data | {"content": "", "embeds": [], "attachments": [], "components": []}


def _zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True
