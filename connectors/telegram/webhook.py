"""The webhook receiver: a small Starlette app served by uvicorn inside the bot's event loop.

Telegram POSTs each update as JSON with the header ``X-Telegram-Bot-Api-Secret-Token`` set to
the secret given to ``setWebhook``. A request without the right secret is answered 403 and never
reaches the bot (anyone can find a webhook URL; only Telegram knows the secret). A valid update
is answered 200 as soon as it is queued, so Telegram never retries one because a reply is slow.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

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
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
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
            import uvicorn
        except ImportError:  # pragma: no cover - depends on the installed extras
            from relaybot import ConfigError

            raise ConfigError(
                "webhook mode needs uvicorn and starlette: pip install 'relaybot[web]'"
            ) from None
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on accepted sockets whose proto
        # is IPPROTO_TCP; with proto 0 Nagle delays each response body by ~40 ms
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(), log_level="warning", lifespan="off", access_log=False,
            timeout_keep_alive=5, timeout_graceful_shutdown=1,
        )  # fmt: skip
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # the bot owns the signals
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="telegram-webhook")
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop serving (bounded: open connections are dropped after a second)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=3)
        except (TimeoutError, asyncio.CancelledError):
            self._server.force_exit = True
            self._task.cancel()
        self._server = None
        self._task = None
