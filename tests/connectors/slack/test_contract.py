"""The connector contract suite (relaybot.testing.ConnectorContract) on Slack.

The platform is :class:`~relaybot.testing.FakeSlackServer` with Socket Mode (slack-bolt and
slack_sdk talk to it on loopback). On Slack every thread is its own relaybot chat
(``ChatKey("slack", "TEAM:CHANNEL", thread_ts)``), so:

- a *private chat* is a thread in a person's DM with the bot: the person wrote the thread's
  first message before the test (it is in the fake's history, never delivered: the bot has not
  seen it, as if written before this bot ran), and every message of the test is a reply in it;
- a *group* is a thread in a channel of its own where two people mention the bot.

What the platform shows in a chat is what a person reads there: the bot's messages in the
channel that sit in that thread or at the top level (a reply posted outside its thread would
show, as a mistake), each with its visible text (streamed markdown, ``markdown`` block or
mrkdwn text), and the ephemeral messages posted into that thread (a denied person's answer is
ephemeral: only they see it, where they wrote). Slack has no reply-to-this-message relation
inside a thread: the reply relation is the thread, so ``Shown.reply_to`` is the thread a message
is in and :meth:`TestSlackContract.send` returns the thread the person wrote in. A 429 is a
scripted ``ratelimited`` answer of the fake with ``Retry-After: 1`` (its own tiers are off).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from relaybot import ChatKey
from relaybot.core.testing.fake_slack import FakeSlackServer, RateLimits, SlackMessage
from relaybot.testing import ConnectorContract, ContractBot, ContractChat, Shown, split_interrupted

from .conftest import FAST

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover
    async_fixture = pytest.fixture  # type: ignore[assignment]

#: the Web API methods that put a reply's text on screen (what a 429 can answer while it streams)
SENDING = ("chat.startStream", "chat.appendStream", "chat.stopStream", "chat.postMessage", "chat.update")
#: the people: private chat n is PEOPLE[n]'s DM; a group's two people are the last two
PEOPLE = ("U0CONTRACT0", "U0CONTRACT1", "U0CONTRACT7", "U0CONTRACT8")


class ContractSlack(FakeSlackServer):
    """The fake Slack, remembering the threads the contract's chats are (one per chat, made on
    first use so that every call of ``private_chat``/``group_chat`` names the same chat)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chats: dict[tuple[str, int], ContractChat] = {}
        #: HTTP Events mode: the port the connector's events server listens on (Slack's Request URL)
        self.http_port = 0

    def opened_thread(self, channel: str, user: str, text: str) -> str:
        """The ts of a top-level message ``user`` wrote in ``channel`` earlier (history only)."""
        self.add_user(user)
        message = SlackMessage(channel, self.ids.ts(), user, False, text=text)
        self.store.add_message(message)
        return message.ts


