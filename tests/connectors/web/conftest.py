"""Fixtures of the web chat tests: a real relaybot serving the web chat on a free loopback port,
answering through the fake OpenAI server."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from relaybot.connectors.web import WebConnector
from relaybot.core.cli.config import parse_config
from relaybot.core.runtime.app import Relaybot
from relaybot.testing import FakeOpenAIServer

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover
    async_fixture = pytest.fixture


@dataclass
class WebBot:
    """A running bot with the web chat; ``http`` talks to it as one browser (``client``)."""

    app: Relaybot
    connector: WebConnector
    http: httpx.AsyncClient
    client: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def url(self) -> str:
        return self.connector.url

    def headers(self, client: str | None = None, **extra: str) -> dict[str, str]:
        token = self.connector.token
        h = {"X-Relaybot-Client": client or self.client, **extra}
        if token:
            h["Authorization"] = f"Bearer {token}"
        return h

    async def call(self, method: str, path: str, *, client: str | None = None, **kw: Any) -> httpx.Response:
        headers = {**self.headers(client), **kw.pop("headers", {})}
        return await self.http.request(method, self.url + path, headers=headers, **kw)

    async def stored(self, client: str | None = None) -> list[Any]:
        """The stored path of the client's active conversation."""
        chat = self.connector.chat_of(client or self.client)
        conv = await self.app.store.active_conversation(chat)
        if conv is None or conv.leaf_id is None:
            return []
        return list(await self.app.store.path(conv.leaf_id))


def bot_config(tmp_path: Path, base_url: str, web: dict[str, Any], bot: dict[str, Any] | None = None) -> Any:
    return parse_config(
        {
            "bot": {"default_provider": "fake", "checkpoint_interval": 0.2, **(bot or {})},
            "storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'relaybot.db'}"},
            "providers": {
                "fake": {
                    "type": "openai",
                    "base_url": base_url,
                    "api_key": "sk-test-key",
                    "model": "gpt-4o-mini",
                }
            },
            "connectors": {"web": {"port": 0, **web}},
        },
        "<test>",
    )


@async_fixture
async def make_web(
    tmp_path: Path, fake_openai: FakeOpenAIServer
) -> AsyncIterator[Callable[..., Awaitable[WebBot]]]:
    """Factory: ``bot = await make_web(web={...}, bot={...})`` starts relaybot with the web chat."""
    bots: list[WebBot] = []

    async def factory(*, web: dict[str, Any] | None = None, bot: dict[str, Any] | None = None) -> WebBot:
        app = Relaybot(bot_config(tmp_path, fake_openai.base_url, web or {}, bot))
        await app.start()
        connector = app.connectors["web"]
        assert isinstance(connector, WebConnector)
        result = WebBot(app, connector, httpx.AsyncClient(timeout=10))
        bots.append(result)
        return result

    yield factory
    for b in reversed(bots):
        await b.http.aclose()
        if b.app.started:
            await b.app.stop()


@async_fixture
async def web(make_web: Callable[..., Awaitable[WebBot]]) -> WebBot:
    """A running web chat with default settings."""
    return await make_web()


class EventLog:
    """Events read from ``/api/events`` by a background task (one browser tab)."""

    def __init__(self, bot: WebBot, client: str | None = None, last_event_id: str | None = None) -> None:
        self.bot = bot
        self.client = client or bot.client
        self.last_event_id = last_event_id
        self.events: list[Any] = []  # httpx_sse.ServerSentEvent
        self._task: Any = None
        self._changed: Any = None

    async def open(self) -> EventLog:
        import asyncio

        self._changed = asyncio.Event()
        before = self.bot.connector.hub.subscriber_count(self.client)
        self._task = asyncio.create_task(self._read())
        async with asyncio.timeout(5):
            while self.bot.connector.hub.subscriber_count(self.client) <= before:
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.01)
        return self

    async def _read(self) -> None:
        from httpx_sse import aconnect_sse

        headers = self.bot.headers(self.client)
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        async with aconnect_sse(self.bot.http, "GET", self.bot.url + "/api/events", headers=headers) as src:
            async for event in src.aiter_sse():
                if not event.data:
                    continue  # the "retry:" preamble, which a browser does not dispatch either
                self.events.append(event)
                self._changed.set()

    async def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 15) -> list[Any]:
        """Wait until ``predicate(events)`` holds (generous timeout: a loaded machine is fine)."""
        import asyncio

        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                self._changed.clear()
                if self._task.done():
                    self._task.result()
                    raise AssertionError("the event stream ended")
                await self._changed.wait()
        return self.events

    def named(self, *names: str) -> list[Any]:
        return [e for e in self.events if e.event in names]

    async def close(self) -> None:
        import asyncio

        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def rebuild(events: list[Any]) -> dict[str, str]:
    """The text of every bot message as a page would show it (deltas appended, replaces applied)."""
    import json

    texts: dict[str, str] = {}
    for e in events:
        if e.event in ("delta", "replace"):
            data = json.loads(e.data)
            mid = data["message_id"]
            texts[mid] = (texts.get(mid, "") + data["text"]) if e.event == "delta" else data["text"]
    return texts


@async_fixture
async def events_of() -> AsyncIterator[Callable[..., Awaitable[EventLog]]]:
    """``log = await events_of(bot, client=None, last_event_id=None)`` opens an event stream."""
    logs: list[EventLog] = []

    async def factory(bot: WebBot, client: str | None = None, last_event_id: str | None = None) -> EventLog:
        log = await EventLog(bot, client, last_event_id).open()
        logs.append(log)
        return log

    yield factory
    for log in logs:
        await log.close()


@pytest.fixture
def rebuild_texts() -> Callable[[list[Any]], dict[str, str]]:
    return rebuild
