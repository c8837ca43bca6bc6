"""A lean, paced OpenAI-compatible streaming server: the benchmark's load generator.

Why not :class:`relaybot.core.testing.fake_openai.FakeOpenAIServer` (the tests' fake)? It runs
every frame through Starlette and uvicorn, which costs ~30 µs of CPU per frame. At 1,000
streams × 30 tokens/s that is a whole core, so the fake itself fell behind: streams meant to
last 16.7 s took 28 s, and the bot was measured against a lighter load than the benchmark
claimed (seen 2026-12-01). This server parses requests with h11 and sends each stream's
pre-encoded frames from plain ``loop.call_at`` timers, a few µs per frame, so the provider side
delivers the rate it promises and ``provider_stream_s_*`` in the result shows that it did.

It speaks only what the benchmark needs: ``POST …/chat/completions`` with ``"stream": true``
and a Bearer key, answered as ``text/event-stream`` in HTTP/1.1 chunked encoding, keep-alive.
The answer to a last user message ending in ``<key>`` is ``tokens(key)``, one SSE chunk per
token in OpenAI's shape, then a ``finish_reason`` chunk, a usage chunk and ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import h11

__all__ = ["PacedOpenAIServer"]


def _chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(obj: dict[str, Any]) -> bytes:
    return _chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n")


class PacedOpenAIServer:
    """Serve paced chat-completion streams on 127.0.0.1 (see the module docstring).

    ``tokens(key)`` gives the answer's tokens; ``rate`` is tokens per second per stream;
    ``first_token_delay`` is the think time before the first token. ``spans`` collects
    ``(first frame, last frame)`` in ``time.monotonic()`` for every stream sent to the end.
    """

    def __init__(
        self,
        *,
        api_key: str,
        tokens: Callable[[str], list[str]],
        rate: float,
        first_token_delay: float = 0.0,
        model: str = "gpt-4o-mini",
    ) -> None:
        self.api_key = api_key
        self.tokens = tokens
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.first_token_delay = first_token_delay
        self.model = model
        self.requests = 0
        self.spans: list[tuple[float, float]] = []
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def frames(self, body: dict[str, Any]) -> list[bytes]:
        """What to send for ``body``, one element per write: the role chunk, then one element
        per token, the last one carrying the finish, usage and ``[DONE]`` chunks too (OpenAI
        sends those right after the last token). All chunk-encoded."""
        messages = body.get("messages") or []
        last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        content = last.get("content", "")
        if not isinstance(content, str):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        key = content.rsplit(" ", 1)[-1]
        base = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:29],
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "system_fingerprint": "fp_relaybot",
        }

        def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return _sse({**base, "choices": [choice]})

        tokens = self.tokens(key)
        out = [frame({"role": "assistant", "content": "", "refusal": None})]
        out.extend(frame({"content": token}) for token in tokens)
        trailer = [frame({}, "stop")]
        if (body.get("stream_options") or {}).get("include_usage"):
            completion = len(tokens)
            usage = {"prompt_tokens": 20, "completion_tokens": completion, "total_tokens": 20 + completion}
            trailer.append(_sse({**base, "choices": [], "usage": usage}))
        trailer.append(_chunk(b"data: [DONE]\n\n"))
        out[-1] = b"".join([out[-1], *trailer])
        return out


class _Connection(asyncio.Protocol):
    """One client connection: requests parsed by h11, one paced stream at a time."""

    def __init__(self, server: PacedOpenAIServer) -> None:
        self.server = server
        self.h11 = h11.Connection(h11.SERVER)
        self.transport: asyncio.Transport | None = None
        self.request: h11.Request | None = None
        self.body = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.frames: list[bytes] = []
        self.sent = 0
        self.started = 0.0  # loop time of the stream's start (pacing)
        self.started_mono = 0.0  # time.monotonic() of the same (spans)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._process()

    def _process(self) -> None:
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                self._close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.request, self.body = event, bytearray()
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self._answer()
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _answer(self) -> None:
        request = self.request
        assert request is not None
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if not request.target.endswith(b"/chat/completions") or request.method != b"POST":
            self._respond(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        if headers.get("authorization") != f"Bearer {self.server.api_key}":
            self._respond(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
            return
        try:
            body = json.loads(self.body)
        except ValueError:
            self._respond(400, {"error": {"message": "bad JSON", "type": "invalid_request_error"}})
            return
        self.server.requests += 1
        self.frames = self.server.frames(body)
        self.sent = 0
        head = h11.Response(
            status_code=200,
            headers=[("content-type", "text/event-stream"), ("transfer-encoding", "chunked")],
        )
        # the role chunk with the headers, the first token after the think time, then one
        # token per interval
        self._write(self.h11.send(head) + self.frames[0])
        self.sent = 1
        loop = asyncio.get_running_loop()
        self.started, self.started_mono = loop.time(), time.monotonic()
        self.timer = loop.call_at(self.started + self.server.first_token_delay, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        self._write(self.frames[self.sent])
        self.sent += 1
        if self.sent < len(self.frames):
            # due times from the start, not from now: a late tick does not slow the stream
            due = self.started + self.server.first_token_delay + (self.sent - 1) * self.server.interval
            self.timer = asyncio.get_running_loop().call_at(due, self._tick)
            return
        self.server.spans.append((self.started_mono, time.monotonic()))
        self._write(self.h11.send(h11.EndOfMessage()))
        self.h11.start_next_cycle()
        self._process()  # a next request that arrived meanwhile

    def _respond(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        head = h11.Response(
            status_code=status,
            headers=[("content-type", "application/json"), ("content-length", str(len(data)))],
        )
        self._write(
            self.h11.send(head) + self.h11.send(h11.Data(data=data)) + self.h11.send(h11.EndOfMessage())
        )
        self.h11.start_next_cycle()  # called from _process(), whose loop reads on

    def _write(self, data: bytes | None) -> None:
        if data and self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
