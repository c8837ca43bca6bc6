"""The webhook receiver: a small Starlette app served inside the bot's event loop.

It runs on :class:`relaybot.core.runtime.webserver.WebServer` (uvicorn, ``TCP_NODELAY``, the bot's own
SIGINT/SIGTERM handling left alone).

Telegram POSTs each update as JSON with the header ``X-Telegram-Bot-Api-Secret-Token`` set to
the secret given to ``setWebhook``. A request without the right secret is answered 403 and never
reaches the bot (anyone can find a webhook URL; only Telegram knows the secret). A valid update
is answered 200 as soon as it is queued, so Telegram never retries one because a reply is slow.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from relaybot import WebServer

log = logging.getLogger("relaybot.connectors.telegram")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

UpdateSink = Callable[[dict[str, Any]], Awaitable[None]]


class WebhookServer:
    """Serve ``POST path`` on ``host:port`` and pass valid updates to ``sink``.

    ``port=0`` picks a free port (see :attr:`port` after :meth:`start`). Requires the
    ``starlette`` and ``uvicorn`` packages (the ``web`` extra).
    """

    def __init__(self, *, host: str, port: int, path: str, secret: str, sink: UpdateSink) -> None:
        self.host = host
        self.port = port
        self.path = path
        self._secret = secret.encode()
        self._sink = sink
        self._server: WebServer | None = None
        #: requests refused for a wrong or missing secret (for admins and tests)
        self.rejected = 0

    @property
    def local_url(self) -> str:
        """``http://host:port/path`` of the running server."""
        return f"http://{self.host}:{self.port}{self.path}"

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def receive(request: Request) -> Response:
            given = request.headers.get(SECRET_HEADER, "").encode()
            if not hmac.compare_digest(given, self._secret):
                self.rejected += 1
                log.warning("webhook: refused a request with a wrong or missing secret token")
                return Response(status_code=403)
            try:
                data = json.loads(await request.body())
            except ValueError:
                return Response(status_code=400)
            if not isinstance(data, dict):
                return Response(status_code=400)
            await self._sink(data)
            return Response(status_code=200)

        return Starlette(routes=[Route(self.path, receive, methods=["POST"])])

    async def start(self) -> None:
        """Bind and start serving; return once requests are accepted."""
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the installed extras
            from relaybot import ConfigError

            raise ConfigError(
                "webhook mode needs uvicorn and starlette: pip install 'relaybot[web]'"
            ) from None
        server = WebServer(
            self._app(), host=self.host, port=self.port, name="telegram-webhook",
            graceful_timeout=1.0, stop_timeout=3.0,
        )  # fmt: skip
        await server.start()
        self._server = server
        self.port = server.port

    async def stop(self) -> None:
        """Stop serving (bounded: open connections are dropped after a second)."""
        if self._server is not None:
            await self._server.stop()
        self._server = None
