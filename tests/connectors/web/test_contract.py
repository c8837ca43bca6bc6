"""The connector contract suite (relaybot.testing.ConnectorContract) on the web chat.

The platform is the page itself, played by one browser per chat: a person writes through the
JSON API (``POST /api/messages``, ``/api/uploads``, ``/api/stop``) and what the platform shows
is the page's model, built as the page builds it — the conversation's history loaded when the
event stream (re)connects, then the live ``delta`` / ``replace`` / ``done`` / ``interrupted`` /
``image`` / ``remove`` events. A notice (a denial, a command's answer) is shown live only, as
on the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from relaybot import ChatKey
from relaybot.testing import ConnectorContract, ContractBot, ContractChat, Shown

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover
    async_fixture = pytest.fixture


@dataclass
class Page:
    """One browser tab of client ``client``: its event stream and the history it loaded."""

    client: str
    run: int = -1
    history: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class Browsers:
    """The fake platform of the web chat: browsers (one per client id) on the running page."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(timeout=10)
        self.pages: dict[str, Page] = {}

    def headers(self, client: str) -> dict[str, str]:
        return {"X-Relaybot-Client": client}

    async def open(self, bot: ContractBot, client: str) -> Page:
        """The client's tab, (re)loaded when the bot (re)started: stream first, then history."""
        page = self.pages.setdefault(client, Page(client))
        if page.run == bot.runs and page.task is not None:
            if not page.task.done():
                return page
            page.task.result()  # the stream ended while the bot runs: say why
            raise AssertionError("the event stream ended while the bot was running")
        await self._close(page)
        page.run, page.events, page.history = bot.runs, [], []
        hub = bot.connector.hub  # type: ignore[attr-defined]
        before = hub.subscriber_count(client)
        page.task = asyncio.create_task(self._read(bot.connector.url, page))  # type: ignore[attr-defined]
        async with asyncio.timeout(10):
            while hub.subscriber_count(client) <= before:
                if page.task.done():
                    page.task.result()
                await asyncio.sleep(0.01)
        page.history = await self.history(bot, client)
        return page

    async def _read(self, url: str, page: Page) -> None:
        from httpx_sse import aconnect_sse

        headers = self.headers(page.client)
        quiet = httpx.Timeout(10, read=None)  # a tab may wait long for the next event
        async with aconnect_sse(self.http, "GET", url + "/api/events", headers=headers, timeout=quiet) as src:
            async for event in src.aiter_sse():
                if event.data:  # the "retry:" preamble is not an event
                    page.events.append((event.event, json.loads(event.data)))

    async def history(self, bot: ContractBot, client: str) -> list[dict[str, Any]]:
        """The active conversation's messages, as the page loads them."""
        url = bot.connector.url  # type: ignore[attr-defined]
        listing = (await self.http.get(url + "/api/conversations", headers=self.headers(client))).json()
        if listing["active_id"] is None:
            return []
        path = f"/api/conversations/{listing['active_id']}/messages?limit=200"
        return (await self.http.get(url + path, headers=self.headers(client))).json()["messages"]

    async def _close(self, page: Page) -> None:
        if page.task is not None:
            page.task.cancel()
            with contextlib.suppress(BaseException):
                await page.task
            page.task = None

    async def aclose(self) -> None:
        for page in self.pages.values():
            await self._close(page)
        await self.http.aclose()


@dataclass
class _Bubble:
    message_id: str
    reply_id: int | None
    text: str = ""
    image: bool = False
    interrupted: bool = False


def page_view(page: Page) -> list[Shown]:
    """What the tab shows: history, with replies in flight replaced by their live bubbles,
    then the bubbles that appeared since, in order."""
    live: dict[str, _Bubble] = {}
    for name, data in page.events:
        mid = data.get("message_id")
        if name in ("delta", "replace", "image"):
            bubble = live.setdefault(mid, _Bubble(mid, data.get("reply_id")))
            if name == "delta":
                bubble.text += data["text"]
            elif name == "replace":
                bubble.text = data["text"]
            else:
                bubble.text, bubble.image = data["caption"], True
        elif name == "interrupted" and mid in live:
            live[mid].interrupted = True
        elif name == "error" and mid in live:
            live[mid].text = data["error"]
        elif name == "remove":
            live.pop(mid, None)
    by_reply: dict[int, list[_Bubble]] = {}
    for bubble in live.values():
        if bubble.reply_id is not None:
            by_reply.setdefault(bubble.reply_id, []).append(bubble)
    shown: list[Shown] = []
    placed: set[str] = set()
    for m in page.history:
        if m["role"] != "assistant":
            continue
        if m["id"] in by_reply:
            for bubble in by_reply[m["id"]]:
                shown.append(Shown(bubble.text, bubble.message_id, None, bubble.image, bubble.interrupted))
                placed.add(bubble.message_id)
        else:
            shown.append(
                Shown(m["text"], f"r{m['id']}", None, bool(m["images"]), m["status"] == "interrupted")
            )
    for bubble in live.values():
        if bubble.message_id not in placed:
            shown.append(Shown(bubble.text, bubble.message_id, None, bubble.image, bubble.interrupted))
    return shown


class TestWebContract(ConnectorContract):
    connector_name = "web"
    can_send_images = True
    can_show_images = True

    @async_fixture
    async def contract_fake(self) -> AsyncIterator[Browsers]:
        browsers = Browsers()
        yield browsers
        await browsers.aclose()

    def connector_config(self, fake: Browsers) -> dict[str, Any]:
        return {"port": 0}

    def private_chat(self, fake: Browsers, n: int) -> ContractChat:
        client = f"contract-browser-{n:04d}"  # each browser is its own chat and person
        return ContractChat(ChatKey("web", client), client, (client,))

    async def send(
        self, bot: ContractBot, chat: ContractChat, text: str, *, person: int = 0, image: bytes | None = None
    ) -> str:
        browsers: Browsers = bot.fake
        await browsers.open(bot, chat.ref)
        url, headers = bot.connector.url, browsers.headers(chat.ref)  # type: ignore[attr-defined]
        attachments = []
        if image is not None:
            res = await browsers.http.post(
                url + "/api/uploads", headers=headers, files={"file": ("picture.png", image, "image/png")}
            )
            assert res.status_code == 201, res.text
            attachments.append(res.json()["uri"])
        res = await browsers.http.post(
            url + "/api/messages", headers=headers, json={"text": text, "attachments": attachments}
        )
        assert res.status_code == 202, res.text
        return f"u-{res.json()['client_message_id']}"

    async def shown(self, bot: ContractBot, chat: ContractChat) -> list[Shown]:
        return page_view(await bot.fake.open(bot, chat.ref))

    async def stop_reply(self, bot: ContractBot, chat: ContractChat, *, person: int = 0) -> None:
        browsers: Browsers = bot.fake
        res = await browsers.http.post(bot.connector.url + "/api/stop", headers=browsers.headers(chat.ref))  # type: ignore[attr-defined]
        assert res.status_code == 200, res.text