def _ts_order(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


class TestSlackContract(ConnectorContract):
    connector_name = "slack"
    has_groups = True
    reply_relations = True  # the relation is the thread (see the module docstring)
    can_send_images = True  # a file share the fake serves (downloaded with the bot token)
    can_show_images = True  # files v2 uploads into the thread

    @async_fixture
    async def contract_fake(self) -> AsyncIterator[ContractSlack]:
        async with ContractSlack(limits=RateLimits.disabled()) as slack:
            yield slack

    def connector_config(self, fake: ContractSlack) -> dict[str, Any]:
        return {"bot_token": fake.bot_token, "app_token": fake.app_token, "base_url": fake.api_url, **FAST}

    def private_chat(self, fake: ContractSlack, n: int) -> ContractChat:
        if ("private", n) not in fake.chats:
            user = PEOPLE[n]
            channel = fake.dm_channel(user)
            thread = fake.opened_thread(channel, user, "hi, a question for you")
            key = ChatKey("slack", f"{fake.workspace.team_id}:{channel}", thread)
            fake.chats["private", n] = ContractChat(key, (channel, thread), (user,))
        return fake.chats["private", n]

    def group_chat(self, fake: ContractSlack, n: int) -> ContractChat:
        if ("group", n) not in fake.chats:
            channel = fake.add_channel(f"contract-group-{n}").id
            thread = fake.opened_thread(channel, PEOPLE[2], "let's ask the bot")
            key = ChatKey("slack", f"{fake.workspace.team_id}:{channel}", thread)
            fake.chats["group", n] = ContractChat(key, (channel, thread), PEOPLE[2:], group=True)
        return fake.chats["group", n]

    async def send(
        self, bot: ContractBot, chat: ContractChat, text: str, *, person: int = 0, image: bytes | None = None
    ) -> str:
        slack: ContractSlack = bot.fake
        channel, thread = chat.ref
        user = chat.users[person]
        if text.startswith("/"):  # Slack's client keeps "/" for slash commands: relaybot's is "!"
            text = "!" + text[1:]
        if image is not None:
            slack.share_file(channel, user, image, text=text, thread_ts=thread, mention_bot=chat.group)
        elif chat.group:
            slack.mention(channel, user, text, thread_ts=thread)
        else:
            slack.dm(user, text, thread_ts=thread)
        return str(thread)

    async def shown(self, bot: ContractBot, chat: ContractChat) -> list[Shown]:
        slack: ContractSlack = bot.fake
        channel, thread = chat.ref
        seen: list[tuple[str, Shown]] = []
        for m in slack.messages(channel):
            if m.thread_ts not in (None, thread):
                continue  # another thread: another chat
            text, interrupted = split_interrupted(m.visible)
            seen.append((m.ts, Shown(text, m.ts, m.thread_ts, bool(m.files), interrupted)))
        for e in slack.ephemeral_messages:
            if e["channel"] == channel and (e["thread_ts"] or None) in (None, thread):
                text = e["text"] or e["markdown_text"] or ""
                seen.append((e["ts"], Shown(text, e["ts"], e["thread_ts"] or None)))
        return [s for _ts, s in sorted(seen, key=lambda item: _ts_order(item[0]))]

    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_long_reply_under_429s_is_still_shown_exactly_once(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any,
        contract_fake: ContractSlack, where: str,
    ) -> None:  # fmt: skip
        """The contract's check, and Slack's rule besides: no call inside an announced
        Retry-After window (Slack may disable an app that keeps calling through its 429s)."""
        await super().test_long_reply_under_429s_is_still_shown_exactly_once(contract_bot, fake_openai, where)
        assert contract_fake.calls_inside_retry_after == 0, "called again before Retry-After had passed"

    def allow_only(self, users: Sequence[str], denied_message: str) -> dict[str, Any]:
        return {"allowed_users": list(users), "denied_message": denied_message}

    def flood(self, bot: ContractBot, chat: ContractChat, count: int) -> bool:
        for method in SENDING:
            for _ in range(count):
                bot.fake.fail_next(method, "ratelimited", retry_after=1)
        return True

    def count_429(self, bot: ContractBot) -> int:
        return int(bot.fake.count_429)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestSlackHttpEventsContract(TestSlackContract):
    """The contract's intake checks with events POSTed (signed) to the connector's own server
    instead of Socket Mode (order, interruptions, denial, images in, restart); the sending side
    is the same Web API in both modes and runs once, above.

    Slack's Request URL is fixed in the app's settings, so the port is chosen before the bot
    starts and kept across the restart (the fake posts to it, as Slack would)."""

    SENDING_SIDE = "the sending side does not depend on the intake mode: checked with Socket Mode"

    async def test_long_reply_is_split_within_the_limit_and_shown_exactly_once(self) -> None:  # type: ignore[override]
        pytest.skip(self.SENDING_SIDE)

    async def test_long_reply_under_429s_is_still_shown_exactly_once(self) -> None:  # type: ignore[override]
        pytest.skip(self.SENDING_SIDE)

    async def test_imagine_shows_the_picture_and_nothing_else(self) -> None:  # type: ignore[override]
        pytest.skip(self.SENDING_SIDE)

    @async_fixture
    async def contract_fake(self) -> AsyncIterator[ContractSlack]:
        async with ContractSlack(limits=RateLimits.disabled()) as slack:
            slack.http_port = _free_port()
            slack.use_http_events(f"http://127.0.0.1:{slack.http_port}/slack/events")
            yield slack

    def connector_config(self, fake: ContractSlack) -> dict[str, Any]:
        return {
            "bot_token": fake.bot_token,
            "signing_secret": fake.signing_secret,
            "base_url": fake.api_url,
            "http_port": fake.http_port,
            **FAST,
        }
