"""python-telegram-bot errors → relaybot's platform errors (what the scheduler acts on).

The streaming scheduler owns pacing and retries, so the connector never sleeps or retries: it
translates each Bot API failure into the one exception that tells the scheduler what to do.

==========================================  ==========================================
PTB error                                   relaybot error (scheduler reaction)
==========================================  ==========================================
``RetryAfter``                              ``PlatformRateLimitError`` (pause the chat)
``BadRequest`` "message is not modified"    ``MessageNotModifiedError`` (a success)
``BadRequest`` "message to edit not found",
"chat not found", ``Forbidden`` (kicked,
blocked), ``ChatMigrated``                  ``MessageGoneError`` (new message / give up)
anything else, ``TimedOut``,
``NetworkError``                            ``PlatformError`` (back off and retry)
==========================================  ==========================================
"""

from __future__ import annotations

import logging
from datetime import timedelta

from telegram import error as tg

from relaybot import MessageGoneError, MessageNotModifiedError, PlatformError, PlatformRateLimitError, redact

log = logging.getLogger("relaybot.connectors.telegram")

# Lower-case fragments of BadRequest descriptions meaning "the target is gone".
_GONE = (
    "message to edit not found",
    "chat not found",
    "message to be replied not found",
    "message_id_invalid",
    "message can't be edited",
    "there is no text in the message to edit",
    "thread not found",
    "topic_deleted",
    "topic_closed",
    "have no rights to send a message",
    "not enough rights to send",
)
# Fragments meaning Telegram rejected our formatting (retry once as plain text).
_ENTITY_ERRORS = ("can't parse entities", "entities_too_long", "entity_", "wrong http url",
                  "unsupported url protocol", "entity beyond", "text buttons are unallowed")  # fmt: skip


def retry_after_seconds(exc: tg.RetryAfter) -> float:
    """``retry_after`` in seconds whatever PTB's time-period mode (int or timedelta)."""
    value = getattr(exc, "_retry_after", None)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float):  # read the stored value: the property warns (PTB 22.2+)
        return float(value)
    raw = exc.retry_after
    return raw.total_seconds() if isinstance(raw, timedelta) else float(raw)


def is_entity_error(exc: BaseException) -> bool:
    """True for a BadRequest that means the formatting (entities) was refused."""
    if not isinstance(exc, tg.BadRequest):
        return False
    text = exc.message.lower()
    return any(fragment in text for fragment in _ENTITY_ERRORS)


def translate(exc: tg.TelegramError, *, where: str) -> PlatformError:
    """The relaybot error for a PTB error raised by a call into ``where`` (a chat key)."""
    message = redact(f"{type(exc).__name__}: {exc.message}")
    if isinstance(exc, tg.RetryAfter):
        return PlatformRateLimitError(retry_after_seconds(exc), scope="chat", message=message)
    if isinstance(exc, tg.Forbidden):
        log.warning("%s: the bot can no longer write there (%s)", where, exc.message)
        return MessageGoneError(message)
    if isinstance(exc, tg.ChatMigrated):
        log.info("%s: the group became supergroup %s; new messages come from there",
                 where, exc.new_chat_id)  # fmt: skip
        return MessageGoneError(message)
    if isinstance(exc, tg.BadRequest):
        text = exc.message.lower()
        if "message is not modified" in text:
            return MessageNotModifiedError(message)
        if any(fragment in text for fragment in _GONE):
            return MessageGoneError(message)
        return PlatformError(message)
    # TimedOut, NetworkError, InvalidToken, Conflict …: transient or not, the scheduler retries
    # a bounded number of times and then gives up on the message.
    return PlatformError(message)
