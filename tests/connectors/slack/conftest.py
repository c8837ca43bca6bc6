"""Fixtures: a real relaybot with the Slack connector (slack-bolt) against the fake Slack.

``make_slack_bot(slack, **settings)`` starts :class:`~relaybot.core.runtime.app.Relaybot` from a config
whose provider is the fake OpenAI server and whose ``[connectors.slack]`` points at
:class:`~relaybot.testing.FakeSlackServer` (``base_url``; Socket Mode follows the URL the fake
hands out, HTTP Events mode is served by the connector and the fake posts to it), so the
plugin/config path runs for real. Pacing is fast by default; the fake's rate limits are on
only where a test builds its server with them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from relaybot.core.cli.config import parse_config
from relaybot.core.runtime.app import Relaybot
from relaybot.core.testing.fake_slack import FakeSlackServer, RateLimits

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover
    async_fixture = pytest.fixture

ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"

#: fast pacing for functional tests
FAST: dict[str, Any] = {"private_interval": 0.02, "channel_interval": 0.02, "ping_interval": 1.0}


async def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy (generous timeout, no timing asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_thread_text(slack: FakeSlackServer, channel: str, thread_ts: str, expected: str,
                           timeout: float = 15.0) -> None:  # fmt: skip
    """Wait until the bot's replies in a thread read exactly ``expected`` and no stream is open."""

    def done() -> bool:
        replies = slack.replies(channel, thread_ts)
        settled = all(m.stream is None or m.stream.state != "streaming" for m in replies)
        return settled and slack.thread_text(channel, thread_ts) == expected

    try:
        await wait_until(done, timeout, f"{expected[:40]!r} in thread {thread_ts}")
    except AssertionError:
        raise AssertionError(
            f"thread {thread_ts} reads {slack.thread_text(channel, thread_ts)!r}, wanted {expected!r}"
        ) from None


async def settle(seconds: float = 0.5) -> None:
    """Give the bot time to do something it must not do (a second answer)."""
    await asyncio.sleep(seconds)


@async_fixture
async def slack() -> AsyncIterator[FakeSlackServer]:
    """A fake Slack with rate limits off (tests about limits build their own)."""
    async with FakeSlackServer(limits=RateLimits.disabled()) as server:
        yield server


def slack_config(slack: FakeSlackServer, mode: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A ``[connectors.slack]`` table for ``slack`` in ``mode`` (``socket`` or ``http``)."""
    table: dict[str, Any] = {"bot_token": slack.bot_token, "base_url": slack.api_url, **FAST}
    if mode == "socket":
        table["app_token"] = slack.app_token
    else:
        table.update(signing_secret=slack.signing_secret, http_port=0)
    table.update(settings)
    return table


@async_fixture
async def make_slack_bot(
    tmp_path: Path, fake_openai: Any
) -> AsyncIterator[Callable[..., Awaitable[Relaybot]]]:
    """Factory: ``app = await make_slack_bot(slack, mode="socket", **settings)`` (stopped at
    teardown). ``database`` names the SQLite file, so a second bot can restart on the first's."""
    apps: list[Relaybot] = []

    async def factory(
        server: FakeSlackServer,
        *,
        mode: str = "socket",
        database: str | None = None,
        bot: dict[str, Any] | None = None,
        extra_plugins: list[tuple[str, Any]] | None = None,
        **settings: Any,
    ) -> Relaybot:
        raw = {
            "bot": {"default_provider": "fake", "checkpoint_interval": 0.2, **(bot or {})},
            "storage": {
                "url": f"sqlite+aiosqlite:///{tmp_path / (database or f'bot{len(apps)}.db')}",
                "media_dir": str(tmp_path / "media"),
            },
            "providers": {
                "fake": {
                    "type": "openai",
                    "base_url": fake_openai.base_url,
                    "api_key": "sk-test-key",
                    "model": "gpt-4o-mini",
                }
            },
            "connectors": {"slack": slack_config(server, mode, settings)},
        }
        app = Relaybot(parse_config(raw, "<test>"), extra_plugins=extra_plugins or [])
        apps.append(app)
        await app.start()
        if mode == "http":
            server.use_http_events(app.connectors["slack"].events_url)
        return app

    yield factory
    for app in reversed(apps):
        if app.started:
            await app.stop()
