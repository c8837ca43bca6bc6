"""The web chat's HTTP surface: the page, the JSON API, the SSE stream and media.

Routes (all ``/api`` and ``/media`` routes check the token when one is configured and need the
browser's client id: header ``X-Relaybot-Client``, or ``?client=`` on reads only). Requests for
unknown host names and cross-site requests are refused, JSON bodies must be sent as
``application/json`` (see :mod:`.security`); text is cleaned with :func:`relaybot.clean_text`,
and every error is a JSON ``{"error": …}``, never a plain-text 500::

    GET    /                                   the page (static files live under /static/)
    GET    /api/info                           title, limits, whether a token is needed
    GET    /api/events                         SSE: delta, replace, done, interrupted, error …
    GET    /api/conversations                  list (+ which one is active)
    POST   /api/conversations                  new   {"title"?}
    PATCH  /api/conversations/{id}             rename {"title"}
    DELETE /api/conversations/{id}             delete
    POST   /api/conversations/{id}/switch      make active (stops a streaming reply, keeps it)
    GET    /api/conversations/{id}/messages    history: ?before=<message id>&limit=<n>
    GET    /api/conversations/{id}/export      ?format=md|json, as a download
    POST   /api/messages                       send {"text", "conversation_id"?, "attachments"?}
    POST   /api/stop                           stop the streaming reply
    POST   /api/regenerate                     answer the last user message again
    POST   /api/uploads                        multipart image or video (field "file") → media reference
    POST   /api/estimate                       tokens and cost of sending {"text", "conversation_id"?}
    GET    /media/{sha256}                     an image or video
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from relaybot import (
    ChatConversations,
    CommandError,
    IncomingMessage,
    MediaError,
    RelaybotError,
    StorageError,
    User,
    clean_text,
    redact,
)

from .history import conversation_json, export_response, history_page, media_json, owned_conversation
from .security import (
    SAFE_METHODS,
    ApiError,
    BodyLimitMiddleware,
    SiteGuard,
    client_id,
    require_json,
    token_ok,
)

if TYPE_CHECKING:
    from .connector import WebConnector

STATIC_DIR = Path(__file__).parent / "static"
#: JSON bodies: a long message plus a few attachment references
JSON_LIMIT = 1024 * 1024
#: a message's text (the page enforces the same)
MAX_TEXT = 100_000
MAX_ATTACHMENTS = 8
_SNIFF = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# The page's scripts and styles are our files only: even if some text slipped past the
# renderer's escaping, an injected <script> or inline handler would not run.
_PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

log = logging.getLogger("relaybot.connectors.web")


def _video_mime(head: bytes) -> str | None:
    """The MIME type of a stored video from its first bytes (MP4/QuickTime, WebM/Matroska)."""
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def _looks_like_video(data: bytes, content_type: str | None) -> bool:
    """An upload goes the video way when its bytes or its declared type say video."""
    return _video_mime(data[:16]) is not None or (content_type or "").startswith("video/")


def build_app(connector: WebConnector) -> Any:
    """The ASGI app of ``connector`` (Starlette, with size limits and security headers)."""
    api = _Api(connector)
    upload_limit = connector.config.max_upload_mb * 1024 * 1024 + 64 * 1024  # + multipart overhead

    def limit_for(path: str) -> int:
        return upload_limit if path == "/api/uploads" else JSON_LIMIT

    routes = [
        Route("/", api.index),
        Route("/sw.js", api.service_worker),
        Route("/manifest.webmanifest", api.manifest),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        Route("/api/info", api.info),
        Route("/api/events", api.events),
        Route("/api/conversations", api.conversations, methods=["GET", "POST"]),
        Route("/api/conversations/{cid:int}", api.conversation, methods=["PATCH", "DELETE"]),
        Route("/api/conversations/{cid:int}/switch", api.switch, methods=["POST"]),
        Route("/api/conversations/{cid:int}/messages", api.messages),
        Route("/api/conversations/{cid:int}/export", api.export),
        Route("/api/messages", api.send, methods=["POST"]),
        Route("/api/stop", api.stop, methods=["POST"]),
        Route("/api/regenerate", api.regenerate, methods=["POST"]),
        Route("/api/uploads", api.upload, methods=["POST"]),
        Route("/api/estimate", api.estimate, methods=["POST"]),
        Route("/media/{sha:str}", api.media),
    ]

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return exc.response()

    async def core_error(request: Request, exc: Exception) -> Response:
        # any core error that escaped a route still becomes a JSON answer a page can show
        assert isinstance(exc, RelaybotError)
        if isinstance(exc, CommandError):
            return ApiError(400, str(exc)).response()
        status = 404 if isinstance(exc, LookupError) else 503 if isinstance(exc, StorageError) else 500
        log.warning("web API %s failed: %s", request.url.path, redact(str(exc)))
        return ApiError(status, exc.user_message).response()

    async def http_error(request: Request, exc: Exception) -> Response:
        # routing answers (no such path, wrong method) in the API's JSON shape too
        assert isinstance(exc, HTTPException)
        return ApiError(exc.status_code, str(exc.detail)).response(exc.headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # a bug, not bad input: still a JSON answer the page can show (the traceback is logged)
        log.error("web API %s failed: %s", request.url.path, redact(repr(exc)), exc_info=exc)
        return ApiError(500, RelaybotError.user_message).response()

    cfg = connector.config
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(SiteGuard, hosts=[cfg.host], proxy_hosts=cfg.allowed_hosts),
            Middleware(BodyLimitMiddleware, limit_for=limit_for),
        ],
        exception_handlers={
            ApiError: api_error,
            RelaybotError: core_error,
            HTTPException: http_error,
            Exception: unexpected,
        },
    )
    return app


class _SecurityHeaders:
    """Adds the security headers (and the page's CSP) to every response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                headers += [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]
                headers.append((b"content-security-policy", _PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class _Api:
    """Request handlers; each resolves the client, checks the token, then does one thing."""

    def __init__(self, connector: WebConnector) -> None:
        self.connector = connector

    # ── plumbing ────────────────────────────────────────────────────────────────────────────

    def _client(self, request: Request) -> str:
        if not token_ok(request, self.connector.token):
            raise ApiError(401, "a valid token is required (Authorization: Bearer <token> or ?token=)")
        # state-changing requests: the header only (see security.py)
        return client_id(request, from_query=request.method in SAFE_METHODS)

    async def _json(self, request: Request) -> dict[str, Any]:
        body = await request.body()
        if not body:
            return {}
        require_json(request)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "malformed JSON body") from None
        except RecursionError:
            raise ApiError(400, "the JSON body is nested too deeply") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the JSON body must be an object")
        return data

    def _service(self, client: str) -> ChatConversations:
        return self.connector.core.conversations(self.connector.chat_of(client))

    # ── page ────────────────────────────────────────────────────────────────────────────────

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def service_worker(self, request: Request) -> Response:
        # served from the root so that its scope covers the whole page
        return FileResponse(
            STATIC_DIR / "sw.js", media_type="text/javascript", headers={"Cache-Control": "no-cache"}
        )

    async def manifest(self, request: Request) -> Response:
        title = self.connector.config.title
        return JSONResponse(
            {
                "name": title,
                "short_name": title,
                "start_url": "/",
                "display": "standalone",
                "background_color": "#ffffff",
                "theme_color": "#10a37f",
            },
            media_type="application/manifest+json",
        )

    async def info(self, request: Request) -> Response:
        cfg = self.connector.config
        return JSONResponse(
            {
                "title": cfg.title,
                "max_upload_mb": cfg.max_upload_mb,
                "token_required": cfg.token is not None,
                "max_text": MAX_TEXT,
            }
        )

    # ── events ──────────────────────────────────────────────────────────────────────────────

    async def events(self, request: Request) -> Response:
        client = self._client(request)
        last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        stream = self.connector.hub.stream(client, last, on_open=lambda: self.connector.snapshot(client))
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache, no-transform",
                "X-Accel-Buffering": "no",
            },
        )

    # ── conversations ───────────────────────────────────────────────────────────────────────

    async def conversations(self, request: Request) -> Response:
        client = self._client(request)
        service = self._service(client)
        if request.method == "POST":
            data = await self._json(request)
            title = data.get("title", "")
            if not isinstance(title, str):
                raise ApiError(400, "title must be a string")
            conv = await service.new(clean_text(title))
            return JSONResponse(conversation_json(conv, active=True), status_code=201)
        convs = await service.list(with_counts=True)
        active = await service.active()
        active_id = active.id if active else None
        return JSONResponse(
            {
                "active_id": active_id,
                "conversations": [conversation_json(c, active=c.id == active_id) for c in convs],
            }
        )

    async def conversation(self, request: Request) -> Response:
        client = self._client(request)
        conv = await owned_conversation(self.connector, client, request.path_params["cid"])
        service = self._service(client)
        try:
            if request.method == "DELETE":
                await service.delete(conv.number)
                return JSONResponse({"deleted": conv.id})
            data = await self._json(request)
            title = data.get("title")
            if not isinstance(title, str) or not title.strip():
                raise ApiError(400, "title must be a non-empty string")
            await service.rename(clean_text(title), conv.number)
        except CommandError as exc:
            raise ApiError(400, str(exc)) from None
        renamed = await owned_conversation(self.connector, client, conv.id)
        return JSONResponse(conversation_json(renamed, active=False))

    async def switch(self, request: Request) -> Response:
        client = self._client(request)
        conv = await owned_conversation(self.connector, client, request.path_params["cid"])
        try:
            await self._service(client).switch(conv.number)
        except CommandError as exc:
            raise ApiError(400, str(exc)) from None
        return JSONResponse(conversation_json(conv, active=True))

    async def messages(self, request: Request) -> Response:
        client = self._client(request)
        conv = await owned_conversation(self.connector, client, request.path_params["cid"])
        return JSONResponse(await history_page(self.connector, conv, request.query_params))

    async def export(self, request: Request) -> Response:
        client = self._client(request)
        conv = await owned_conversation(self.connector, client, request.path_params["cid"])
        fmt = request.query_params.get("format", "md")
        if fmt not in ("md", "json"):
            raise ApiError(400, "format must be md or json")
        text = await self._service(client).export(fmt, conv.number)
        return export_response(conv, fmt, text)

    # ── messages ────────────────────────────────────────────────────────────────────────────

    async def send(self, request: Request) -> Response:
        client = self._client(request)
        data = await self._json(request)
        text = data.get("text", "")
        if not isinstance(text, str):
            raise ApiError(400, "text must be a string")
        text = clean_text(text)
        if len(text) > MAX_TEXT:
            raise ApiError(413, f"the message is too long (limit {MAX_TEXT} characters)")
        uris = data.get("attachments") or []
        if (
            not isinstance(uris, list)
            or len(uris) > MAX_ATTACHMENTS
            or not all(isinstance(u, str) for u in uris)
        ):
            raise ApiError(400, f"attachments must be a list of at most {MAX_ATTACHMENTS} upload references")
        refs = []
        for uri in uris:
            ref = self.connector.upload(client, uri)
            if ref is None:
                raise ApiError(400, "an attachment is unknown or expired: attach the image again")
            refs.append(ref)
        if not text.strip() and not refs:
            raise ApiError(400, "the message is empty")
        cmid = data.get("client_message_id")
        if (
            not isinstance(cmid, str)
            or not 8 <= len(cmid) <= 64
            or not (cmid.isascii() and cmid.replace("-", "").isalnum())
        ):
            cmid = secrets.token_hex(8)
        conv = await self._target(client, data.get("conversation_id"))
        images = [media_json(r) for r in refs]
        hub = self.connector.hub
        # other tabs of this browser show the message too; "thinking" is the first feedback
        hub.publish(
            client,
            "user",
            {"conversation_id": conv.id, "client_message_id": cmid, "text": text, "images": images},
        )
        hub.publish(client, "thinking", {"conversation_id": conv.id, "client_message_id": cmid})
        message = IncomingMessage(
            chat=self.connector.chat_of(client),
            user=User(client, "web"),
            text=text,
            attachments=tuple(refs),
            platform_message_id=f"u-{cmid}",
        )
        # answered 202 only once the message is stored (the core stores it on receipt)
        await self.connector.core.deliver(message.chat, message)
        return JSONResponse({"conversation_id": conv.id, "client_message_id": cmid}, status_code=202)

    async def _target(self, client: str, conversation_id: Any) -> Any:
        """The conversation a message goes to, made active first (created when none exists)."""
        service = self._service(client)
        active = await service.active()
        if conversation_id is None:
            return active if active is not None else await service.new()
        if not isinstance(conversation_id, int) or isinstance(conversation_id, bool):
            raise ApiError(400, "conversation_id must be an integer")
        conv = await owned_conversation(self.connector, client, conversation_id)
        if active is None or active.id != conv.id:
            await service.activate(conv.id)
        return conv

    async def estimate(self, request: Request) -> Response:
        """Tokens and cost of sending a text now (see :mod:`.costs`)."""
        from .costs import estimate

        client = self._client(request)
        return JSONResponse(await estimate(self.connector, client, await self._json(request)))

    async def stop(self, request: Request) -> Response:
        client = self._client(request)
        stopped = await self._service(client).stop()
        return JSONResponse({"stopped": stopped})

    async def regenerate(self, request: Request) -> Response:
        client = self._client(request)
        data = await self._json(request)
        conv = await self._target(client, data.get("conversation_id"))
        self.connector.hub.publish(
            client, "thinking", {"conversation_id": conv.id, "client_message_id": None}
        )
        await self.connector.core.regenerate(self.connector.chat_of(client), User(client, "web"))
        return JSONResponse({"conversation_id": conv.id}, status_code=202)

    # ── media ───────────────────────────────────────────────────────────────────────────────

    async def upload(self, request: Request) -> Response:
        client = self._client(request)
        max_bytes = self.connector.config.max_upload_mb * 1024 * 1024
        try:
            form = await request.form(max_files=1, max_fields=4)
        except ApiError:
            raise
        except Exception:
            raise ApiError(400, "expected a multipart/form-data upload with one file field") from None
        try:
            item = form.get("file")
            if item is None or isinstance(item, str):
                raise ApiError(400, "no file in the upload (form field 'file')")
            data = await item.read(max_bytes + 1)
            content_type = item.content_type
        finally:
            await form.close()
        if len(data) > max_bytes:
            raise ApiError(413, f"That image is larger than {self.connector.config.max_upload_mb} MB.")
        if _looks_like_video(data, content_type):
            return await self._upload_video(client, data, max_bytes)
        try:
            ref = await self.connector.core.media.save(data, mime_type=content_type)
        except MediaError as exc:
            status = 413 if len(data) > self.connector.core.media.max_bytes else 415
            raise ApiError(status, exc.user_message) from None
        self.connector.remember_upload(client, ref)
        from .connector import media_url

        return JSONResponse(
            {
                "uri": ref.uri,
                "url": media_url(ref.uri),
                "mime_type": ref.mime_type,
                "width": ref.width,
                "height": ref.height,
                "size_bytes": ref.size_bytes,
            },
            status_code=201,
        )

    async def _upload_video(self, client: str, data: bytes, max_bytes: int) -> Response:
        """A video upload: checked and stored by the media store (PyAV), like Telegram videos."""
        max_bytes = min(max_bytes, self.connector.core.config.video.max_bytes)
        try:
            ref = await self.connector.core.media.save_video(data, max_bytes=max_bytes)
        except MediaError as exc:
            raise ApiError(413 if len(data) > max_bytes else 415, exc.user_message) from None
        self.connector.remember_upload(client, ref)
        from .connector import media_url

        return JSONResponse(
            {
                "uri": ref.uri,
                "url": media_url(ref.uri),
                "kind": "video",
                "mime_type": ref.mime_type,
                "width": ref.width,
                "height": ref.height,
                "duration": ref.duration,
                "size_bytes": ref.size_bytes,
            },
            status_code=201,
        )

    async def media(self, request: Request) -> Response:
        if not token_ok(request, self.connector.token):
            raise ApiError(401, "a valid token is required")
        sha = request.path_params["sha"]
        try:
            path = self.connector.core.media.path_of(f"media:{sha}")
        except (MediaError, RelaybotError):
            raise ApiError(404, "no such image") from None
        head = await asyncio.to_thread(_head, path)
        if head is None:
            raise ApiError(404, "no such image")
        mime = next((m for magic, m in _SNIFF if head.startswith(magic)), None)
        if mime is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            mime = "image/webp"
        if mime is None:
            mime = _video_mime(head)
        # content-addressed: the bytes behind a name never change
        return FileResponse(
            path,
            media_type=mime or "application/octet-stream",
            headers={"Cache-Control": "private, max-age=31536000, immutable"},
        )


def _head(path: Path) -> bytes | None:
    """The first bytes of a media file (to name its type), or None when it does not exist."""
    try:
        with path.open("rb") as fh:
            return fh.read(16)
    except (FileNotFoundError, IsADirectoryError):
        return None
