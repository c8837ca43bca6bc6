"""Which Telegram updates the bot answers, and what they become (pure decisions, no I/O).

:func:`route` looks at one PTB ``Update`` and returns a :class:`Routed` (a message to hand to the
core, with an image to download or a reason it cannot be handled) or ``None`` (ignore it).

Rules:

- only new messages are answered; edited messages, channel posts, membership changes, service
  messages (joins, pins, topic creation …) and unknown update types are ignored (logged at
  DEBUG; a group migrating to a supergroup and the bot being removed at INFO);
- messages from other bots are ignored (no bot-to-bot loops);
- private chats: every message; groups: per ``group_trigger`` — ``mention`` (an @mention of the
  bot, a reply to one of its messages, or a command), ``all``, or ``commands``; a command
  addressed to another bot (``/help@other_bot``) is never ours. The bot's @mention is removed
  from the text;
- a forum topic is its own chat surface: ``ChatKey(platform, chat_id, topic_id)``;
- ``reply_to`` is the replied-to message id (not the implicit reply to a topic's first message).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from telegram import Message, MessageEntity, Update
from telegram import User as TgUser

from relaybot import ChatKey, User

log = logging.getLogger("relaybot.connectors.telegram")

GroupTrigger = Literal["mention", "all", "commands"]

#: what people hear when they send something we cannot read yet
UNSUPPORTED_MEDIA = "Sorry, I can't handle voice or video messages yet — please send text or a photo."
UNSUPPORTED_STICKER = "Sorry, I can't read stickers — please send text or a photo."
UNSUPPORTED_FILE = "Sorry, I can only read text and images (photos or image files) for now."


@dataclass(frozen=True, slots=True)
class ImageFile:
    """A Telegram file to download as an image: its id, size (when known) and MIME type."""

    file_id: str
    size: int | None
    mime_type: str


@dataclass(frozen=True, slots=True)
class Routed:
    """An update the bot answers.

    Exactly one of: a normal message (``text`` and/or ``image``), or ``unsupported`` (the
    polite sentence to answer with).
    """

    chat: ChatKey
    user: User
    text: str
    message_id: str
    reply_to: str | None
    is_private: bool
    image: ImageFile | None = None
    unsupported: str | None = None


def route(
    update: Update,
    *,
    platform: str,
    bot: TgUser,
    trigger: GroupTrigger = "mention",
    admins: frozenset[str] = frozenset(),
) -> Routed | None:
    """Decide what to do with ``update`` (see the module docstring); ``None`` = ignore."""
    message = update.message
    if message is None:
        _log_ignored(update)
        return None
    if message.migrate_to_chat_id is not None:
        log.info("chat %s migrated to supergroup %s; its messages now come from the new id",
                 message.chat.id, message.migrate_to_chat_id)  # fmt: skip
        return None
    sender = message.from_user
    if sender is None or (sender.is_bot and sender.id != _ANONYMOUS_ADMIN):
        log.debug("ignoring a message from a bot or channel in chat %s", message.chat.id)
        return None
    private = message.chat.type == "private"
    text = message.text or message.caption or ""
    entities = list(message.entities or message.caption_entities or ())
    addressed, foreign_command = _addressed(message, text, entities, bot, trigger, private)
    if foreign_command or not addressed:
        return None
    image, unsupported = _attachment(message)
    if not text.strip() and image is None and unsupported is None:
        log.debug("ignoring a service message in chat %s", message.chat.id)
        return None
    if not private and bot.username:
        text = _strip_mention(text, bot.username)
    topic = message.message_thread_id if message.is_topic_message else None
    thread = str(topic) if topic else None
    return Routed(
        chat=ChatKey(platform, str(message.chat.id), thread),
        user=_user(sender, admins),
        text=text,
        message_id=str(message.message_id),
        reply_to=_reply_to(message),
        is_private=private,
        image=image,
        unsupported=unsupported,
    )


# Telegram's "GroupAnonymousBot": an anonymous group admin writes as this bot.
_ANONYMOUS_ADMIN = 1087968824


def _log_ignored(update: Update) -> None:
    if update.edited_message is not None:
        log.debug("ignoring an edited message in chat %s", update.edited_message.chat.id)
    elif update.channel_post is not None or update.edited_channel_post is not None:
        log.debug("ignoring a channel post")
    elif update.my_chat_member is not None:
        change = update.my_chat_member
        status = change.new_chat_member.status
        if status in ("left", "kicked"):
            log.info("the bot was removed from chat %s (%s)", change.chat.id, status)
        else:
            log.debug("bot membership in chat %s is now %s", change.chat.id, status)
    else:
        kinds = [k for k, v in (update.to_dict() or {}).items() if k != "update_id" and v]
        log.debug("ignoring an update of type %s", ",".join(kinds) or "unknown")


def _addressed(
    message: Message, text: str, entities: list[MessageEntity], bot: TgUser,
    trigger: GroupTrigger, private: bool,
) -> tuple[bool, bool]:  # fmt: skip
    """(is the message addressed to the bot, is it a command for another bot)."""
    username = (bot.username or "").lower()
    command = False
    foreign = False
    mentioned = False
    for entity in entities:
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            command = True
            value = _entity_text(text, entity)
            target = value.partition("@")[2].lower()
            foreign = bool(target) and target != username
        elif entity.type == MessageEntity.MENTION:
            mentioned = mentioned or _entity_text(text, entity).lower() == f"@{username}"
        elif entity.type == MessageEntity.TEXT_MENTION and entity.user is not None:
            mentioned = mentioned or entity.user.id == bot.id
    if not entities and text.startswith("/"):
        command = True  # clients always mark commands, but be lenient with hand-made updates
    if private:
        return True, foreign
    if trigger == "all":
        return True, foreign
    if trigger == "commands":
        return command, foreign
    replied = message.reply_to_message
    to_bot = (
        replied is not None
        and replied.from_user is not None
        and replied.from_user.id == bot.id
        and _reply_to(message) is not None
    )
    return command or mentioned or to_bot, foreign


def _entity_text(text: str, entity: MessageEntity) -> str:
    """The text an entity covers (offsets are UTF-16 code units)."""
    encoded = text.encode("utf-16-le")
    return encoded[2 * entity.offset : 2 * (entity.offset + entity.length)].decode("utf-16-le", "replace")


def _strip_mention(text: str, username: str) -> str:
    pattern = re.compile(rf"(?<![\w@])@{re.escape(username)}\b,?", re.IGNORECASE)
    stripped = pattern.sub("", text)
    if stripped == text:
        return text
    return re.sub(r"[ \t]{2,}", " ", stripped).strip()


def _reply_to(message: Message) -> str | None:
    replied = message.reply_to_message
    if replied is None:
        return None
    if message.is_topic_message and replied.message_id == message.message_thread_id:
        return None  # every topic message implicitly "replies" to the topic's first message
    if replied.forum_topic_created is not None:
        return None
    return str(replied.message_id)


def _user(sender: TgUser, admins: frozenset[str]) -> User:
    name = sender.full_name or sender.username or str(sender.id)
    handle = f"@{sender.username.lower()}" if sender.username else None
    is_admin = str(sender.id) in admins or (handle is not None and handle in admins)
    return User(id=str(sender.id), name=name, is_admin=is_admin)


def _attachment(message: Message) -> tuple[ImageFile | None, str | None]:
    """(image to download, or the not-supported sentence) for a message's attachment."""
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return ImageFile(largest.file_id, largest.file_size, "image/jpeg"), None
    document = message.document
    if document is not None and (document.mime_type or "").startswith("image/") and message.animation is None:
        return ImageFile(document.file_id, document.file_size, document.mime_type or "image/jpeg"), None
    if message.voice or message.video or message.video_note or message.audio or message.animation:
        return None, UNSUPPORTED_MEDIA
    if message.sticker is not None:
        return None, UNSUPPORTED_STICKER
    if document is not None:
        return None, UNSUPPORTED_FILE
    return None, None


def normalise_admins(values: list[str]) -> frozenset[str]:
    """Config admin/user entries as compared by :func:`route` (ids, lower-case @handles)."""
    out = set()
    for value in values:
        value = value.strip()
        if not value:
            continue
        out.add(value.lower() if value.startswith("@") else value)
    return frozenset(out)
