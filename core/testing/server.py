"""Run an ASGI app on a loopback port inside the current event loop (for fake servers).

Example::

    async with LoopbackServer(app) as server:
        httpx.get(server.url + "/health")

A thin front of :class:`relaybot.core.runtime.webserver.WebServer`, the one in-loop server of relaybot:
``TCP_NODELAY`` on the listening socket (no ~40 ms Nagle delay per response on loopback) and
uvicorn's signal capture off, so a test's or benchmark's own SIGINT handling is left alone.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from relaybot.core.runtime.webserver import WebServer


class LoopbackServer:
    """Serve ``app`` (any ASGI app) with uvicorn on ``127.0.0.1`` and a free port.

    Runs as a task in the running loop, so tests and benchmarks need no threads. ``url`` is
    ``http://127.0.0.1:PORT`` (no trailing slash) once started.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self._web = WebServer(
            app,
            host=host,
            port=port,
            name="relaybot:loopback",
            graceful_timeout=1.0,
            stop_timeout=3.0,
            ws="websockets-sansio" if _has_websockets() else "auto",
        )

    @property
    def host(self) -> str:
        return self._web.host

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        return self._web.port

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return self._web.url

    @property
    def web_server(self) -> WebServer:
        """The underlying server (its listening ``sockets``, ``serving``)."""
        return self._web

    async def start(self) -> None:
        """Bind the port and start serving; return once requests are accepted."""
        await self._web.start()

    async def stop(self) -> None:
        """Stop serving and wait (briefly) for the server task to end."""
        await self._web.stop()

    async def __aenter__(self) -> LoopbackServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _has_websockets() -> bool:
    try:
        import websockets  # noqa: F401
    except ImportError:
        return False
    return True
