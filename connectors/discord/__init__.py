"""The Discord connector (``[connectors.discord]``), built on discord.py 2.

DMs, mentions, replies to the bot and threads; a reply to any message branches the
conversation from it; answers stream by edits paced by Discord's own ``X-RateLimit-*`` headers,
split at 2,000 characters (4,096 in embeds) with code fences closed and reopened, each part a
reply to the previous one; relaybot's commands as slash commands and as ``!`` text commands.

Modules: :mod:`.config` (settings), :mod:`.connector` (lifecycle and primitives),
:mod:`.routing` (which messages are answered, and what they become), :mod:`.access`
(allow-lists by user, role, channel and guild; admins), :mod:`.media` (image attachments in,
generated images out), :mod:`.ratelimits` (Discord's buckets learned from the headers).
``SETUP.md`` next to this file lists the Discord application settings a user needs.

discord.py is imported only when a Discord connector is built, so the config can be validated
(``relaybot check``) without the ``discord`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaybot import CapabilityError, ConnectorType, hookimpl

from .config import DiscordConfig

if TYPE_CHECKING:
    from .connector import DiscordConnector

__all__ = ["DiscordConfig", "make_connector", "register_connectors"]


def make_connector(name: str, config: DiscordConfig) -> DiscordConnector:
    """Build a :class:`~.connector.DiscordConnector` (imports discord.py)."""
    try:
        from .connector import DiscordConnector
    except ImportError as exc:
        raise CapabilityError(
            f"the Discord connector needs discord.py ({exc.name} is missing): pip install 'relaybot[discord]'"
        ) from None
    return DiscordConnector(name, config)


@hookimpl
def register_connectors(register: Any) -> None:
    """Offer the ``discord`` connector type."""
    register(ConnectorType("discord", DiscordConfig, make_connector, "Discord bot (discord.py)"))
