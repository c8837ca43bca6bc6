"""Serve an ASGI app with uvicorn inside the running event loop: the one way relaybot does it.

The web chat, Telegram's webhook receiver and the testing kit's fake servers all run through
:class:`WebServer`, so three things hold for every one of them:

- **relaybot owns the signals.** uvicorn ≥ 0.29 wraps ``Server.serve`` in
  ``capture_signals()``, which replaces the SIGINT/SIGTERM handlers with its own for as long as
  the server runs (and re-raises them when it ends). Inside relaybot that would stop the web
  server on Ctrl-C *before* the CLI's handler could save the live replies, and a server started
  after the CLI installed its handlers would take them over. :class:`WebServer` turns that off
  (and the older ``install_signal_handlers`` hook too): signals reach whoever installed them.
- **no Nagle delay.** The listening socket is created here with ``IPPROTO_TCP`` and
  ``TCP_NODELAY``: asyncio sets ``TCP_NODELAY`` on accepted sockets only when their ``proto``
  is ``IPPROTO_TCP``, and Linux hands the listener's ``TCP_NODELAY`` to accepted sockets. With
  Nagle on, a small write (an SSE event, a short JSON answer) that follows another one waits
  for the peer's delayed ACK: ~40 ms per event on loopback.
- **bounded start and stop.** :meth:`WebServer.start` returns once requests are accepted (or
  raises what stopped the server); :meth:`WebServer.stop` lets open requests finish for
  ``graceful_timeout`` seconds, then drops them, and never waits longer than ``stop_timeout``.

Needs ``uvicorn`` (the ``web`` and ``testing`` extras); it is imported only when a server
starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from functools import cache
from types import TracebackType
from typing import Any

__all__ = ["WebServer", "listening_socket"]

log = logging.getLogger(__name__)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``port=0``: a free one) with ``TCP_NODELAY`` set.

    IPv6 when ``host`` contains a colon. Raises :class:`OSError` when the address cannot be
    bound (the caller words the message: it knows which setting to name).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly, not 0: asyncio's transports set TCP_NODELAY on an accepted socket
    # only if its proto is IPPROTO_TCP (the accepted socket inherits the listener's proto)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


@cache
def _server_class() -> type[Any]:
    """uvicorn's Server without its signal handling (built on first use: uvicorn is optional)."""
    import uvicorn

    class InLoopServer(uvicorn.Server):
        """uvicorn's server that leaves SIGINT/SIGTERM to the program that runs it."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # uvicorn ≥ 0.29
            yield

        def install_signal_handlers(self) -> None:  # uvicorn < 0.29
            return None

    return InLoopServer


class WebServer:
    """Serve ``app`` (any ASGI app) on ``host:port`` as a task of the running loop.

    ``port=0`` picks a free port; :attr:`port` holds the bound one after :meth:`start`.
    ``ws`` is uvicorn's WebSocket implementation (``"auto"``, ``"websockets-sansio"`` …).
    :meth:`start` and :meth:`stop` may alternate: a stopped server can start again (on the port
    it had bound, unless that was taken meanwhile).
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "relaybot:web",
        graceful_timeout: float = 1.0,
        stop_timeout: float = 3.0,
        start_timeout: float = 30.0,
        timeout_keep_alive: int = 5,
        ws: str = "auto",
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self.graceful_timeout = graceful_timeout
        self.stop_timeout = stop_timeout
        self.start_timeout = start_timeout
        self.timeout_keep_alive = timeout_keep_alive
        self.ws = ws
        #: the bound listening sockets while serving (empty before start and after stop)
        self.sockets: list[socket.socket] = []
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash; IPv6 hosts in brackets)."""
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def serving(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._task is not None and not self._task.done()

    def connection_sockets(self) -> list[socket.socket]:
        """The sockets of the connections being served now (for diagnostics and tests).

        Read from uvicorn's connection list; empty when not serving.
        """
        if self._server is None:
            return []
        found = []
        for conn in getattr(self._server.server_state, "connections", ()):
            transport = getattr(conn, "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is not None:
                found.append(sock)
        return found

    async def start(self) -> None:
        """Bind the port and serve; return once requests are accepted.

        Raises :class:`OSError` when the address cannot be bound, :class:`TimeoutError` when
        the server is not up within ``start_timeout`` seconds, and whatever ended the server
        task during start-up.
        """
        import uvicorn  # optional: only a process that serves HTTP needs it

        if self.serving:
            raise RuntimeError(f"{self.name} is already serving on {self.url}")
        sock = listening_socket(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            # keep-alive connections are closed promptly so shutdown never waits on idle clients
            timeout_keep_alive=self.timeout_keep_alive,
            # typed int by uvicorn, but only ever passed to asyncio.wait_for: a float is fine
            timeout_graceful_shutdown=self.graceful_timeout,  # type: ignore[arg-type]
            ws=self.ws,
        )
        server = _server_class()(config)
        self._server = server
        self.sockets = [sock]
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=self.name)
        try:
            async with asyncio.timeout(self.start_timeout):
                # uvicorn offers no start-up event; `started` flips once the sockets listen
                while not server.started:
                    if self._task.done():
                        self._task.result()  # re-raise what stopped it
                        raise RuntimeError(f"{self.name} stopped during start-up")
                    await asyncio.sleep(0.005)
        except BaseException:
            await self._end()
            raise

    async def stop(self) -> None:
        """Stop serving: open requests get ``graceful_timeout`` s, the whole stop ``stop_timeout`` s."""
        await self._end()

    async def _end(self) -> None:
        server, task = self._server, self._task
        self._server = self._task = None
        try:
            if server is not None and task is not None:
                server.should_exit = True
                try:
                    await asyncio.wait_for(asyncio.shield(task), timeout=self.stop_timeout)
                except TimeoutError:
                    server.force_exit = True
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                except asyncio.CancelledError:
                    # stop() itself was cancelled, or the task was: either way it must end now
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
                except Exception:
                    log.exception("%s failed while stopping", self.name)
        finally:
            for sock in self.sockets:
                sock.close()
            self.sockets = []

    async def __aenter__(self) -> WebServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
