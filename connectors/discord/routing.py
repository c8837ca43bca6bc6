"""Which Discord messages the bot answers, and what they become (pure decisions, no I/O).

:class:`Router` looks at one discord.py ``Message`` and returns a :class:`Routed` record (what
to hand to the core) or ``None`` (ignore it). Rules ("where it answers"):

- never the bot's own messages, other bots' or webhooks' (no bot-to-bot loops), nor system
  messages (joins, pins, "started a thread" …);
- DMs: every message;
- guild channels (``channel_trigger="mention"``, the default): a mention of the bot (its user,
  or its managed role), a reply to one of the bot's messages, or a known text command
  (``!new`` with ``command_prefix="!"``); ``channel_trigger="all"`` answers everything;
- threads (``thread_trigger``): ``"engaged"`` (default) answers every message in a thread the
  bot started, one hanging off a bot message, or one where the bot was mentioned before (the
  router remembers it); ``"mention"`` treats threads like channels; ``"off"`` ignores threads;
- the bot's mention is removed from the text; other mentions read ``@name`` / ``#channel``;
- ``reply_to`` is the referenced message id for a reply to ANY message (the bot's or a
  user's: it branches the conversation from there); a forward is not a reply;
- a thread is its own chat: ``ChatKey(platform, parent_channel_id, thread_id)``; a channel or
  DM is ``ChatKey(platform, channel_id)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Literal

import discord

from relaybot import ChatKey, User

log = logging.getLogger("relaybot.connectors.discord")

ChannelTrigger = Literal["mention", "all"]
ThreadTrigger = Literal["engaged", "mention", "off"]
Reason = Literal["dm", "mention", "reply", "command", "thread", "all"]

#: what people hear when they send only a file we cannot read
UNSUPPORTED_FILE = "Sorry, I can only read text and images for now."

# message types a person writes; everything else is a system message
_USER_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".webp")


@dataclass(frozen=True, slots=True)
class ImageAttachment:
    """An image attached to a Discord message: where to fetch it and what Discord says it is."""

    url: str
    filename: str
    size: int
    content_type: str | None
    attachment: discord.Attachment | None = None


@dataclass(frozen=True, slots=True)
class Routed:
    """A message the bot answers.

    ``reason`` says why (``dm``, ``mention``, ``reply``, ``command``, ``thread``, ``all``);
    ``unsupported`` is the polite sentence to answer with when there is nothing to read.
    """

    chat: ChatKey
    user: User
    text: str
    message_id: str
    reply_to: str | None
    is_private: bool
    reason: Reason
    guild_id: str | None = None
    channel_id: str | None = None
    images: tuple[ImageAttachment, ...] = ()
    unsupported: str | None = None


class Router:
    """Decides per message; remembers threads where the bot was mentioned.

    Args:
        platform: the connector's name (``ChatKey.platform``).
        bot_id: the bot user's id (``client.user.id``).
        channel_trigger / thread_trigger: see the module docstring.
        command_prefix / text_commands: ``!`` and the command names answered as text commands
            in channels even without a mention (an empty prefix turns text commands off).
        is_bot_message: tells whether a message id is one the bot sent (the connector knows);
            used for replies whose referenced message discord.py did not resolve, and for
            threads that hang off a bot message.
        is_admin: decides ``User.is_admin`` (see :mod:`.access`).
    """

    def __init__(
        self,
        *,
        platform: str,
        bot_id: int,
        channel_trigger: ChannelTrigger = "mention",
        thread_trigger: ThreadTrigger = "engaged",
        command_prefix: str = "",
        text_commands: Container[str] = (),
        is_bot_message: Callable[[int], bool] = lambda _id: False,
        is_admin: Callable[[discord.Message], bool] = lambda _m: False,
    ) -> None:
        self.platform = platform
        self.bot_id = bot_id
        self.channel_trigger = channel_trigger
        self.thread_trigger = thread_trigger
        self.command_prefix = command_prefix
        self.text_commands = text_commands
        self.is_bot_message = is_bot_message
        self.is_admin = is_admin
        self.engaged_threads: set[int] = set()
        self._mention = re.compile(rf"<@!?{bot_id}>")

    def route(self, message: discord.Message) -> Routed | None:
        """Decide what to do with ``message`` (see the module docstring); ``None`` = ignore."""
        author = message.author
        if author.id == self.bot_id or author.bot or message.webhook_id is not None:
            return None
        if message.type not in _USER_TYPES:
            log.debug("ignoring a %s system message in channel %s", message.type, message.channel.id)
            return None
        channel = message.channel
        private = message.guild is None
        thread = channel if isinstance(channel, discord.Thread) else None
        reason = "dm" if private else self._addressed(message, thread)
        if reason is None:
            return None
        images, others = _attachments(message)
        text = self._clean_text(message)
        if not text and not images and not others:
            return None  # e.g. only a mention, only a sticker: nothing to answer
        if thread is not None:
            chat = ChatKey(self.platform, str(thread.parent_id), str(thread.id))
        else:
            chat = ChatKey(self.platform, str(channel.id))
        return Routed(
            chat=chat,
            user=User(str(author.id), author.display_name, self.is_admin(message)),
            text=text,
            message_id=str(message.id),
            reply_to=_reply_to(message),
            is_private=private,
            reason=reason,
            guild_id=str(message.guild.id) if message.guild else None,
            channel_id=str(channel.id),
            images=images,
            unsupported=UNSUPPORTED_FILE if others and not text and not images else None,
        )

    # -- decisions -------------------------------------------------------------------------

    def _addressed(self, message: discord.Message, thread: discord.Thread | None) -> Reason | None:
        if thread is not None and self.thread_trigger == "off":
            return None
        # a reply that pings lists the bot in mentions too: call it a reply
        reason: Reason | None = None
        if self._replies_to_bot(message):
            reason = "reply"
        elif self._mentions_bot(message):
            reason = "mention"
        if reason is not None:
            if thread is not None:
                self.engaged_threads.add(thread.id)  # the bot now takes part in this thread
            return reason
        if self._is_text_command(message.content):
            return "command"
        if thread is not None and self.thread_trigger == "engaged" and self._engaged(thread):
            return "thread"
        if self.channel_trigger == "all":
            return "all"
        return None

    def _mentions_bot(self, message: discord.Message) -> bool:
        if any(user.id == self.bot_id for user in message.mentions):
            return True
        guild = message.guild
        own_role = guild.self_role if guild is not None else None
        return own_role is not None and own_role in message.role_mentions

    def _replies_to_bot(self, message: discord.Message) -> bool:
        ref = message.reference
        if ref is None or ref.message_id is None or not _is_reply(ref):
            return False
        resolved = ref.resolved
        if isinstance(resolved, discord.Message):
            return resolved.author.id == self.bot_id
        # not resolved (or deleted): only the connector's own record can tell
        return self.is_bot_message(ref.message_id)

    def _is_text_command(self, content: str) -> bool:
        prefix = self.command_prefix
        if not prefix or not content.startswith(prefix):
            return False
        words = content[len(prefix) :].split(maxsplit=1)
        return bool(words) and words[0].lower() in self.text_commands

    def _engaged(self, thread: discord.Thread) -> bool:
        return (
            thread.owner_id == self.bot_id
            or thread.id in self.engaged_threads
            or self.is_bot_message(thread.id)  # a thread started from a bot message has its id
        )

    # -- text ------------------------------------------------------------------------------

    def _clean_text(self, message: discord.Message) -> str:
        """The text without the bot's mention; other mentions as readable names."""
        text = self._mention.sub("", message.content)
        guild = message.guild
        if guild is not None and guild.self_role is not None:
            text = text.replace(guild.self_role.mention, "")
        for user in message.mentions:
            if user.id != self.bot_id:
                text = re.sub(rf"<@!?{user.id}>", f"@{user.display_name}", text)
        for role in message.role_mentions:
            text = text.replace(role.mention, f"@{role.name}")
        for channel in message.channel_mentions:
            text = text.replace(f"<#{channel.id}>", f"#{channel.name}")
        return re.sub(r"[ \t]{2,}", " ", text).strip()


def _is_reply(ref: discord.MessageReference) -> bool:
    kind = getattr(ref, "type", None)
    return kind is None or kind == discord.MessageReferenceType.reply


def _reply_to(message: discord.Message) -> str | None:
    ref = message.reference
    if ref is None or ref.message_id is None or not _is_reply(ref):
        return None
    return str(ref.message_id)


def is_image(attachment: discord.Attachment) -> bool:
    """Whether Discord (or the file name) says ``attachment`` is an image."""
    if attachment.content_type:
        return attachment.content_type.startswith("image/")
    return attachment.filename.lower().endswith(_IMAGE_EXTENSIONS)


def _attachments(
    message: discord.Message,
) -> tuple[tuple[ImageAttachment, ...], tuple[discord.Attachment, ...]]:
    images: list[ImageAttachment] = []
    others: list[discord.Attachment] = []
    for att in message.attachments:
        if is_image(att):
            images.append(ImageAttachment(att.url, att.filename, att.size, att.content_type, att))
        else:
            others.append(att)
    return tuple(images), tuple(others)
