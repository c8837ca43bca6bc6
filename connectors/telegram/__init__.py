"""The Telegram connector (``[connectors.telegram]``), built on python-telegram-bot 22.

Private chats, groups and forum topics; replies stream as native drafts in private chats and
by send-then-edit elsewhere, paced by relaybot's streaming scheduler within Telegram's flood
limits; Markdown is sent as Telegram entities; photos and image files reach the model.

Modules: :mod:`.config` (settings), :mod:`.connector` (lifecycle and primitives),
:mod:`.updates` (which updates are answered, and how), :mod:`.formatting` (Markdown →
entities), :mod:`.media` (downloads), :mod:`.webhook` (webhook receiver), :mod:`.access`
(allow-list hook), :mod:`.errors` (PTB errors → relaybot errors).

python-telegram-bot is imported only when a Telegram connector is built, so the config can be
validated (``relaybot check``) without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaybot import CapabilityError, ConnectorType, hookimpl

from .config import TelegramConfig

if TYPE_CHECKING:
    from .connector import TelegramConnector

__all__ = ["TelegramConfig", "make_connector", "register_connectors"]


def make_connector(name: str, config: TelegramConfig) -> TelegramConnector:
    """Build a :class:`~.connector.TelegramConnector` (imports python-telegram-bot)."""
    try:
        from .connector import TelegramConnector
    except ImportError as exc:
        raise CapabilityError(
            f"the Telegram connector needs python-telegram-bot ({exc.name} is missing): "
            "pip install 'relaybot[telegram]'"
        ) from None
    return TelegramConnector(name, config)


@hookimpl
def register_connectors(register: Any) -> None:
    """Offer the ``telegram`` connector type."""
    register(ConnectorType("telegram", TelegramConfig, make_connector, "Telegram bot (python-telegram-bot)"))
