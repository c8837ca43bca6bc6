"""Conversation storage: chats, conversations as paths in a message tree, token usage.

``await Store.open("sqlite+aiosqlite:///relaybot.db")`` (or ``postgresql+asyncpg://…``) connects
and migrates the schema; see :mod:`relaybot.core.storage.store` for the model and the
concurrency rules. Failures raise :class:`~relaybot.core.contracts.errors.StorageError`.
"""

from relaybot.core.storage.receipts import PendingMessage
from relaybot.core.storage.records import (
    USE_LEAF,
    AlreadyStoredError,
    Conversation,
    MessagePath,
    NewMessage,
    NotFoundError,
    StoredMessage,
)
from relaybot.core.storage.spending import BudgetCheck, Override, Shortfall, SpendDraft
from relaybot.core.storage.store import Store

__all__ = [
    "USE_LEAF",
    "AlreadyStoredError",
    "BudgetCheck",
    "Conversation",
    "MessagePath",
    "NewMessage",
    "NotFoundError",
    "Override",
    "PendingMessage",
    "Shortfall",
    "SpendDraft",
    "Store",
    "StoredMessage",
]
