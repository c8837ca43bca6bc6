"""``FakeTelegramServer``: a loopback Bot API that python-telegram-bot talks to for real."""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict, deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relaybot.core.testing.fake_telegram.entities import Entity, detect_entities
from relaybot.core.testing.fake_telegram.flood import FloodControl, FloodLimits
from relaybot.core.testing.fake_telegram.methods import BotApi, CallInfo
from relaybot.core.testing.fake_telegram.protocol import ApiError, read_params
from relaybot.core.testing.fake_telegram.store import (
    ChatInfo,
    DraftRecord,
    Store,
    StoredMessage,
    TimelineRecord,
)
from relaybot.core.testing.fake_telegram.updates import UpdateQueue, WebhookDelivery
from relaybot.core.testing.server import LoopbackServer

_UNAUTHORIZED = ApiError(401, "Unauthorized")
_NOT_FOUND = ApiError(404, "Not Found")


class _ApiJSON(JSONResponse):
    """JSON as the Bot API writes it: non-ASCII as ``\\u`` escapes, so any text a user could
    type (a lone surrogate included) travels, as it does from Telegram."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class FakeTelegramServer:
    """A Telegram Bot API on ``127.0.0.1`` that enforces Telegram's rules and records every call.

    Example::

        async with FakeTelegramServer(token="123:ABC") as tg:
            bot = telegram.Bot(tg.token, base_url=tg.bot_base_url,
                               base_file_url=tg.file_base_url)
            tg.send_user_message(42, "hi")
            ...
            assert tg.messages(42)[-1].text == "Hello!"

    Args:
        token: the only token accepted (others get 401 ``Unauthorized``).
        limits: flood control (``FloodLimits.disabled()`` to turn it off).
        clock: time source for flood control and the timeline (default ``time.monotonic``);
            pass a manual clock to make rate-limit tests deterministic.
        strict_chats: unknown chats answer 400 ``chat not found`` (as on Telegram); with False
            they are created on first use. Injected user messages always register their chat.
        auto_entities: detect URLs, ``/commands``, ``@mentions`` and hashtags in bot messages,
            as Telegram does.
        bot_username / bot_id: identity returned by ``getMe``.
    """

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",
        *,
        limits: FloodLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        strict_chats: bool = True,
        auto_entities: bool = True,
        bot_username: str = "relaybot_test_bot",
        bot_id: int | None = None,
    ) -> None:
        self.token = token
        self.clock = clock
        prefix = token.split(":", 1)[0]
        self.bot_user: dict[str, Any] = {
            "id": bot_id if bot_id is not None else (int(prefix) if prefix.isdigit() else 1),
            "is_bot": True,
            "first_name": "Relaybot Test",
            "username": bot_username,
        }
        self.store = Store()
        self.flood = FloodControl(limits or FloodLimits(), clock)
        self.updates = UpdateQueue(clock)
        self.api = BotApi(
            store=self.store, flood=self.flood, updates=self.updates, bot_user=self.bot_user,
            strict_chats=strict_chats, auto_entities=auto_entities, clock=clock,
        )  # fmt: skip
        self._scripted: defaultdict[str, deque[ApiError]] = defaultdict(deque)
        self._callback_ids = itertools.count(1)
        self.app = Starlette(routes=[
            Route("/bot{token}/{method}", self._handle_method, methods=["GET", "POST"]),
            Route("/file/bot{token}/{file_path:path}", self._handle_file, methods=["GET"]),
        ])  # fmt: skip
        self._server = LoopbackServer(self.app)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start serving on a free loopback port."""
        await self.updates.start()
        await self._server.start()

    async def stop(self) -> None:
        """Release waiting long polls, stop webhook delivery and the HTTP server."""
        await self.updates.stop()
        await self._server.stop()

    async def __aenter__(self) -> FakeTelegramServer:
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
    def bot_base_url(self) -> str:
        """PTB ``base_url`` (PTB appends the token)."""
        return f"{self.url}/bot"

    @property
    def file_base_url(self) -> str:
        """PTB ``base_file_url`` (PTB appends the token)."""
        return f"{self.url}/file/bot"

    # -- HTTP ------------------------------------------------------------------------------

    async def _handle_method(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return _error(_UNAUTHORIZED)
        requested = request.path_params["method"]
        entry = self.api.handlers.get(requested.lower())
        name = entry[0] if entry else requested
        call = CallInfo()
        status = 200
        try:
            params = await read_params(request)
            call.chat_id = _quiet_chat_id(params.raw("chat_id"))
            scripted = self._scripted.get(name.lower())
            if scripted:
                raise scripted.popleft()
            if entry is None:
                raise _NOT_FOUND
            result = await entry[1](params, call)
            response: Response = _ApiJSON({"ok": True, "result": result})
        except ApiError as exc:
            status = exc.status
            call.extra["description"] = exc.description
            if status == 409 and await request.is_disconnected():
                # e.g. PTB cancels its long poll on shutdown, then polls once more: the old
                # request ends with 409 but nobody sees it; say so for timeline assertions
                call.extra["client_disconnected"] = True
            response = _error(exc)
        except HTTPException as exc:  # malformed multipart/form body
            status = 400
            call.extra["description"] = f"Bad Request: {exc.detail}"
            response = _error(ApiError(400, call.extra["description"]))
        self.store.record(TimelineRecord(
            self.clock(), name, call.chat_id, call.message_id, call.text, status, call.extra
        ))  # fmt: skip
        return response

    async def _handle_file(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return _error(_UNAUTHORIZED)
        stored = self.store.files_by_path.get(request.path_params["file_path"])
        if stored is None:
            return _error(_NOT_FOUND)
        return Response(stored.data, media_type=stored.mime_type)

    # -- scripting -------------------------------------------------------------------------

    def fail_next(
        self, method: str, status: int, description: str, *, retry_after: int | None = None
    ) -> None:
        """Make the next call of ``method`` fail with ``status`` and ``description``.

        ``description`` is Telegram's full text (``"Bad Request: chat not found"``);
        ``retry_after`` adds ``parameters.retry_after`` (PTB raises ``RetryAfter``). Several
        calls queue several failures, consumed in order.
        """
        parameters = {"retry_after": retry_after} if retry_after is not None else None
        self._scripted[method.lower()].append(ApiError(status, description, parameters))

    def add_chat(
        self, chat_id: int, chat_type: str | None = None, *, title: str | None = None,
        username: str | None = None, is_forum: bool = False,
    ) -> ChatInfo:  # fmt: skip
        """Make a chat known to the fake (type inferred from the id when omitted)."""
        return self.api.add_chat(chat_id, chat_type, title=title, username=username,
                                 is_forum=is_forum)  # fmt: skip

    def kick(self, chat_id: int) -> None:
        """The bot is removed from ``chat_id`` (blocked, for a private chat): calls answer 403."""
        self.add_chat(chat_id).kicked = True

    def unkick(self, chat_id: int) -> None:
        """Undo :meth:`kick`."""
        self.add_chat(chat_id).kicked = False

    # -- injecting updates -----------------------------------------------------------------

    def inject_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue a raw update (``update_id`` is assigned); returns it with its id."""
        return self.updates.push(update)

    def user(self, user_id: int) -> dict[str, Any]:
        """The Bot API ``User`` object the fake uses for ``user_id``."""
        return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}",
                "username": f"user{user_id}", "language_code": "en"}  # fmt: skip

    def send_user_message(
        self,
        chat_id: int,
        text: str | None = None,
        *,
        user_id: int | None = None,
        chat_type: str | None = None,
        thread_id: int | None = None,
        reply_to_message_id: int | None = None,
        photo: bytes | None = None,
        document: tuple[bytes, str, str] | None = None,
        entities: list[Entity] | None = None,
        caption: str | None = None,
        video: bytes | None = None,
        video_note: bytes | None = None,
    ) -> dict[str, Any]:
        """Inject a message from a user and return the ``Message`` dict.

        ``chat_type`` defaults from the id (>0 private, ``-100…`` supergroup, else group).
        ``thread_id`` sends into a forum topic. ``photo`` / ``document=(bytes, filename,
        mime)``, ``video`` (an MP4) / ``video_note`` (a round MP4) attach a file the bot can
        fetch with ``getFile``. Without ``entities``,
        ``/commands``, ``@mentions``, URLs and hashtags are detected as Telegram does.
        """
        user_id = user_id if user_id is not None else (chat_id if chat_id > 0 else 1001)
        chat = self.add_chat(chat_id, chat_type)
        if thread_id is not None and chat.type == "supergroup":
            chat.is_forum = True  # topics only exist in forum supergroups
        if chat_type is None and chat.type == "private":
            chat.first_name = f"User{user_id}"
            chat.username = f"user{user_id}"
        body: dict[str, Any] = {}
        if photo is not None:
            stored = self.api.store_file(photo, folder="photos", filename="photo.jpg",
                                         mime_type="image/jpeg")  # fmt: skip
            body["photo"] = self.api.photo_sizes(stored)
        if document is not None:
            data, filename, mime = document
            stored = self.api.store_file(data, folder="documents", filename=filename,
                                         mime_type=mime)  # fmt: skip
            body["document"] = {"file_id": stored.file_id,
                                "file_unique_id": stored.file_unique_id, "file_name": filename,
                                "mime_type": mime, "file_size": len(data)}  # fmt: skip
        if video is not None:
            stored = self.api.store_file(video, folder="videos", filename="video.mp4",
                                         mime_type="video/mp4")  # fmt: skip
            body["video"] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                             "width": 160, "height": 120, "duration": 2, "mime_type": "video/mp4",
                             "file_size": len(video)}  # fmt: skip
        if video_note is not None:
            stored = self.api.store_file(video_note, folder="video_notes", filename="note.mp4",
                                         mime_type="video/mp4")  # fmt: skip
            body["video_note"] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                                  "length": 240, "duration": 2, "file_size": len(video_note)}  # fmt: skip
        visible = text if text is not None else (caption or "")
        found = entities if entities is not None else detect_entities(visible, [])
        if body:
            if visible:
                body["caption"] = visible
                if found:
                    body["caption_entities"] = found
        else:
            body["text"] = visible
            if found:
                body["entities"] = found
        reply_to = None
        if reply_to_message_id is not None:
            target = self.store.messages.get((chat_id, reply_to_message_id))
            if target is not None:
                reply_to = {k: v for k, v in target.api.items() if k != "reply_to_message"}
        message_id = self.store.new_message_id(chat_id)
        message = self.api.message_api(
            chat, message_id, sender=self.user(user_id), body=body, thread_id=thread_id,
            reply_to=reply_to,
        )  # fmt: skip
        kind = next((k for k in ("photo", "document", "video", "video_note") if k in body), "text")
        self.store.add_message(StoredMessage(
            chat_id, message_id, False, visible, list(found), message, thread_id=thread_id,
            kind=kind,
        ))  # fmt: skip
        self.inject_update({"message": message})
        return message

    def press_button(
        self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None
    ) -> dict[str, Any]:
        """Inject a ``callback_query`` for an inline button on one of the bot's messages."""
        stored = self.store.messages.get((chat_id, message_id))
        if stored is None:
            raise KeyError(f"no message {message_id} in chat {chat_id}")
        user_id = user_id if user_id is not None else (chat_id if chat_id > 0 else 1001)
        query_id = str(next(self._callback_ids))
        query = {"id": query_id, "from": self.user(user_id), "message": stored.api,
                 "chat_instance": str(chat_id), "data": data}  # fmt: skip
        self.store.callback_queries[query_id] = {"answered": False}
        self.inject_update({"callback_query": query})
        return query

    # -- inspecting ------------------------------------------------------------------------

    @property
    def timeline(self) -> list[TimelineRecord]:
        """Every bot call so far, in order (the live list: copy it to keep a snapshot)."""
        return self.store.timeline

    def chat_timeline(self, chat_id: int | str) -> list[TimelineRecord]:
        """The calls that named ``chat_id``, in order."""
        return list(self.store.by_chat.get(chat_id, ()))

    def calls(self, method: str) -> list[TimelineRecord]:
        """The calls of one method (canonical Bot API spelling, e.g. ``"sendMessage"``)."""
        return list(self.store.by_method.get(method, ()))

    @property
    def count_429(self) -> int:
        """How many calls were answered 429 Too Many Requests."""
        return self.store.count_429

    def messages(self, chat_id: int) -> list[StoredMessage]:
        """The bot's messages currently visible in ``chat_id`` (not deleted), oldest first."""
        return list(self.store.bot_messages.get(chat_id, {}).values())

    def message(self, chat_id: int, message_id: int) -> StoredMessage | None:
        """Any message (bot's or user's, deleted ones too) by id."""
        return self.store.messages.get((chat_id, message_id))

    def drafts(self, chat_id: int) -> list[DraftRecord]:
        """Accepted ``sendMessageDraft`` frames in ``chat_id``, in order."""
        return list(self.store.drafts.get(chat_id, ()))

    def file_bytes(self, file_id: str) -> bytes:
        """The stored content of an uploaded or injected file."""
        return self.store.files[file_id].data

    def commands(self, scope: dict[str, Any] | None = None, language_code: str = "") -> list[Any]:
        """Commands set with ``setMyCommands`` for a scope (default scope when omitted)."""
        import json

        key = f"{json.dumps(scope or {'type': 'default'}, sort_keys=True)}|{language_code}"
        return list(self.store.commands.get(key, []))

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every webhook POST attempt, in order."""
        return self.updates.deliveries

    @property
    def waiting_polls(self) -> int:
        """``getUpdates`` requests currently held open, waiting for an update."""
        return self.updates.waiting

    @property
    def pending_updates(self) -> int:
        """Injected updates not yet fetched and confirmed (or delivered by webhook)."""
        return self.updates.pending_count


def _error(error: ApiError) -> Response:
    return JSONResponse(error.body(), status_code=error.status)


def _quiet_chat_id(value: Any) -> int | str | None:
    """Best-effort ``chat_id`` for the timeline, even when the call fails before parsing it."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.lstrip("-").isdigit():
            return int(stripped)
        return stripped or None
    return None
