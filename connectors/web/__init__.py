"""The web chat connector: a ChatGPT-style page served by relaybot (``[connectors.web]``).

Install the extra (``pip install 'relaybot[web]'``), then::

    [connectors.web]
    host = "127.0.0.1"     # another address needs token = "${RELAYBOT_WEB_TOKEN}"
    port = 8080

and open http://127.0.0.1:8080. Each browser is its own chat (``ChatKey("web", <client id>)``);
replies stream to the page over server-sent events (see :mod:`.api` for the routes).
"""

from __future__ import annotations

from typing import Any

from relaybot import ConnectorType, hookimpl

from .config import WebConfig
from .connector import WEB_POLICY, WebConnector

__all__ = ["WEB_POLICY", "WebConfig", "WebConnector", "register_connectors"]


def _build(name: str, config: Any) -> WebConnector:
    return WebConnector(name, config)


@hookimpl
def register_connectors(register: Any) -> None:
    """Offer the ``web`` connector type."""
    register(ConnectorType("web", WebConfig, _build, "A ChatGPT-style chat page in the browser"))
