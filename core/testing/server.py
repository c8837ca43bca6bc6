"""Run an ASGI app on a loopback port inside the current event loop (for fake servers).

Example::

    async with LoopbackServer(app) as server:
        httpx.get(server.url + "/health")
"""

from __future__ import annotations

import asyncio
import socket
from types import TracebackType
from typing import Any


class LoopbackServer:
    """Serve ``app`` (any ASGI app) with uvicorn on ``127.0.0.1`` and a free port.

    Runs as a task in the running loop, so tests and benchmarks need no threads. ``url`` is
    ``http://127.0.0.1:PORT`` (no trailing slash) once started.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self._requested_port = port
        self.port = 0
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Bind the port and start serving; return once requests are accepted."""
        import uvicorn  # lazy: only the testing kit needs it

        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto
        # is IPPROTO_TCP (a proto-0 socket keeps Nagle on: +40 ms per response on loopback)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            # keep-alive connections are closed promptly so shutdown never waits on clients
            timeout_keep_alive=5,
            timeout_graceful_shutdown=1,
            ws="websockets-sansio" if _has_websockets() else "auto",
        )
        self._server = uvicorn.Server(config)
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # re-raise the start-up failure
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Stop serving and wait (briefly) for the server task to end."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=3)
        except (TimeoutError, asyncio.CancelledError):
            self._server.force_exit = True
            self._task.cancel()

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
