"""``[connectors.web]``: where the web chat listens and who may use it."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr, model_validator

from relaybot import BaseConnectorConfig


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve to anything
        return False


class WebConfig(BaseConnectorConfig):
    """Settings of the web chat.

    Bound to loopback by default, where anyone on this machine may chat. Binding to another
    address (``0.0.0.0``, a LAN IP, a host name) exposes the bot to a network, so a ``token``
    is then required and checked on every API, stream and media request.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: shared secret; use ``token = "${RELAYBOT_WEB_TOKEN}"`` to keep it out of the file
    token: SecretStr | None = None
    #: largest accepted image upload, in MB (the core's media store also caps at 20 MB)
    max_upload_mb: int = Field(default=20, ge=1, le=20)
    #: the page title and header
    title: str = Field(default="relaybot", max_length=80)
    #: host names the chat answers besides loopback names, IP addresses and ``host`` (e.g. a
    #: reverse proxy's public name); requests for other names are refused (DNS rebinding)
    allowed_hosts: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _token_when_exposed(self) -> WebConfig:
        if self.token is not None and not self.token.get_secret_value().strip():
            self.token = None
        if not is_loopback(self.host) and self.token is None:
            raise ValueError(
                f"host {self.host!r} is reachable from other machines, so a token is required: "
                'set token = "${RELAYBOT_WEB_TOKEN}" (and export that variable) or bind to 127.0.0.1'
            )
        return self
