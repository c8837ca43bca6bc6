"""The Slack connector (``[connectors.slack]``), built on slack-bolt's ``AsyncApp``.

DMs, mentions in channels (answered in the mention's thread), follow-ups in threads the bot is
in and Slack's assistant pane; each thread is its own conversation. Replies stream with Slack's
chat streaming (``chat.startStream``/``appendStream``/``stopStream``), paced by relaybot's
scheduler within Slack's per-method tiers, with ``chat.postMessage`` + ``chat.update`` where
streams are unavailable or end early. Socket Mode or HTTP Events mode.

Modules: :mod:`.config` (settings), :mod:`.connector` (lifecycle, intake and primitives),
:mod:`.routing` (which events are answered, and where), :mod:`.formatting` (Markdown →
``markdown`` blocks and mrkdwn), :mod:`.access` (allow-lists, admins, one denial notice),
:mod:`.media` (downloads with the bot token, files-v2 uploads), :mod:`.errors` (Slack errors →
relaybot errors), :mod:`.http_events` (the signed-request endpoint). ``manifest.json`` is the
app manifest a user imports (see ``README.md``).

slack-bolt and slack_sdk are imported only when a Slack connector is built (the ``slack``
extra: ``pip install 'relaybot[slack]'``), so ``relaybot check`` validates a config without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relaybot import CapabilityError, ConnectorType, hookimpl

from .config import SlackConfig

if TYPE_CHECKING:
    from .connector import SlackConnector

__all__ = ["SlackConfig", "make_connector", "register_connectors"]


def make_connector(name: str, config: SlackConfig) -> SlackConnector:
    """Build a :class:`~.connector.SlackConnector` (imports slack-bolt and slack_sdk)."""
    try:
        from .connector import SlackConnector
    except ImportError as exc:
        raise CapabilityError(
            f"the Slack connector needs slack-bolt and slack_sdk ({exc.name} is missing): "
            "pip install 'relaybot[slack]'"
        ) from None
    return SlackConnector(name, config)


@hookimpl
def register_connectors(register: Any) -> None:
    """Offer the ``slack`` connector type."""
    register(
        ConnectorType(
            "slack", SlackConfig, make_connector, "Slack app (slack-bolt; Socket Mode or HTTP Events)"
        )
    )
