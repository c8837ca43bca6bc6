"""A fake OpenAI Chat Completions server on loopback, for tests, benchmarks and plugin authors.

It is a real HTTP server (Starlette on :class:`~relaybot.core.testing.server.LoopbackServer`),
so the code under test runs its real HTTP client, SSE parser, timeouts and cancellation::

    async with FakeOpenAIServer(api_key="sk-test") as fake:
        fake.add_reply("Hello there!", tokens_per_second=50)
        fake.add_error(429, "Slow down", retry_after=2)
        provider = OpenAIProvider("openai", OpenAIConfig(base_url=fake.base_url, api_key="sk-test"))
        ...
        assert fake.requests[0].json["stream"] is True

Scripted responses are served in order (one per ``POST /v1/chat/completions``); when none are
queued, :attr:`FakeOpenAIServer.default` answers (``"You said: …"``). Streamed replies look like
OpenAI's: ``chat.completion.chunk`` objects with ``id``/``created``/``model``, a first chunk with
the role, one chunk per piece of text, a chunk with ``finish_reason``, a usage chunk with
``choices: []`` when the request set ``stream_options.include_usage``, then ``data: [DONE]``.

``POST /v1/images/generations`` answers like the images API: a real (small) PNG as ``b64_json``,
with the options checked per model as the real API checks them (GPT image models take no
``response_format``; ``dall-e-3`` only ``n=1`` and its three sizes). Scripted replies are shared
with chat completions (one queue, served in arrival order), so ``add_error`` applies to image
requests too; :meth:`FakeOpenAIServer.add_image` queues a specific image.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import itertools
import json
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .server import LoopbackServer

__all__ = ["FakeOpenAIServer", "FakeReply", "FakeRequest"]

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(slots=True)
class FakeRequest:
    """One request the fake received: its path, parsed JSON body and headers (lower-case)."""

    path: str
    json: dict[str, Any]
    headers: dict[str, str]


@dataclass(slots=True)
class FakeReply:
    """One scripted response (build it with the ``add_*`` methods of the server)."""

    text: str = ""
    chunks: list[str] = field(default_factory=list)
    first_token_delay: float = 0.0
    tokens_per_second: float | None = None
    usage: tuple[int, int] | None = None
    finish_reason: str = "stop"
    drop_after_chars: int | None = None
    status: int = 200
    error_body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    refusal: bool = False
    raw: bytes | None = None
    split_at: list[int] | None = None
    chunk_delay: float = 0.0
    content_type: str = "text/event-stream"
    #: for image requests: the PNG to return (``None``: one drawn from the prompt)
    image: bytes | None = None


def _last_user_text(request_json: dict[str, Any]) -> str:
    for message in reversed(request_json.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def default_responder(request_json: dict[str, Any]) -> str:
    """The default answer: ``"You said: <last user text>"``."""
    return f"You said: {_last_user_text(request_json)}"


def estimate_usage(request_json: dict[str, Any], text: str) -> tuple[int, int]:
    """A rough ``(prompt, completion)`` token estimate (~4 characters a token)."""
    prompt = sum(
        4 + len(_content_text(m.get("content"))) // 4
        for m in request_json.get("messages") or []
        if isinstance(m, dict)
    )
    return prompt, math.ceil(len(text) / 4)


def _split(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class FakeOpenAIServer:
    """Serves ``POST /v1/chat/completions`` (streaming and not) and ``GET /v1/models``.

    Attributes a test reads: :attr:`requests` (every request, in order), :attr:`disconnects`
    (streams the client closed before the server finished them). With ``api_key`` set, requests
    without ``Authorization: Bearer <api_key>`` get OpenAI's 401 body.
    """

    def __init__(self, *, api_key: str | None = None, model: str = "gpt-4o-mini") -> None:
        from starlette.applications import Starlette  # lazy: starlette is a testing extra
        from starlette.routing import Route

        self.api_key = api_key
        self.model = model
        #: answers requests when no scripted reply is queued: ``request_json -> text``
        self.default: Callable[[dict[str, Any]], str] = default_responder
        self.requests: list[FakeRequest] = []
        self.disconnects = 0
        self._queue: deque[FakeReply] = deque()
        self._disconnected = asyncio.Event()
        self._files: dict[str, bytes] = {}  # images served by URL (dall-e response_format="url")
        app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/images/generations", self._images, methods=["POST"]),
                Route("/v1/fake-files/{name}", self._file, methods=["GET"]),
            ]
        )
        self._server = LoopbackServer(app)

    # ── lifecycle ───────────────────────────────────────────────────────────────────────────

    @property
    def url(self) -> str:
        """Root URL of the server (``http://127.0.0.1:PORT``)."""
        return self._server.url

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as ``base_url`` (``url + "/v1"``)."""
        return self._server.url + "/v1"

    async def start(self) -> None:
        """Start serving on a free loopback port."""
        await self._server.start()

    async def stop(self) -> None:
        """Stop serving."""
        await self._server.stop()

    async def __aenter__(self) -> FakeOpenAIServer:
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

    def add_reply(
        self,
        text: str = "",
        *,
        first_token_delay: float = 0.0,
        tokens_per_second: float | None = None,
        chunk_size_chars: int | list[str] = 4,
        usage: tuple[int, int] | None = None,
        finish_reason: str = "stop",
        drop_after_chars: int | None = None,
        status: int = 200,
        error_body: Any = None,
        headers: dict[str, str] | None = None,
        refusal: bool = False,
    ) -> FakeReply:
        """Queue one reply.

        ``chunk_size_chars`` is the characters per chunk, or the exact list of chunks (which
        must join to ``text`` when ``text`` is given). ``tokens_per_second`` paces the chunks
        (``None``: as fast as possible) after ``first_token_delay``. ``usage`` is reported as is
        (``None``: a rough estimate). ``drop_after_chars`` ends the body after that many
        characters, with no ``finish_reason`` and no ``[DONE]``. ``refusal`` sends the text in
        ``delta.refusal``. A ``status`` other than 200 answers with ``error_body`` (JSON for a
        dict, else as is) and ``headers`` instead of a stream.
        """
        if isinstance(chunk_size_chars, list):
            chunks = list(chunk_size_chars)
            if text and "".join(chunks) != text:
                raise ValueError("the chunks do not join to the text")
            text = "".join(chunks)
        else:
            if chunk_size_chars < 1:
                raise ValueError("chunk_size_chars must be at least 1")
            chunks = _split(text, chunk_size_chars)
        if status != 200 and error_body is None:
            error_body = _error_body(status, f"fake error (HTTP {status})", None)
        reply = FakeReply(
            text=text,
            chunks=chunks,
            first_token_delay=first_token_delay,
            tokens_per_second=tokens_per_second,
            usage=usage,
            finish_reason=finish_reason,
            drop_after_chars=drop_after_chars,
            status=status,
            error_body=error_body,
            headers=dict(headers or {}),
            refusal=refusal,
        )
        self._queue.append(reply)
        return reply

    def add_error(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> FakeReply:
        """Queue an HTTP error with an OpenAI-shaped body (``{"error": {"message", …}}``).

        ``retry_after`` sets the ``retry-after`` header (seconds); for ``retry-after-ms`` use
        :meth:`add_reply` with ``headers``.
        """
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        return self.add_reply(status=status, error_body=_error_body(status, message, code), headers=headers)

    def add_image(
        self, png: bytes | None = None, *, revised_prompt: str = "", delay: float = 0.0
    ) -> FakeReply:
        """Queue the answer to the next request: for an image request, ``png`` (default: one
        drawn from the prompt) after ``delay`` seconds, with ``revised_prompt`` (dall-e-3
        rewrites prompts)."""
        reply = FakeReply(text=revised_prompt, image=png, first_token_delay=delay)
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
    ) -> FakeReply:
        """Queue a body replayed byte for byte (e.g. a recorded ``.sse`` fixture).

        The body is sent in pieces cut at the ``split_at`` byte offsets, with ``chunk_delay``
        seconds between pieces; a delay makes it likely that each piece reaches the client
        in its own read.
        """
        reply = FakeReply(
            raw=bytes(body),
            split_at=sorted(set(split_at or [])),
            chunk_delay=chunk_delay,
            status=status,
            content_type=content_type,
        )
        self._queue.append(reply)
        return reply

    async def wait_for_disconnects(self, count: int = 1) -> None:
        """Return once at least ``count`` streams were closed early by clients.

        Bound the wait with ``asyncio.timeout(...)``; a disconnect is seen as soon as the
        server notices the closed socket.
        """
        while self.disconnects < count:
            self._disconnected.clear()
            await self._disconnected.wait()

    # ── HTTP handlers ───────────────────────────────────────────────────────────────────────

    async def _models(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "relaybot"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _images(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(FakeRequest(request.url.path, body if isinstance(body, dict) else {}, headers))
        if not isinstance(body, dict):
            return JSONResponse(_error_body(400, "We could not parse the JSON body.", None), 400)
        if self.api_key is not None:
            denied = self._check_key(headers.get("authorization", ""))
            if denied is not None:
                return JSONResponse(denied, 401)
        reply = self._queue.popleft() if self._queue else FakeReply()
        if reply.status != 200:
            if isinstance(reply.error_body, dict | list):
                return JSONResponse(reply.error_body, reply.status, headers=reply.headers)
            return JSONResponse(_error_body(reply.status, "fake error", None), reply.status)
        problem = _image_request_problem(body)
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)  # generating takes a while
        if problem is not None:
            status, message, code = problem
            return JSONResponse(_error_body(status, message, code), status)
        model = str(body.get("model") or "dall-e-2")
        size = str(body.get("size") or "1024x1024")
        png = reply.image or _draw_png(str(body["prompt"]), size)
        items: list[dict[str, Any]] = []
        for _ in range(int(body.get("n") or 1)):
            if body.get("response_format", "url" if model.startswith("dall-e") else "b64_json") == "url":
                name = uuid.uuid4().hex + ".png"
                self._files[name] = png
                item: dict[str, Any] = {"url": f"{self.base_url}/fake-files/{name}"}
            else:
                item = {"b64_json": base64.b64encode(png).decode("ascii")}
            if model == "dall-e-3":
                item["revised_prompt"] = reply.text or str(body["prompt"])
            items.append(item)
        answer: dict[str, Any] = {"created": int(time.time()), "data": items}
        if model.startswith("gpt-image"):
            prompt_tokens = math.ceil(len(str(body["prompt"])) / 4)
            answer["usage"] = {"input_tokens": prompt_tokens, "output_tokens": 1056,
                               "total_tokens": prompt_tokens + 1056}  # fmt: skip
        return JSONResponse(answer, headers=reply.headers)

    async def _file(self, request: Any) -> Any:
        from starlette.responses import Response

        data = self._files.get(request.path_params["name"])
        if data is None:
            return Response(b"not found", 404)
        return Response(data, media_type="image/png")

    async def _chat(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(FakeRequest(request.url.path, body or {}, headers))
        if not isinstance(body, dict):
            return JSONResponse(_error_body(400, "We could not parse the JSON body.", None), 400)
        if self.api_key is not None:
            denied = self._check_key(headers.get("authorization", ""))
            if denied is not None:
                return JSONResponse(denied, 401)
        if self._queue:
            reply = self._queue.popleft()
        else:
            text = self.default(body)
            reply = FakeReply(text=text, chunks=_split(text, 4))
        if reply.raw is not None:
            return self._streaming(self._raw_pieces(reply), reply.status, reply.headers, reply.content_type)
        if reply.status != 200:
            if isinstance(reply.error_body, dict | list):
                return JSONResponse(reply.error_body, reply.status, headers=reply.headers)
            content = reply.error_body if reply.error_body is not None else b""
            return Response(content, reply.status, headers=reply.headers)
        if not body.get("stream"):
            return JSONResponse(self._completion(reply, body), headers=reply.headers)
        return self._streaming(self._frames(reply, body), 200, reply.headers, "text/event-stream")

    def _check_key(self, authorization: str) -> dict[str, Any] | None:
        if authorization == f"Bearer {self.api_key}":
            return None
        given = authorization.removeprefix("Bearer ").strip()
        if not given:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            return _error_body(401, message, None)
        # Like OpenAI: the key is echoed only masked.
        masked = given[:3] + "*" * 4 + given[-4:] if len(given) > 8 else "****"
        return _error_body(401, f"Incorrect API key provided: {masked}.", "invalid_api_key")

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

    async def _raw_pieces(self, reply: FakeReply) -> AsyncIterator[bytes]:
        assert reply.raw is not None
        bounds = [0, *(i for i in reply.split_at or [] if 0 < i < len(reply.raw)), len(reply.raw)]
        for n, (start, end) in enumerate(itertools.pairwise(bounds)):
            if n and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            yield reply.raw[start:end]

    async def _frames(self, reply: FakeReply, request_json: dict[str, Any]) -> AsyncIterator[bytes]:
        chunk_id = "chatcmpl-" + uuid.uuid4().hex[:29]
        created = int(time.time())
        model = str(request_json.get("model") or self.model)

        def frame(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            obj = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_relaybot",
                "choices": choices,
                **extra,
            }
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

        def choice(delta: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]

        key = "refusal" if reply.refusal else "content"
        first = (
            {"role": "assistant", "content": None, "refusal": ""}
            if reply.refusal
            else {"role": "assistant", "content": "", "refusal": None}
        )
        yield frame(choice(first))
        if reply.first_token_delay:
            await asyncio.sleep(reply.first_token_delay)
        interval = 1.0 / reply.tokens_per_second if reply.tokens_per_second else 0.0
        sent = 0
        for n, piece in enumerate(reply.chunks):
            if n and interval:
                await asyncio.sleep(interval)
            if reply.drop_after_chars is not None and sent + len(piece) >= reply.drop_after_chars:
                rest = piece[: reply.drop_after_chars - sent]
                if rest:
                    yield frame(choice({key: rest}))
                return  # the body ends here: no finish_reason, no [DONE]
            if piece:
                yield frame(choice({key: piece}))
            sent += len(piece)
        yield frame(choice({}, reply.finish_reason))
        if (request_json.get("stream_options") or {}).get("include_usage"):
            prompt, completion = reply.usage or estimate_usage(request_json, reply.text)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            yield frame([], usage=usage)
        yield b"data: [DONE]\n\n"

    def _completion(self, reply: FakeReply, request_json: dict[str, Any]) -> dict[str, Any]:
        prompt, completion = reply.usage or estimate_usage(request_json, reply.text)
        message = {
            "role": "assistant",
            "content": None if reply.refusal else reply.text,
            "refusal": reply.text if reply.refusal else None,
        }
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:29],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(request_json.get("model") or self.model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }


#: per model family: allowed sizes, qualities, max n, whether response_format is accepted
_IMAGE_MODELS: dict[str, tuple[frozenset[str], frozenset[str], int, bool]] = {
    "gpt-image": (frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"}),
                  frozenset({"low", "medium", "high", "auto"}), 10, False),
    "dall-e-3": (frozenset({"1024x1024", "1792x1024", "1024x1792"}), frozenset({"standard", "hd"}), 1, True),
    "dall-e-2": (frozenset({"256x256", "512x512", "1024x1024"}), frozenset({"standard"}), 10, True),
}  # fmt: skip


def _image_request_problem(body: dict[str, Any]) -> tuple[int, str, str | None] | None:
    """``(status, message, code)`` the real images API would answer to ``body``, or None if valid."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return 400, "Missing required parameter: 'prompt'.", "missing_required_parameter"
    model = str(body.get("model") or "dall-e-2")
    family = next((f for f in _IMAGE_MODELS if model.startswith(f)), None)
    if family is None:
        return 404, f"The model '{model}' does not exist.", "model_not_found"
    sizes, qualities, max_n, takes_format = _IMAGE_MODELS[family]
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= max_n:
        if max_n == 1:
            return 400, "You must provide n=1 for this model.", None
        return 400, f"Invalid 'n': must be between 1 and {max_n}.", "invalid_value"
    size = body.get("size", "1024x1024")
    if size not in sizes:
        allowed = ", ".join(f"'{s}'" for s in sorted(sizes))
        return 400, f"Invalid value: '{size}'. Supported values are: {allowed}.", "invalid_value"
    quality = body.get("quality", next(iter(sorted(qualities))))
    if quality not in qualities:
        return 400, f"Invalid value for 'quality': '{quality}'.", "invalid_value"
    if "response_format" in body:
        if not takes_format:
            return 400, "Unknown parameter: 'response_format'.", "unknown_parameter"
        if body["response_format"] not in ("url", "b64_json"):
            return 400, "Invalid value for 'response_format'.", "invalid_value"
    return None


def _draw_png(prompt: str, size: str) -> bytes:
    """A small real PNG (1/16 of ``size``) in a colour derived from the prompt."""
    from PIL import Image  # pillow is a core dependency

    width, height = (int(v) for v in size.split("x")) if "x" in size else (1024, 1024)
    colour = tuple(hashlib.sha256(prompt.encode()).digest()[:3])
    buf = io.BytesIO()
    Image.new("RGB", (max(1, width // 16), max(1, height // 16)), colour).save(buf, "PNG")
    return buf.getvalue()


def _error_body(status: int, message: str, code: str | None) -> dict[str, Any]:
    etype, default_code = _ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": etype, "param": None, "code": code or default_code}}
