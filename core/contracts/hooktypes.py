"""Small value types passed to and returned from per-message hooks."""

from __future__ import annotations

from dataclasses import dataclass

from relaybot.core.contracts.models import ChatKey, ReplyStatus, Usage


@dataclass(frozen=True, slots=True)
class AccessDecision:
    """The answer of a ``check_access`` hook. Build with :meth:`allow` or :meth:`deny`."""

    allowed: bool
    reason: str = ""

    @classmethod
    def allow(cls) -> AccessDecision:
        """Allow the message and skip any later access checks."""
        return cls(True)

    @classmethod
    def deny(cls, reason: str) -> AccessDecision:
        """Stop the message; ``reason`` is shown to the user (once, politely)."""
        return cls(False, reason)


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """What ``after_reply`` receives about one finished assistant reply."""

    chat: ChatKey
    conversation_id: int
    message_id: int
    text: str
    status: ReplyStatus
    usage: Usage | None
    provider: str
    model: str
    platform_message_ids: tuple[str, ...] = ()
    error: str = ""
    #: the platform user id of the person it answered
    user_id: str = ""
