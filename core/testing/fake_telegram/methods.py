"""The Bot API methods the fake implements, with Telegram's validation and error texts.

Each handler takes the call's :class:`~.protocol.Params` and a :class:`CallInfo` it fills in
for the timeline, and returns the ``result`` value or raises :class:`~.protocol.ApiError`.
Validation happens before the flood check, so a rejected request never uses up budget.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from relaybot.core.testing.fake_telegram.entities import (
    Entity,
    EntityParseError,
    detect_entities,
    trim,
    utf16_len,
    validate_entities,
)
from relaybot.core.testing.fake_telegram.flood import FloodControl
from relaybot.core.testing.fake_telegram.html import parse_html
from relaybot.core.testing.fake_telegram.markdown import parse_markdown, parse_markdown_v2
from relaybot.core.testing.fake_telegram.protocol import ApiError, Params, Upload, bad_request
from relaybot.core.testing.fake_telegram.store import (
    ChatInfo,
    DraftRecord,
    Store,
    StoredFile,
    StoredMessage,
)
from relaybot.core.testing.fake_telegram.updates import UpdateQueue

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_DOWNLOAD = 20 * 1024 * 1024
MAX_PHOTO_UPLOAD = 10 * 1024 * 1024
MAX_UPLOAD = 50 * 1024 * 1024
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a content and reply markup of the current message"
)
CHAT_ACTIONS = frozenset(
    {"typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
     "upload_document", "choose_sticker", "find_location", "record_video_note",
     "upload_video_note"}
)  # fmt: skip
_PARSERS = {"markdownv2": parse_markdown_v2, "markdown": parse_markdown, "html": parse_html}


@dataclass(slots=True)
class CallInfo:
    """What the timeline records about one call (filled in by the handler as it learns it)."""

    chat_id: int | str | None = None
    message_id: int | None = None
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Params, CallInfo], Awaitable[Any]]


def format_text(
    text: str, parse_mode: str | None, raw_entities: Any, *, auto: bool
) -> tuple[str, list[Entity]]:
    """Visible text and entities for ``text`` with ``parse_mode`` or explicit ``entities``.

    Explicit entities win over ``parse_mode`` (as on Telegram). The result is trimmed of
    surrounding whitespace; ``auto`` adds Telegram's automatically detected entities.
    """
    try:
        if raw_entities is not None:
            visible, entities = text, validate_entities(text, raw_entities)
        elif parse_mode:
            parser = _PARSERS.get(parse_mode.lower())
            if parser is None:
                raise bad_request(f"unsupported parse_mode {parse_mode}")
            visible, entities = parser(text)
        else:
            visible, entities = text, []
    except EntityParseError as exc:
        raise bad_request(f"can't parse entities: {exc}") from None
    visible, entities = trim(visible, entities)
    if auto and visible:
        entities = detect_entities(visible, entities)
    return visible, entities


class BotApi:
    """The method table. ``handlers`` maps lower-case method names to (name, handler)."""

    def __init__(
        self,
        *,
        store: Store,
        flood: FloodControl,
        updates: UpdateQueue,
        bot_user: dict[str, Any],
        strict_chats: bool,
        auto_entities: bool,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.flood = flood
        self.updates = updates
        self.bot_user = bot_user
        self.strict_chats = strict_chats
        self.auto_entities = auto_entities
        self._clock = clock
        self._file_seq = 0
        self.handlers: dict[str, tuple[str, Handler]] = {
            name.lower(): (name, getattr(self, f"_{name}"))
            for name in (
                "getMe", "getUpdates", "setWebhook", "deleteWebhook", "getWebhookInfo",
                "sendMessage", "editMessageText", "sendMessageDraft", "sendChatAction",
                "sendPhoto", "sendDocument", "getFile", "setMyCommands", "getMyCommands",
                "deleteMyCommands", "answerCallbackQuery", "deleteMessage", "getChat",
            )
        }  # fmt: skip

    # -- shared checks -----------------------------------------------------------------------

    def chat(self, params: Params, call: CallInfo) -> ChatInfo:
        """Resolve ``chat_id``: 400 ``chat not found`` when unknown, 403 when kicked."""
        ref = params.chat_id()
        call.chat_id = ref
        chat: ChatInfo | None
        if isinstance(ref, str):
            chat = next((c for c in self.store.chats.values() if f"@{c.username}" == ref), None)
        else:
            chat = self.store.chats.get(ref)
            if chat is None and not self.strict_chats:
                chat = self.add_chat(ref)
        if chat is None:
            raise bad_request("chat not found")
        call.chat_id = chat.id
        if chat.kicked:
            if chat.type == "private":
                raise ApiError(403, "Forbidden: bot was blocked by the user")
            if chat.type == "channel":
                raise ApiError(403, "Forbidden: bot is not a member of the channel chat")
            raise ApiError(403, f"Forbidden: bot was kicked from the {chat.type} chat")
        return chat

    def add_chat(self, chat_id: int, chat_type: str | None = None, **details: Any) -> ChatInfo:
        """Register a chat (type inferred from the id: >0 private, -100… supergroup, <0 group)."""
        chat = self.store.chats.get(chat_id)
        if chat is None:
            if chat_type is None:
                chat_type = (
                    "private" if chat_id > 0
                    else "supergroup" if str(chat_id).startswith("-100") else "group"
                )  # fmt: skip
            chat = ChatInfo(chat_id, chat_type, **details)
            self.store.chats[chat_id] = chat
        return chat

    def _throttle(self, chat: ChatInfo, call: CallInfo) -> None:
        retry_after = self.flood.check(chat.id)
        if retry_after is not None:
            call.extra["retry_after"] = retry_after
            raise ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})

    def _text(
        self, params: Params, name: str, *, entities_name: str, limit: int, empty: str | None,
        too_long: str, parse_mode_name: str = "parse_mode",
    ) -> tuple[str, list[Entity]]:  # fmt: skip
        raw = params.get_str(name) or ""
        visible, entities = format_text(
            raw, params.get_str(parse_mode_name), params.get_json(entities_name), auto=self.auto_entities
        )
        if not visible and empty is not None:
            raise bad_request(empty)
        if utf16_len(visible) > limit:
            raise bad_request(too_long)
        return visible, entities

    def _reply_markup(self, params: Params) -> Any:
        markup = params.get_json("reply_markup")
        if markup is not None and not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        return markup

    def _reply_to(self, params: Params, chat: ChatInfo) -> dict[str, Any] | None:
        reply = params.get_json("reply_parameters")
        if isinstance(reply, dict):
            message_id, allow = reply.get("message_id"), bool(reply.get("allow_sending_without_reply"))
        else:
            message_id = params.get_int("reply_to_message_id")
            allow = params.get_bool("allow_sending_without_reply")
        if message_id is None:
            return None
        target = self.store.messages.get((chat.id, message_id))
        if target is None or target.deleted:
            if allow:
                return None
            raise bad_request("message to be replied not found")
        return {k: v for k, v in target.api.items() if k != "reply_to_message"}

    def message_api(
        self, chat: ChatInfo, message_id: int, *, sender: dict[str, Any], body: dict[str, Any],
        thread_id: int | None = None, reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """A Bot API ``Message`` object."""
        message: dict[str, Any] = {
            "message_id": message_id, "from": sender, "chat": chat.to_api(),
            "date": int(time.time()),
        }  # fmt: skip
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            if chat.is_forum:
                message["is_topic_message"] = True
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        message.update(body)
        return message

    def _store_sent(
        self, chat: ChatInfo, params: Params, call: CallInfo, *, kind: str, text: str,
        entities: list[Entity], body: dict[str, Any], reply_to: dict[str, Any] | None,
        markup: Any,
    ) -> dict[str, Any]:  # fmt: skip
        thread_id = params.get_int("message_thread_id")
        message_id = self.store.new_message_id(chat.id)
        if markup and "inline_keyboard" in markup:
            body = {**body, "reply_markup": markup}
        api = self.message_api(
            chat, message_id, sender=self.bot_user, body=body, thread_id=thread_id,
            reply_to=reply_to,
        )  # fmt: skip
        self.store.add_message(StoredMessage(
            chat.id, message_id, True, text, entities, api, markup, thread_id, kind=kind
        ))  # fmt: skip
        call.message_id, call.text = message_id, text
        return api

    # -- identity, updates, webhook --------------------------------------------------------

    async def _getMe(self, params: Params, call: CallInfo) -> Any:
        return {
            **self.bot_user, "can_join_groups": True, "can_read_all_group_messages": False,
            "supports_inline_queries": False, "can_connect_to_business": False,
            "has_main_web_app": False,
        }  # fmt: skip

    async def _getUpdates(self, params: Params, call: CallInfo) -> Any:
        limit = params.get_int("limit") or 100
        timeout = params.get_int("timeout") or 0
        allowed = params.get_json("allowed_updates")
        updates = await self.updates.get_updates(
            params.get_int("offset"), max(1, min(limit, 100)), float(timeout),
            allowed if isinstance(allowed, list) else None,
        )  # fmt: skip
        call.extra["count"] = len(updates)
        return updates

    async def _setWebhook(self, params: Params, call: CallInfo) -> Any:
        allowed = params.get_json("allowed_updates")
        url = params.get_str("url") or ""
        self.updates.set_webhook(
            url,
            secret=params.get_str("secret_token") or None,
            allowed=allowed if isinstance(allowed, list) else None,
            drop_pending=params.get_bool("drop_pending_updates"),
            max_connections=params.get_int("max_connections"),
        )
        call.extra["url"] = url
        return True

    async def _deleteWebhook(self, params: Params, call: CallInfo) -> Any:
        if params.get_bool("drop_pending_updates"):
            self.updates.drop_pending()
        if self.updates.webhook_url:
            self.updates.set_webhook("", secret=None, allowed=None, drop_pending=False, max_connections=None)
        return True

    async def _getWebhookInfo(self, params: Params, call: CallInfo) -> Any:
        return self.updates.webhook_info()

    # -- messages --------------------------------------------------------------------------

    async def _sendMessage(self, params: Params, call: CallInfo) -> Any:
        chat = self.chat(params, call)
        text, entities = self._text(
            params, "text", entities_name="entities", limit=MAX_TEXT,
            empty="message text is empty", too_long="message is too long",
        )  # fmt: skip
        reply_to = self._reply_to(params, chat)
        markup = self._reply_markup(params)
        self._throttle(chat, call)
        body: dict[str, Any] = {"text": text}
        if entities:
            body["entities"] = entities
        return self._store_sent(
            chat, params, call, kind="text", text=text, entities=entities, body=body,
            reply_to=reply_to, markup=markup,
        )  # fmt: skip

    async def _editMessageText(self, params: Params, call: CallInfo) -> Any:
        if params.get_str("inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")  # inline messages are not simulated
        chat = self.chat(params, call)
        message_id = params.get_int("message_id", required=True,
                                empty="message identifier is not specified")  # fmt: skip
        call.message_id = message_id
        text, entities = self._text(
            params, "text", entities_name="entities", limit=MAX_TEXT,
            empty="message text is empty", too_long="message is too long",
        )  # fmt: skip
        call.text = text
        stored = self.store.messages.get((chat.id, message_id))  # type: ignore[arg-type]
        if stored is None or stored.deleted:
            raise bad_request("message to edit not found")
        if not stored.from_bot:
            raise bad_request("message can't be edited")
        if stored.kind != "text":
            raise bad_request("there is no text in the message to edit")
        # an edit without reply_markup removes the inline keyboard, as on Telegram
        markup = self._reply_markup(params)
        if (text, entities, markup) == (stored.text, stored.entities, stored.reply_markup):
            raise bad_request(NOT_MODIFIED)
        self._throttle(chat, call)
        stored.text, stored.entities, stored.reply_markup = text, entities, markup
        stored.edit_count += 1
        api = {k: v for k, v in stored.api.items()
               if k not in ("entities", "reply_markup")}  # fmt: skip
        api.update(text=text, edit_date=int(time.time()))
        if entities:
            api["entities"] = entities
        if markup and "inline_keyboard" in markup:
            api["reply_markup"] = markup
        stored.api = api
        call.extra["edit_count"] = stored.edit_count
        return api

    async def _sendMessageDraft(self, params: Params, call: CallInfo) -> Any:
        chat = self.chat(params, call)
        draft_id = params.get_int("draft_id", required=True, empty="TEXTDRAFT_ID_INVALID")
        if chat.type != "private":
            raise bad_request("TEXTDRAFT_PEER_INVALID")
        if draft_id == 0:
            raise bad_request("TEXTDRAFT_ID_INVALID")
        text, entities = self._text(
            params, "text", entities_name="entities", limit=MAX_TEXT, empty=None,
            too_long="message is too long",
        )  # fmt: skip
        thread_id = params.get_int("message_thread_id")
        self._throttle(chat, call)
        self.store.drafts[chat.id].append(
            DraftRecord(self._clock(), draft_id, text, entities, thread_id)  # type: ignore[arg-type]
        )
        call.text = text
        call.extra["draft_id"] = draft_id
        return True

    async def _sendChatAction(self, params: Params, call: CallInfo) -> Any:
        self.chat(params, call)  # 400/403 for unknown or kicked chats, like any call
        action = params.get_str("action") or ""
        call.extra["action"] = action
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        thread_id = params.get_int("message_thread_id")
        if thread_id is not None:
            call.extra["thread_id"] = thread_id
        return True

    async def _deleteMessage(self, params: Params, call: CallInfo) -> Any:
        chat = self.chat(params, call)
        message_id = params.get_int("message_id", required=True,
                                empty="message identifier is not specified")  # fmt: skip
        call.message_id = message_id
        stored = self.store.messages.get((chat.id, message_id))  # type: ignore[arg-type]
        if stored is None or stored.deleted:
            raise bad_request("message to delete not found")
        self.store.delete_message(stored)
        return True

    # -- files -----------------------------------------------------------------------------

    def store_file(self, data: bytes, *, folder: str, filename: str, mime_type: str) -> StoredFile:
        """Keep ``data`` as a downloadable file and return its record."""
        self._file_seq += 1
        seq = self._file_seq
        suffix = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
        stored = StoredFile(
            file_id=f"fake-file-{seq}-{folder}", file_unique_id=f"fake-unique-{seq}", data=data,
            file_path=f"{folder}/file_{seq}.{suffix}", filename=filename, mime_type=mime_type,
        )  # fmt: skip
        self.store.add_file(stored)
        return stored

    def photo_sizes(self, stored: StoredFile) -> list[dict[str, Any]]:
        """``PhotoSize`` list for an image file (400 ``IMAGE_PROCESS_FAILED`` if not an image)."""
        from PIL import Image, UnidentifiedImageError  # lazy: only photos need Pillow

        try:
            with Image.open(io.BytesIO(stored.data)) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError):
            raise bad_request("IMAGE_PROCESS_FAILED") from None
        return [{
            "file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
            "width": width, "height": height, "file_size": len(stored.data),
        }]  # fmt: skip

    def _input_file(self, params: Params, name: str, limit: int, folder: str) -> StoredFile:
        value = params.get_file(name)
        if isinstance(value, Upload):
            if len(value.data) > limit:
                raise ApiError(413, "Request Entity Too Large")
            return self.store_file(
                value.data, folder=folder, filename=value.filename, mime_type=value.mime_type
            )
        known = self.store.files.get(value or "")
        if known is None:
            raise bad_request(f"wrong file identifier/HTTP URL specified for {name}"
                              if value else f"there is no {name} in the request")  # fmt: skip
        return known

    async def _send_media(self, params: Params, call: CallInfo, *, name: str, limit: int, folder: str) -> Any:
        chat = self.chat(params, call)
        caption, entities = self._text(
            params, "caption", entities_name="caption_entities", limit=MAX_CAPTION, empty=None,
            too_long="message caption is too long",
        )  # fmt: skip
        reply_to = self._reply_to(params, chat)
        markup = self._reply_markup(params)
        stored = self._input_file(params, name, limit, folder)
        body: dict[str, Any]
        if name == "photo":
            body = {"photo": self.photo_sizes(stored)}
        else:
            body = {"document": {
                "file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                "file_name": stored.filename, "mime_type": stored.mime_type,
                "file_size": len(stored.data),
            }}  # fmt: skip
        if caption:
            body["caption"] = caption
            if entities:
                body["caption_entities"] = entities
        self._throttle(chat, call)
        call.extra.update(file_id=stored.file_id, size=len(stored.data))
        return self._store_sent(
            chat, params, call, kind=name, text=caption, entities=entities, body=body,
            reply_to=reply_to, markup=markup,
        )  # fmt: skip

    async def _sendPhoto(self, params: Params, call: CallInfo) -> Any:
        return await self._send_media(params, call, name="photo", limit=MAX_PHOTO_UPLOAD, folder="photos")

    async def _sendDocument(self, params: Params, call: CallInfo) -> Any:
        return await self._send_media(params, call, name="document", limit=MAX_UPLOAD, folder="documents")

    async def _getFile(self, params: Params, call: CallInfo) -> Any:
        file_id = params.get_str("file_id") or ""
        call.extra["file_id"] = file_id
        stored = self.store.files.get(file_id)
        if stored is None:
            raise bad_request("invalid file_id")
        if len(stored.data) > MAX_DOWNLOAD:
            raise bad_request("file is too big")
        return {
            "file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
            "file_size": len(stored.data), "file_path": stored.file_path,
        }  # fmt: skip

    # -- commands, callbacks, chats --------------------------------------------------------

    def _commands_key(self, params: Params) -> str:
        scope = params.get_json("scope") or {"type": "default"}
        return f"{json.dumps(scope, sort_keys=True)}|{params.get_str('language_code') or ''}"

    async def _setMyCommands(self, params: Params, call: CallInfo) -> Any:
        commands = params.get_json("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad_request("BOT_COMMANDS_TOO_MUCH")
        cleaned = []
        for item in commands:
            name = str(item.get("command", "")) if isinstance(item, dict) else ""
            description = str(item.get("description", "")) if isinstance(item, dict) else ""
            name = name.removeprefix("/")
            if not (1 <= len(name) <= 32) or not all(c.isascii() and (c.isalnum() or c == "_")
                                                     for c in name):  # fmt: skip
                raise bad_request("BOT_COMMAND_INVALID")
            if not (1 <= len(description.strip()) <= 256):
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            cleaned.append({"command": name.lower(), "description": description})
        self.store.commands[self._commands_key(params)] = cleaned
        call.extra["count"] = len(cleaned)
        return True

    async def _getMyCommands(self, params: Params, call: CallInfo) -> Any:
        return list(self.store.commands.get(self._commands_key(params), []))

    async def _deleteMyCommands(self, params: Params, call: CallInfo) -> Any:
        self.store.commands.pop(self._commands_key(params), None)
        return True

    async def _answerCallbackQuery(self, params: Params, call: CallInfo) -> Any:
        query_id = params.get_str("callback_query_id") or ""
        query = self.store.callback_queries.get(query_id)
        if query is None:
            raise bad_request("query is too old and response timeout expired or query ID is invalid")
        query["answered"] = True
        query["answer_text"] = params.get_str("text")
        call.extra.update(callback_query_id=query_id, answer_text=params.get_str("text"))
        return True

    async def _getChat(self, params: Params, call: CallInfo) -> Any:
        chat = self.chat(params, call)
        gifts = dict.fromkeys(
            ("unlimited_gifts", "limited_gifts", "unique_gifts", "premium_subscription",
             "gifts_from_channels"), False,
        )  # fmt: skip
        return {**chat.to_api(), "accent_color_id": 0, "max_reaction_count": 11,
                "accepted_gift_types": gifts}  # fmt: skip
