"""Per-browser event channels for the SSE stream, with a bounded replay buffer.

Every browser (client id) has one :class:`Channel`. Each event gets the next id of that
channel, is kept in a bounded buffer, and is pushed to every open stream of the client (two
tabs of one browser share a client id, so both see the reply). A reconnecting EventSource
sends ``Last-Event-ID``; the channel replays what came after it, so no text is lost or
duplicated. When the gap is older than the buffer, or the id comes from an earlier server run
(ids carry a per-process epoch), the client gets a ``reset`` event and reloads history instead.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

#: events kept per client for resuming (a long reply at 20 frames/s fills this in ~100 s;
#: a client gone that long reloads its history instead, which is correct just slower)
REPLAY_EVENTS = 2048
#: events queued for one slow stream before it is dropped (it reconnects and resumes)
QUEUE_LIMIT = 4096
#: forget channels without streams after this many idle seconds
IDLE_SECONDS = 3600.0
#: an SSE comment this often keeps proxies and the browser from timing out an idle stream
KEEPALIVE_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE event: ``seq`` increments per channel; ``data`` is JSON-serialisable."""

    seq: int
    name: str
    data: dict[str, Any]

    def encode(self, epoch: str) -> bytes:
        """The event in ``text/event-stream`` wire format."""
        payload = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))
        return f"id: {epoch}-{self.seq}\nevent: {self.name}\ndata: {payload}\n\n".encode()


class Subscriber:
    """One open event stream (a browser tab)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def push(self, event: Event) -> bool:
        """Queue ``event``; False when the stream is hopelessly behind (it gets closed)."""
        if self.queue.qsize() >= QUEUE_LIMIT:
            self.queue.put_nowait(None)
            return False
        self.queue.put_nowait(event)
        return True


class Channel:
    """The events of one client id."""

    def __init__(self) -> None:
        self.next_seq = 1
        self.buffer: deque[Event] = deque(maxlen=REPLAY_EVENTS)
        self.subscribers: set[Subscriber] = set()
        self.touched = time.monotonic()

    def publish(self, name: str, data: dict[str, Any]) -> Event:
        """Number, buffer and deliver an event to every open stream."""
        event = Event(self.next_seq, name, data)
        self.next_seq += 1
        self.buffer.append(event)
        self.touched = time.monotonic()
        for sub in list(self.subscribers):
            if not sub.push(event):
                self.subscribers.discard(sub)
        return event

    def replay_after(self, seq: int) -> list[Event] | None:
        """Events after ``seq``; None when some of them are no longer buffered."""
        if seq >= self.next_seq:
            return None  # from the future: an id of an earlier server run
        if seq == self.next_seq - 1:
            return []
        if not self.buffer or self.buffer[0].seq > seq + 1:
            return None
        return [e for e in self.buffer if e.seq > seq]


class EventHub:
    """All channels of one web connector."""

    def __init__(self) -> None:
        #: changes every process start, so ids of an earlier run are recognised
        self.epoch = secrets.token_hex(4)
        self._channels: dict[str, Channel] = {}
        self._closed = False

    def channel(self, client: str) -> Channel:
        """The channel of ``client`` (created on first use)."""
        channel = self._channels.get(client)
        if channel is None:
            self._sweep()
            channel = self._channels[client] = Channel()
        return channel

    def publish(self, client: str, name: str, data: dict[str, Any]) -> Event:
        """Publish an event to ``client`` (buffered even when no tab is open)."""
        return self.channel(client).publish(name, data)

    def parse_last_id(self, value: str | None) -> int | None:
        """The sequence number in a ``Last-Event-ID``; -1 when it is from another run or bad."""
        if not value:
            return None
        epoch, _, seq = value.strip().partition("-")
        if epoch != self.epoch or not seq.isdigit():
            return -1
        return int(seq)

    async def stream(
        self, client: str, last_event_id: str | None, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[bytes]:
        """The SSE byte stream of one tab: replay (or reset), then live events, keep-alives.

        ``on_open`` (a callable taking nothing) runs after the subscription is registered and
        before live events flow; the connector uses it to send snapshots of replies in flight.
        """
        channel = self.channel(client)
        sub = Subscriber()
        # the replay is taken and the subscription registered with no await in between, so an
        # event is either in the replay or in the queue: never missed, never twice
        replay: list[Event] | None = []
        last = self.parse_last_id(last_event_id)
        if last is not None:
            replay = channel.replay_after(last) if last >= 0 else None
        channel.subscribers.add(sub)
        try:
            yield b"retry: 1500\n\n"
            if replay is None:
                reset = Event(channel.next_seq - 1, "reset", {"reason": "missed events"})
                yield reset.encode(self.epoch)
                if on_open is not None:
                    on_open()
            else:
                for old in replay:
                    yield old.encode(self.epoch)
                if last is None and on_open is not None:
                    on_open()
            while not self._closed:
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        live = await sub.queue.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if live is None:
                    return  # too far behind (or shutdown): the browser reconnects with Last-Event-ID
                yield live.encode(self.epoch)
        finally:
            channel.subscribers.discard(sub)
            channel.touched = time.monotonic()

    def subscriber_count(self, client: str) -> int:
        """Open streams of ``client`` (for tests and diagnostics)."""
        channel = self._channels.get(client)
        return len(channel.subscribers) if channel else 0

    def close(self) -> None:
        """End every open stream (server shutdown)."""
        self._closed = True
        for channel in self._channels.values():
            for sub in list(channel.subscribers):
                sub.queue.put_nowait(None)

    def _sweep(self) -> None:
        now = time.monotonic()
        stale = [k for k, c in self._channels.items() if not c.subscribers and now - c.touched > IDLE_SECONDS]
        for key in stale:
            del self._channels[key]
