"""WebServer: the one in-loop uvicorn server (web chat, Telegram webhooks, the testing fakes).

Every listening socket and every accepted connection has TCP_NODELAY (the standard asyncio
loop sets it on accepted sockets only when the listener was created with IPPROTO_TCP), the
process's SIGINT/SIGTERM handlers are never touched, and start/stop are bounded. (That a signal
reaches relaybot's own handler while each server runs is checked in a real process:
``tests/cli/test_signals_with_servers.py``.)
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from relaybot.connectors.telegram.webhook import WebhookServer
from relaybot.connectors.web import WebConnector
from relaybot.connectors.web.config import WebConfig
from relaybot.core.contracts.errors import ConfigError
from relaybot.core.runtime.webserver import WebServer
from relaybot.testing import LoopbackServer, RecordingHost

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover
    async_fixture = pytest.fixture


async def hello(scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Any) -> None:
    """A minimal ASGI app: 200 "hello"."""
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def nothing(message: Any) -> None:
    return None


def nodelay(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


# Each kind of server relaybot runs, started and yielding (its WebServer, a URL answering GET
# or POST). The connectors are run standalone: only the HTTP server is under test here.


async def _plain() -> AsyncIterator[tuple[WebServer, str, str]]:
    async with WebServer(hello) as server:
        yield server, server.url + "/", "GET"


async def _loopback() -> AsyncIterator[tuple[WebServer, str, str]]:
    async with LoopbackServer(hello) as server:
        yield server.web_server, server.url + "/", "GET"


async def _web_chat() -> AsyncIterator[tuple[WebServer, str, str]]:
    connector = WebConnector("web", WebConfig(port=0))
    await connector.start(RecordingHost())
    try:
        assert connector._server is not None
        yield connector._server, connector.url + "/api/info", "GET"
    finally:
        await connector.stop()
        await connector.aclose()  # as the core does: stop intake, then close


async def _webhook() -> AsyncIterator[tuple[WebServer, str, str]]:
    hook = WebhookServer(host="127.0.0.1", port=0, path="/hook", secret="s3cret", sink=nothing)
    await hook.start()
    try:
        assert hook._server is not None
        yield hook._server, hook.local_url, "POST"
    finally:
        await hook.stop()


KINDS = {"WebServer": _plain, "LoopbackServer": _loopback, "web chat": _web_chat, "webhook": _webhook}


@async_fixture(params=list(KINDS))
async def running(request: pytest.FixtureRequest) -> AsyncIterator[tuple[WebServer, str, str]]:
    async for item in KINDS[request.param]():
        yield item


async def test_listening_and_accepted_sockets_have_tcp_nodelay(running) -> None:
    server, url, method = running
    assert server.sockets and all(nodelay(s) for s in server.sockets)
    async with httpx.AsyncClient() as http:
        # a kept-alive connection stays open, so the server side can be inspected
        res = await http.request(method, url, headers={"X-Relaybot-Client": "a" * 32})
        assert res.status_code < 500
        accepted = server.connection_sockets()
        assert accepted, "the server reports no open connection"
        assert all(nodelay(s) for s in accepted)


@pytest.mark.parametrize("kind", list(KINDS))
async def test_signal_handlers_are_the_same_before_during_and_after(kind: str) -> None:
    # this runs in the main thread, where uvicorn's own capture_signals would replace both
    # handlers with its handle_exit while serving (and restore them afterwards)
    sigs = (signal.SIGINT, signal.SIGTERM)
    before = {sig: signal.getsignal(sig) for sig in sigs}
    serving = KINDS[kind]()
    server, url, method = await anext(serving)
    try:
        during = {sig: signal.getsignal(sig) for sig in sigs}
        async with httpx.AsyncClient() as http:
            assert (await http.request(method, url)).status_code < 500
    finally:
        await serving.aclose()
    after = {sig: signal.getsignal(sig) for sig in sigs}
    assert before == during == after
    assert not server.serving


async def test_stop_is_bounded_with_a_client_that_never_finishes() -> None:
    release = asyncio.Event()

    async def hanging(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await release.wait()  # a stream that only ends when the server drops it

    server = WebServer(hanging, graceful_timeout=0.2, stop_timeout=1.0)
    await server.start()
    async with httpx.AsyncClient() as http:
        async with http.stream("GET", server.url) as res:
            assert await anext(res.aiter_bytes()) == b"first"
            async with asyncio.timeout(10):  # generous: the contract is stop_timeout, 1 s
                await server.stop()
    assert not server.serving and server.sockets == []
    release.set()


async def test_a_taken_port_is_an_oserror_and_the_server_can_start_again() -> None:
    async with WebServer(hello) as first:
        taken = WebServer(hello, port=first.port)
        with pytest.raises(OSError):
            await taken.start()
        assert not taken.serving
    again = WebServer(hello, port=first.port)  # the port was released by stop()
    async with again:
        async with httpx.AsyncClient() as http:
            assert (await http.get(again.url)).text == "hello"


async def test_web_chat_on_a_taken_port_names_the_setting() -> None:
    async with WebServer(hello) as other:
        connector = WebConnector("web", WebConfig(port=other.port))
        with pytest.raises(ConfigError) as info:
            await connector.start(RecordingHost())
    assert "connectors.web.port" in str(info.value) and str(other.port) in str(info.value)
