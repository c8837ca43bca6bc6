"""Per-connector hook object: the allow-list (``check_access``) and the final close.

Each :class:`~relaybot.connectors.telegram.connector.TelegramConnector` registers one
:class:`TelegramHooks` with the running bot's plugin host at start (named
``"<connector name>-telegram"``), so two Telegram bots in one process keep separate lists.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from relaybot import AccessDecision, IncomingMessage, hookimpl

from .updates import normalise_admins

if TYPE_CHECKING:
    from .connector import TelegramConnector

log = logging.getLogger("relaybot.connectors.telegram")


class AccessList:
    """Who may talk to one bot: listed users anywhere, anyone in a listed chat, and admins.

    Both lists empty means everyone. Entries are user/chat ids or ``@usernames`` (users).
    """

    def __init__(self, users: list[str], chats: list[str], admins: list[str], denied: str) -> None:
        self.users = normalise_admins(users)
        self.chats = frozenset(c.strip() for c in chats if c.strip())
        self.admins = normalise_admins(admins)
        self.denied = denied

    @property
    def open(self) -> bool:
        """True when nobody is restricted."""
        return not self.users and not self.chats

    def allows(self, message: IncomingMessage) -> bool:
        """True if the sender may use the bot in this chat."""
        if self.open or message.user.is_admin:
            return True
        if message.chat.chat in self.chats or message.user.id in self.users:
            return True
        handle = _handle(message)
        return handle is not None and (handle in self.users or handle in self.admins)


def _handle(message: IncomingMessage) -> str | None:
    raw = getattr(message.raw, "from_user", None)
    username = getattr(raw, "username", None)
    return f"@{username.lower()}" if isinstance(username, str) and username else None


class TelegramHooks:
    """Hook implementations bound to one connector instance."""

    def __init__(self, connector: TelegramConnector, access: AccessList) -> None:
        self.connector = connector
        self.access = access

    @hookimpl
    def check_access(self, message: IncomingMessage) -> AccessDecision | None:
        """Deny senders not on this bot's lists (only for this connector's messages)."""
        if message.chat.platform != self.connector.name or self.access.allows(message):
            return None  # no opinion: later checks (budgets …) still run
        log.info("%s: denied user %s", message.chat, message.user.id)
        return AccessDecision.deny(self.access.denied)
