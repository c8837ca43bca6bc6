"""slack_sdk errors → the relaybot errors the streaming scheduler acts on.

Slack answers almost every failure with HTTP 200 and ``{"ok": false, "error": code}``; only
rate limiting has its own status (429 + ``Retry-After``). The scheduler owns pacing, so a 429
becomes :class:`~relaybot.PlatformRateLimitError` at once (slack_sdk is built without its
rate-limit retry handler). Slack counts tiers per method per *workspace*, so the pause applies
to the whole connector (``scope="global"``): no call goes out inside a Retry-After window.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError

from relaybot import (
    MessageGoneError,
    PlatformError,
    PlatformRateLimitError,
    StreamEndedError,
)

_TOKEN = re.compile(r"\b(?:xox[a-z]|xapp)-[A-Za-z0-9-]+")


def redact(text: str) -> str:
    """``text`` with anything shaped like a Slack token replaced (for logs and errors)."""
    return _TOKEN.sub("[token]", text)


#: the conversation is gone for the bot: nothing more can be posted there
CHAT_GONE = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "thread_not_found", "team_access_not_granted",
    "restricted_action", "restricted_action_read_only_channel", "restricted_action_thread_only_channel",
    "cannot_reply_to_message",
})  # fmt: skip
#: the message is gone (deleted by a person, or never the bot's)
MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message", "cant_delete_message",
                          "message_not_owned_by_app", "edit_window_closed"})  # fmt: skip
#: the stream cannot continue: finish by editing the message
STREAM_ENDED = frozenset({"message_not_in_streaming_state", "stopped_by_user"})
#: the token itself is refused
AUTH_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired",
                         "account_inactive", "not_allowed_token_type"})  # fmt: skip


def error_code(exc: SlackApiError) -> str:
    """Slack's ``error`` field (``""`` when absent)."""
    data = getattr(exc.response, "data", None)
    if isinstance(data, Mapping):
        return str(data.get("error") or "")
    return ""


def retry_after(exc: SlackApiError) -> float | None:
    """The ``Retry-After`` seconds of a 429 answer, else ``None``."""
    response = exc.response
    if getattr(response, "status_code", None) != 429 and error_code(exc) != "ratelimited":
        return None
    headers: Any = getattr(response, "headers", None) or {}
    value = None
    for key in ("Retry-After", "retry-after"):
        try:
            value = headers.get(key)
        except AttributeError:
            value = None
        if value is not None:
            break
    if value is None and isinstance(headers, Mapping):
        value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


def translate(exc: SlackApiError, *, method: str, where: str) -> PlatformError:
    """The relaybot error for a failed Web API call (``where`` is for the message only)."""
    wait = retry_after(exc)
    code = error_code(exc) or f"HTTP {getattr(exc.response, 'status_code', '?')}"
    if wait is not None:
        return PlatformRateLimitError(wait, scope="global", message=f"{method} rate limited in {where}")
    text = f"{method} in {where}: {redact(code)}"
    if code in STREAM_ENDED:
        return StreamEndedError(text, editable=True)
    if code in CHAT_GONE or code in MESSAGE_GONE:
        return MessageGoneError(text)
    return PlatformError(text)
