"""What the fake provider servers have in common (private: use the concrete fakes).

A fake is a real HTTP server (Starlette on :class:`~relaybot.core.testing.server.LoopbackServer`)
that answers each request with the next scripted reply, or a default answer when none is
queued; records every request; replays raw bodies split at chosen byte offsets; paces streamed
text; and counts streams that the client closed before the server finished them.
:class:`FakeStreamingServer` does all that; a subclass adds its routes, its key check, its
error body shape and its event format.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from relaybot.core.testing.server import LoopbackServer

__all__ = ["FakeRequest", "FakeStreamingServer", "RecordedRequest", "ScriptedReply", "split_text"]


@dataclass(slots=True)
class FakeRequest:
    """One request the fake received: its path, parsed JSON body and headers (lower-case)."""

    path: str
    json: dict[str, Any]
    headers: dict[str, str]


@dataclass(slots=True)
class RecordedRequest(FakeRequest):
    """One request a fake received: path, JSON body, headers (lower-case), query parameters
    and when it arrived (``time.monotonic()``)."""

    query: dict[str, str] = field(default_factory=dict)
    received_at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class ScriptedReply:
    """One scripted response. The fakes build it (and subclasses of it) in their ``add_*`` methods.

    ``finish_reason`` holds the provider's own spelling (``end_turn``, ``STOP`` …).
    ``cut_after_chars`` ends the text after that many characters; what follows the cut
    (nothing, or an error event) is up to the fake.
    """

    text: str = ""
    chunks: list[str] = field(default_factory=list)
    first_token_delay: float = 0.0
    tokens_per_second: float | None = None
    usage: tuple[int, int] | None = None
    finish_reason: str = ""
    drop_after_chars: int | None = None
    status: int = 200
    error_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    split_at: list[int] | None = None
    chunk_delay: float = 0.0
    content_type: str = "text/event-stream"


def split_text(text: str, chunk_size_chars: int | list[str]) -> tuple[str, list[str]]:
    """``(text, chunks)``: ``text`` cut every ``chunk_size_chars`` characters, or the given chunks.

    A list of chunks must join to ``text`` when ``text`` is not empty.
    """
    if isinstance(chunk_size_chars, list):
        chunks = list(chunk_size_chars)
        if text and "".join(chunks) != text:
            raise ValueError("the chunks do not join to the text")
        return "".join(chunks), chunks
    if chunk_size_chars < 1:
        raise ValueError("chunk_size_chars must be at least 1")
    size = chunk_size_chars
    return text, [text[i : i + size] for i in range(0, len(text), size)] or [""]


ReplyT = TypeVar("ReplyT", bound=ScriptedReply)


class FakeStreamingServer(abc.ABC, Generic[ReplyT]):
    """Base of the fake provider servers: lifecycle, script queue, request log, raw replay.

    Attributes a test reads: :attr:`requests` (every request, in order) and :attr:`disconnects`
    (streams the client closed before the server finished them). ``reply_type`` is the
    :class:`ScriptedReply` subclass the fake queues (what :meth:`add_raw` builds).
    """

    def __init__(self, *, api_key: str | None, model: str, reply_type: type[ReplyT]) -> None:
        from starlette.applications import Starlette  # lazy: starlette is a testing extra

        self.api_key = api_key
        self.model = model
        #: answers requests when no scripted reply is queued: ``request_json -> text``
        self.default: Callable[[dict[str, Any]], str] = lambda body: f"You said: {self.last_user_text(body)}"
        #: pace of the default answers (``None``: as fast as possible), e.g. to keep several
        #: replies streaming at once without scripting each
        self.default_tokens_per_second: float | None = None
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0
        self._reply_type = reply_type
        self._queue: deque[ReplyT] = deque()
        self._disconnected = asyncio.Event()
        self._server = LoopbackServer(Starlette(routes=self._routes()))

    # ── what a subclass provides ────────────────────────────────────────────────────────────

    @abc.abstractmethod
    def _routes(self) -> list[Any]:
        """The Starlette routes of this fake."""

    @abc.abstractmethod
    def last_user_text(self, body: dict[str, Any]) -> str:
        """The text of the last user message in a request body (for the default answer)."""

    @abc.abstractmethod
    def _default_reply(self, text: str) -> ReplyT:
        """The reply used when nothing is queued."""

    # ── lifecycle ───────────────────────────────────────────────────────────────────────────

    @property
    def url(self) -> str:
        """Root URL of the server (``http://127.0.0.1:PORT``)."""
        return self._server.url

    async def start(self) -> None:
        """Start serving on a free loopback port."""
        await self._server.start()

    async def stop(self) -> None:
        """Stop serving."""
        await self._server.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ── scripting ───────────────────────────────────────────────────────────────────────────

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        return len(self._queue)

    def _enqueue(self, reply: ReplyT) -> ReplyT:
        self._queue.append(reply)
        return reply

    def add_raw(
        self,
        body: bytes,
        *,
        split_at: list[int] | None = None,
        chunk_delay: float = 0.0,
        status: int = 200,
        content_type: str = "text/event-stream",
        headers: dict[str, str] | None = None,
    ) -> ReplyT:
        """Queue a body replayed byte for byte (e.g. a recorded ``.sse`` fixture).

        The body is sent in pieces cut at the ``split_at`` byte offsets, with ``chunk_delay``
        seconds between pieces; a delay makes it likely that each piece reaches the client
        in its own read.
        """
        return self._enqueue(
            self._reply_type(
                raw=bytes(body),
                split_at=sorted(set(split_at or [])),
                chunk_delay=chunk_delay,
                status=status,
                content_type=content_type,
                headers=dict(headers or {}),
            )
        )

    async def wait_for_disconnects(self, count: int = 1) -> None:
        """Return once at least ``count`` streams were closed early by clients.

        Bound the wait with ``asyncio.timeout(...)``; a disconnect is seen as soon as the
        server notices the closed socket.
        """
        while self.disconnects < count:
            self._disconnected.clear()
            await self._disconnected.wait()

    # ── helpers for the handlers ────────────────────────────────────────────────────────────

    async def _record(self, request: Any) -> tuple[RecordedRequest, dict[str, Any] | None]:
        """Log ``request``; return the record and its JSON object body (``None`` if not one)."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = dict(request.query_params)
        record = RecordedRequest(request.url.path, body if isinstance(body, dict) else {}, headers, query)
        self.requests.append(record)
        return record, body if isinstance(body, dict) else None

    def _next_reply(self, body: dict[str, Any]) -> ReplyT:
        if self._queue:
            return self._queue.popleft()
        return self._default_reply(self.default(body))

    def _error_response(self, reply: ScriptedReply) -> Any:
        """The HTTP error answer of a reply with a non-200 ``status``."""
        from starlette.responses import JSONResponse, Response

        if isinstance(reply.error_body, dict | list):
            return JSONResponse(reply.error_body, reply.status, headers=reply.headers)
        content = reply.error_body if reply.error_body is not None else b""
        return Response(content, reply.status, headers=reply.headers)

    def _raw_response(self, reply: ScriptedReply) -> Any:
        return self._streaming(self._raw_pieces(reply), reply.status, reply.headers, reply.content_type)

    def _streaming(
        self, pieces: AsyncIterator[bytes], status: int, headers: dict[str, str], media: str
    ) -> Any:
        from starlette.responses import StreamingResponse

        tracked = self._track(pieces)

        class _ClosingResponse(StreamingResponse):
            # Starlette cancels the sending task when the client disconnects; the body
            # generator may then be parked at a ``yield`` and would only be finalised by the
            # garbage collector. Closing it here runs its ``finally`` (which counts the
            # disconnect) at once.
            async def stream_response(self, send: Any) -> None:
                try:
                    await super().stream_response(send)
                finally:
                    await tracked.aclose()

        return _ClosingResponse(tracked, status_code=status, headers=headers, media_type=media)

    async def _track(self, pieces: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        finished = False
        try:
            async for piece in pieces:
                yield piece
            finished = True
        finally:
            if not finished:
                self.disconnects += 1
                self._disconnected.set()

    async def _raw_pieces(self, reply: ScriptedReply) -> AsyncIterator[bytes]:
        assert reply.raw is not None
        bounds = [0, *(i for i in reply.split_at or [] if 0 < i < len(reply.raw)), len(reply.raw)]
        for n, (start, end) in enumerate(itertools.pairwise(bounds)):
            if n and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            yield reply.raw[start:end]

    @staticmethod
    async def _paced(reply: ScriptedReply, cut_after_chars: int | None) -> AsyncIterator[tuple[str, bool]]:
        """``(piece, is_last)`` for the reply's text, after ``first_token_delay``, at ``tokens_per_second``.

        With ``cut_after_chars`` it stops once that many characters were yielded (the last
        piece shortened to fit). ``is_last`` lets a fake put its end marker on the last piece
        (Gemini does) without holding that piece back.
        """
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        interval = 1.0 / reply.tokens_per_second if reply.tokens_per_second else 0.0
        sent = 0
        count = len(reply.chunks)
        for n, piece in enumerate(reply.chunks):
            if n and interval:
                await asyncio.sleep(interval)
            if cut_after_chars is not None and sent + len(piece) >= cut_after_chars:
                rest = piece[: cut_after_chars - sent]
                if rest:
                    yield rest, True
                return
            if piece:
                yield piece, n == count - 1
            sent += len(piece)
