"""The connector contract kit: a pytest suite a connector author points at their connector.

Every connector relaybot runs must show the same behaviour to people, whatever the platform:
a long streamed reply arrives whole, split within the platform's limit and exactly once, also
when the platform answers 429 for a while; an interrupted reply is shown and stored as
interrupted; messages sent quickly in one chat are stored and answered in order; a denied user
gets one polite answer and costs no provider request; images go in (and out, where the platform
shows them); and a restart in the middle loses nothing — the reply being written is kept as
interrupted, a message accepted but not answered yet is answered after the restart.

The suite drives a real :class:`~relaybot.core.runtime.app.Relaybot` (its public ``start`` /
``stop``) answering through :class:`~relaybot.testing.FakeOpenAIServer` (the ``fake_openai``
fixture of relaybot's pytest plugin), and talks to the connector only through *the
platform*: your fake server (the Telegram suite injects updates into
:class:`~relaybot.testing.FakeTelegramServer` and reads the messages it holds; the web chat's
suite is a browser on the page's JSON API and event stream).

Use it by subclassing :class:`ConnectorContract` in a test module (the class name must start
with ``Test``) and filling in a small adapter: what the platform is, how a person writes into a
chat, and what the platform shows in a chat::

    import pytest
    from relaybot import ChatKey
    from relaybot.testing import ConnectorContract, ContractChat, Shown, split_interrupted

    class TestMyConnectorContract(ConnectorContract):
        connector_name = "mychat"            # the [connectors.NAME] table and ChatKey.platform
        has_groups = True                    # group_chat() gives group chats
        reply_relations = True               # answers are replies to their question
        can_send_images = can_show_images = True

        @pytest.fixture
        async def contract_fake(self):       # the platform: your fake server
            async with MyFakeServer() as fake:
                yield fake

        def connector_config(self, fake):    # the [connectors.mychat] table, aimed at the fake
            return {"token": fake.token, "base_url": fake.url}

        def private_chat(self, fake, n):     # n = 0, 1: two different people's private chats
            return ContractChat(ChatKey("mychat", f"dm{n}"), ref=f"dm{n}", users=(f"u{n}",))

        def group_chat(self, fake, n):       # a group two people write in
            return ContractChat(ChatKey("mychat", f"g{n}"), ref=f"g{n}", users=("u7", "u8"), group=True)

        async def send(self, bot, chat, text, *, person=0, image=None):
            return bot.fake.post_message(chat.ref, chat.users[person], text, image=image)

        async def shown(self, bot, chat):    # the bot's messages as the platform shows them
            shown = []
            for m in bot.fake.bot_messages(chat.ref):
                text, interrupted = split_interrupted(m.text)
                shown.append(Shown(text, id=m.id, reply_to=m.reply_to, image=m.is_image,
                                   interrupted=interrupted))
            return shown

        def flood(self, bot, chat, count):   # the next `count` sends/edits answer 429
            bot.fake.answer_429(count, retry_after=1)
            return True

        def count_429(self, bot):
            return bot.fake.count_429

``bot`` is the running :class:`ContractBot`: ``bot.fake`` is your fake, ``bot.app`` the
Relaybot, ``bot.connector`` your connector as it runs. Adapter methods left as they are mean
"the platform cannot": no ``group_chat`` (no groups: group variants skip), ``flood`` returning
False (no rate limits: the 429 test skips), ``can_show_images = False`` (the image-out test skips
with the reason), and so on; every skip names its reason. A connector that needs a ready-made
object instead of a config table (the terminal) returns None from :meth:`connector_config` and
builds it in :meth:`make_connectors` (called at every start, so a restart gets a fresh one).
More adapter points, all optional: :meth:`~ConnectorContract.stop_reply` (default: the person
sends ``/stop``; a terminal presses Ctrl-C), :meth:`~ConnectorContract.allow_only` (the
connector's own allow-list, checked besides an access plugin), ``accepts_while_busy = False``
(the platform takes the next message only after the answer), ``wait_timeout`` (how long a
check waits for what it expects).

The bot stores into SQLite in ``tmp_path``; override the ``contract_database`` fixture (a
storage URL) to run the same checks on PostgreSQL.

``Shown.interrupted`` is how the platform shows an interrupted reply: text platforms end it with
the marker paragraph (:func:`~relaybot.mark_interrupted`; :func:`split_interrupted` takes it
off), the web page styles it. ``Shown.text`` is the text *without* that marker.

The async tests need pytest-asyncio (``asyncio_mode = "auto"``, or ``pytestmark =
pytest.mark.asyncio`` in the subclass). Every test takes a few seconds at most: the suite runs
the bot with a short checkpoint interval, and your ``connector_config`` should set the
connector's pacing small (the fake's own flood control off: the 429s the suite needs come
from :meth:`ConnectorContract.flood`). Override a test method to adapt or skip it (say why).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from relaybot.core.cli.config import parse_config
from relaybot.core.contracts.connector import BaseConnector
from relaybot.core.contracts.models import ReplyStatus, Role
from relaybot.core.runtime.app import Relaybot
from relaybot.core.storage import StoredMessage
from relaybot.core.streaming.text import text_length
from relaybot.core.testing.contract_parts import (
    DENIED_TEXT,
    SETTLE,
    WAIT,
    ContractChat,
    DenyUserPlugin,
    Shown,
    chat_messages,
    joins_to,
    long_text,
    png,
    split_interrupted,
    wait_until,
)

try:  # async fixtures must work for authors who don't use asyncio_mode=auto
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover - the testing extra installs pytest-asyncio
    async_fixture = pytest.fixture  # type: ignore[assignment]

__all__ = [
    "ConnectorContract",
    "ContractBot",
    "ContractChat",
    "Shown",
    "joins_to",
    "long_text",
    "split_interrupted",
    "wait_until",
]

class ContractBot:
    """A real :class:`~relaybot.core.runtime.app.Relaybot` with the connector under test.

    Built by the ``contract_bot`` fixture; :meth:`restart` stops it and starts a new one on the
    same database (and the same fakes).
    """

    def __init__(self, contract: ConnectorContract, fake: Any, provider: Any, raw: dict[str, Any],
                 plugins: list[tuple[str, Any]]) -> None:  # fmt: skip
        self.contract = contract
        #: the platform's fake (the ``contract_fake`` fixture)
        self.fake = fake
        #: the fake OpenAI-compatible provider
        self.provider = provider
        self.raw = raw
        self.plugins = plugins
        self.app: Relaybot | None = None
        #: how many times the bot was started
        self.runs = 0

    @property
    def connector(self) -> BaseConnector:
        """The connector under test, as it runs now."""
        assert self.app is not None, "start() first"
        return self.app.connectors[self.contract.connector_name]

    async def start(self) -> None:
        """Start a Relaybot (from the config, plus :meth:`ConnectorContract.make_connectors`)."""
        self.app = Relaybot(parse_config(self.raw, "<connector contract>"), extra_plugins=self.plugins)
        made = self.contract.make_connectors(self.fake)
        await self.app.start(connectors=made)
        self.runs += 1

    async def stop(self) -> None:
        """Stop it (live replies are saved as interrupted, waiting messages stay pending)."""
        if self.app is not None and self.app.started:
            await self.app.stop()

    async def restart(self) -> None:
        """Stop, then start a new Relaybot on the same database."""
        await self.stop()
        await self.start()

    async def stored(self, chat: ContractChat) -> list[StoredMessage]:
        """Every stored message of ``chat`` — all conversations, every person's branch of a
        group, messages still waiting — oldest first."""
        assert self.app is not None and self.app.store is not None, "start() first"
        return await chat_messages(self.app.store, chat.key)

    async def replies(self, chat: ContractChat) -> list[StoredMessage]:
        """The stored assistant messages of ``chat``, oldest first."""
        return [m for m in await self.stored(chat) if m.role == Role.ASSISTANT]


class ConnectorContract:
    """Checks every connector must pass. Subclass it and fill in the adapter (module docstring)."""

    #: the connector's name: its ``[connectors.NAME]`` table and ``ChatKey.platform``
    connector_name: str = ""
    #: the platform has group chats (:meth:`group_chat`)
    has_groups: bool = False
    #: the bot's answers are replies to the question (``Shown.reply_to``) — in groups at least
    reply_relations: bool = False
    #: a person can send the bot an image (``send(..., image=...)``)
    can_send_images: bool = False
    #: the platform shows images the bot sends (``/imagine``)
    can_show_images: bool = False
    #: a person can write while their reply is still being written (a terminal cannot: it
    #: reads the next line when the answer is done)
    accepts_while_busy: bool = True
    #: seconds a check waits for what it expects before failing (generous: machines are slow)
    wait_timeout: float = WAIT

    # ── the adapter ─────────────────────────────────────────────────────────────────────────

    @pytest.fixture
    def contract_fake(self) -> Any:
        """The platform's fake server (started; stopped after the test)."""
        return None

    def connector_config(self, fake: Any) -> dict[str, Any] | None:
        """The ``[connectors.NAME]`` table aimed at ``fake`` (None: :meth:`make_connectors`)."""
        raise NotImplementedError("connector_config(fake): the [connectors.NAME] table")

    def make_connectors(self, fake: Any) -> list[BaseConnector]:
        """Ready-made connectors to start besides the configured ones (at every start)."""
        return []

    def private_chat(self, fake: Any, n: int) -> ContractChat | None:
        """Person ``n``'s private chat with the bot (n = 0, 1); None when there is no such chat."""
        raise NotImplementedError("private_chat(fake, n)")

    def group_chat(self, fake: Any, n: int) -> ContractChat | None:
        """A group chat (two people in it) where the bot is addressed; None: no groups."""
        return None

    async def send(
        self, bot: ContractBot, chat: ContractChat, text: str, *, person: int = 0, image: bytes | None = None
    ) -> str | None:
        """``chat.users[person]`` sends ``text`` (with a PNG ``image``) to the bot through the
        platform (addressed to the bot in a group); return the platform message id, if any."""
        raise NotImplementedError("send(bot, chat, text, person=, image=)")

    async def shown(self, bot: ContractBot, chat: ContractChat) -> list[Shown]:
        """The bot's messages in ``chat`` as the platform shows them now, oldest first."""
        raise NotImplementedError("shown(bot, chat)")

    async def stop_reply(self, bot: ContractBot, chat: ContractChat, *, person: int = 0) -> None:
        """Person ``person`` stops the reply being written (default: sends ``/stop``)."""
        await self.send(bot, chat, "/stop", person=person)

    def allow_only(self, users: Sequence[str], denied_message: str) -> dict[str, Any] | None:
        """Settings for the connector's table that let only ``users`` (relaybot user ids) in and
        tell everyone else ``denied_message``; None: the connector has no allow-list."""
        return None

    def flood(self, bot: ContractBot, chat: ContractChat, count: int) -> bool:
        """Make the platform answer 429 (with a short ``retry_after``) to the next ``count``
        message-producing calls of each kind; False when the platform has no rate limits."""
        return False

    def count_429(self, bot: ContractBot) -> int:
        """How many calls the platform answered 429 so far."""
        return 0

    # ── the bot ─────────────────────────────────────────────────────────────────────────────

    @pytest.fixture
    def contract_database(self, tmp_path: Path) -> str:
        """The storage URL of the test's bot (default: SQLite in ``tmp_path``); override it to run
        the contract on PostgreSQL (a fresh database per test)."""
        return f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"

    @async_fixture
    async def contract_bot(
        self, tmp_path: Path, fake_openai: Any, contract_fake: Any, contract_database: str
    ) -> AsyncIterator[Callable[..., Awaitable[ContractBot]]]:
        """Factory: ``bot = await contract_bot(bot={...}, plugins=[...], config={...},
        connector={...})`` — ``[bot]`` settings, extra plugins, other config tables, settings
        added to the connector's table. One per test: a restart is :meth:`ContractBot.restart`."""
        bots: list[ContractBot] = []

        async def make(
            *,
            bot: dict[str, Any] | None = None,
            plugins: list[tuple[str, Any]] | None = None,
            config: dict[str, Any] | None = None,
            connector: dict[str, Any] | None = None,
        ) -> ContractBot:
            table = self.connector_config(contract_fake)
            if connector:
                assert table is not None, "connector settings need a [connectors.NAME] table"
                table = {**table, **connector}
            raw: dict[str, Any] = {
                "bot": {"default_provider": "fake", "checkpoint_interval": 0.2, **(bot or {})},
                "storage": {
                    "url": contract_database,
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
                "connectors": {} if table is None else {self.connector_name: table},
                "jobs": {"enabled": False},
                **(config or {}),
            }
            made = ContractBot(self, contract_fake, fake_openai, raw, list(plugins or []))
            bots.append(made)
            await made.start()
            return made

        yield make
        for made in reversed(bots):
            await made.stop()

    # ── helpers for the checks ──────────────────────────────────────────────────────────────

    async def wait(self, check: Callable[[], Any] | Callable[[], Awaitable[Any]], what: str) -> Any:
        """:func:`wait_until` with :attr:`wait_timeout`."""
        return await wait_until(check, what, self.wait_timeout)

    def chat_for(self, fake: Any, where: str) -> ContractChat:
        """The first private or group chat (skips the test when the platform has no groups)."""
        chat = self.private_chat(fake, 0) if where == "private" else self.group_chat(fake, 0)
        if chat is None:
            pytest.skip(f"{self.connector_name} has no {where} chats")
        return chat

    async def new_shown(self, bot: ContractBot, chat: ContractChat, before: int) -> list[Shown]:
        return (await self.shown(bot, chat))[before:]

    async def wait_reply(
        self, bot: ContractBot, chat: ContractChat, status: ReplyStatus, *, count: int = 1
    ) -> list[StoredMessage]:
        """Wait until ``chat`` has ``count`` stored replies and reply number ``count`` has ``status``."""

        async def check() -> list[StoredMessage] | None:
            replies = await bot.replies(chat)
            return replies if len(replies) >= count and replies[count - 1].status == status else None

        return await self.wait(check, f"stored reply {count} to be {status.value}")

    async def wait_streaming(self, bot: ContractBot, chat: ContractChat) -> StoredMessage:
        """Wait until a reply of ``chat`` is streaming and some of its text was checkpointed."""

        async def check() -> StoredMessage | None:
            return next(
                (m for m in await bot.replies(chat) if m.status == ReplyStatus.STREAMING and m.text), None
            )

        return await self.wait(check, "a reply to stream (a checkpoint with text)")

    def limit_of(self, bot: ContractBot) -> tuple[int, str]:
        policy = bot.connector.policy
        return policy.max_length, policy.length_unit

    async def check_long_reply(self, bot: ContractBot, chat: ContractChat, text: str, before: int,
                               asked: str | None) -> list[Shown]:  # fmt: skip
        """The reply to ``asked`` is ``text``, shown once within the limit; return its messages."""
        limit, unit = self.limit_of(bot)
        [reply] = (await self.wait_reply(bot, chat, ReplyStatus.COMPLETE))[-1:]
        assert reply.text == text, "the stored reply is not the provider's text"

        async def whole() -> list[Shown] | None:
            shown = await self.new_shown(bot, chat, before)
            return shown if joins_to([s.text for s in shown], text) else None

        try:
            shown = await self.wait(whole, "the whole reply to be shown")
        except AssertionError:
            got = [s.text[:60] + "…" for s in await self.new_shown(bot, chat, before)]
            raise AssertionError(f"the platform shows {len(got)} message(s) {got} — not the reply") from None
        await asyncio.sleep(SETTLE)
        again = await self.new_shown(bot, chat, before)
        assert again == shown, "the platform's messages changed after the reply was complete"
        assert not any(s.interrupted or s.image for s in shown)
        too_long = [text_length(s.text, unit) for s in shown if text_length(s.text, unit) > limit]
        assert not too_long, f"messages over the platform's limit of {limit} {unit}: {too_long}"
        if text_length(text, unit) > limit:
            assert len(shown) >= 2, "a reply over the limit must be split"
        if self.reply_relations and asked is not None:
            assert shown[0].reply_to == asked, "the answer does not reply to its question"
        return shown

    # ── the checks ──────────────────────────────────────────────────────────────────────────

    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_long_reply_is_split_within_the_limit_and_shown_exactly_once(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any, where: str
    ) -> None:
        bot = await contract_bot()
        chat = self.chat_for(bot.fake, where)
        limit, _ = self.limit_of(bot)
        text = long_text(min(int(limit * 2.5), 20_000))
        fake_openai.add_reply(text, chunk_size_chars=40, tokens_per_second=1000)
        before = len(await self.shown(bot, chat))
        asked = await self.send(bot, chat, "tell me a long story")
        await self.check_long_reply(bot, chat, text, before, asked)
        assert len(fake_openai.requests) == 1

    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_long_reply_under_429s_is_still_shown_exactly_once(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any, where: str
    ) -> None:
        bot = await contract_bot()
        chat = self.chat_for(bot.fake, where)
        if not self.flood(bot, chat, 1):  # the first frames meet a 429
            pytest.skip(f"{self.connector_name} has no platform rate limits to answer 429")
        limit, _ = self.limit_of(bot)
        text = long_text(min(int(limit * 1.6), 12_000))
        fake_openai.add_reply(text, chunk_size_chars=40, tokens_per_second=100)
        before = len(await self.shown(bot, chat))
        asked = await self.send(bot, chat, "tell me a long story")
        # and again near the end, where the last part's final frame goes out (a duplicate or
        # a lost part would come from a retry there)
        await self.wait(lambda: self._streamed(bot, chat, int(0.85 * len(text))), "the reply to stream on")
        self.flood(bot, chat, 1)
        await self.check_long_reply(bot, chat, text, before, asked)
        assert self.count_429(bot) >= 2, "the platform hardly answered 429: the test tested little"

    async def _streamed(self, bot: ContractBot, chat: ContractChat, chars: int) -> bool:
        """True once the reply being written has ``chars`` characters stored (or is finished)."""
        replies = await bot.replies(chat)
        return bool(replies) and (
            replies[-1].status != ReplyStatus.STREAMING or len(replies[-1].text) >= chars
        )

    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_stop_interrupts_the_reply_and_it_is_shown_and_stored_as_interrupted(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any, where: str
    ) -> None:
        bot = await contract_bot()
        chat = self.chat_for(bot.fake, where)
        text = long_text(3000)
        fake_openai.add_reply(text, chunk_size_chars=10, tokens_per_second=40)
        before = len(await self.shown(bot, chat))
        await self.send(bot, chat, "tell me a long story")
        await self.wait_streaming(bot, chat)
        await self.stop_reply(bot, chat)
        [reply] = await self.wait_reply(bot, chat, ReplyStatus.INTERRUPTED)
        assert reply.text and text.startswith(reply.text) and reply.text != text

        async def interrupted() -> list[Shown] | None:
            shown = await self.new_shown(bot, chat, before)
            return shown if shown and shown[-1].interrupted else None

        shown = await self.wait(interrupted, "the reply to be shown as interrupted")
        replies = [s for s in shown if s.text and not s.image]
        assert joins_to([s.text for s in replies], reply.text), "shown text is not the stored partial"
        assert len(fake_openai.requests) == 1

    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_a_second_message_interrupts_the_reply_with_busy_policy_interrupt(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any, where: str
    ) -> None:
        if not self.accepts_while_busy:
            pytest.skip(f"{self.connector_name} reads the next message only after the answer")
        bot = await contract_bot(bot={"busy_policy": "interrupt"})
        chat = self.chat_for(bot.fake, where)
        fake_openai.add_reply(long_text(3000), chunk_size_chars=10, tokens_per_second=40)
        before = len(await self.shown(bot, chat))
        await self.send(bot, chat, "tell me a long story")
        await self.wait_streaming(bot, chat)
        await self.send(bot, chat, "actually, just say hi")
        replies = await self.wait_reply(bot, chat, ReplyStatus.COMPLETE, count=2)
        assert replies[0].status == ReplyStatus.INTERRUPTED
        assert replies[1].text == "You said: actually, just say hi"

        async def both() -> list[Shown] | None:
            shown = await self.new_shown(bot, chat, before)
            done = shown and shown[-1].text == replies[1].text
            return shown if done and any(s.interrupted for s in shown) else None

        shown = await self.wait(both, "the interrupted reply and the answer to be shown")
        first = [s for s in shown if s is not shown[-1]]
        assert first[-1].interrupted and not shown[-1].interrupted
        assert joins_to([s.text for s in first], replies[0].text)

    async def test_in_a_group_another_persons_message_interrupts_nothing(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any
    ) -> None:
        bot = await contract_bot(bot={"busy_policy": "interrupt"})
        chat = self.chat_for(bot.fake, "group")
        text = long_text(1200)
        fake_openai.add_reply(text, chunk_size_chars=20, tokens_per_second=40)
        before = len(await self.shown(bot, chat))
        first = await self.send(bot, chat, "tell me a long story", person=0)
        await self.wait_streaming(bot, chat)
        second = await self.send(bot, chat, "and what time is it?", person=1)
        await self.wait(lambda: self._settled(bot, chat, 2), "both answers to end")
        replies = await bot.replies(chat)
        assert sorted(r.text for r in replies) == sorted([text, "You said: and what time is it?"])
        assert all(r.status == ReplyStatus.COMPLETE for r in replies), "one person stopped another's answer"

        async def both_shown() -> list[Shown] | None:
            shown = await self.new_shown(bot, chat, before)
            return (
                shown
                if any(s.text == "You said: and what time is it?" for s in shown)
                and joins_to([s.text for s in shown if s.text != "You said: and what time is it?"], text)
                else None
            )

        shown = await self.wait(both_shown, "both answers to be shown")
        if self.reply_relations:
            [short] = [s for s in shown if s.text == "You said: and what time is it?"]
            long_first = next(s for s in shown if s.text != short.text)
            assert (long_first.reply_to, short.reply_to) == (first, second), (
                "answers reply to their questions"
            )

    async def _settled(self, bot: ContractBot, chat: ContractChat, count: int) -> bool:
        """True once ``chat`` has ``count`` replies and none is still streaming."""
        replies = await bot.replies(chat)
        return len(replies) >= count and all(r.status != ReplyStatus.STREAMING for r in replies)

    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_messages_sent_quickly_are_stored_and_answered_in_order(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any, where: str
    ) -> None:
        bot = await contract_bot(bot={"busy_policy": "queue"})
        chat = self.chat_for(bot.fake, where)
        fake_openai.default_tokens_per_second = 200
        asked = [f"message number {i}" for i in range(5)]
        before = len(await self.shown(bot, chat))
        ids = [await self.send(bot, chat, text) for text in asked]
        expected = [f"You said: {text}" for text in asked]

        async def answered() -> list[Shown] | None:
            shown = await self.new_shown(bot, chat, before)
            return shown if len(shown) >= len(expected) and all(s.text for s in shown) else None

        shown = await self.wait(answered, "every message to be answered")
        await asyncio.sleep(SETTLE)
        shown = await self.new_shown(bot, chat, before)
        assert [s.text for s in shown] == expected, "answers shown out of order (or not once each)"
        if self.reply_relations:
            assert [s.reply_to for s in shown] == ids
        stored = await bot.stored(chat)
        users = [m.text for m in stored if m.role == Role.USER]
        assert users == asked, "messages stored out of order"
        for question, answer in zip(asked, expected, strict=True):
            q = next(m for m in stored if m.role == Role.USER and m.text == question)
            a = next(m for m in stored if m.role == Role.ASSISTANT and m.text == answer)
            assert a.parent_id == q.id and a.status == ReplyStatus.COMPLETE
        assert [fake_openai.last_user_text(r.json) for r in fake_openai.requests] == asked

    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_quick_messages_with_busy_policy_interrupt_are_all_answered_by_the_last(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any, where: str
    ) -> None:
        if not self.accepts_while_busy:
            pytest.skip(f"{self.connector_name} reads the next message only after the answer")
        bot = await contract_bot(bot={"busy_policy": "interrupt"})
        chat = self.chat_for(bot.fake, where)
        fake_openai.default_tokens_per_second = 20  # an answer takes a while: the next one stops it
        asked = [f"part {i} of my question" for i in range(4)]
        before = len(await self.shown(bot, chat))
        for text in asked:
            await self.send(bot, chat, text)

        async def answered() -> StoredMessage | None:  # a complete answer after the last part
            stored = await bot.stored(chat)
            last = [m.id for m in stored if m.role == Role.USER and m.text == asked[-1]]
            if not last:
                return None
            return next(
                (m for m in stored
                 if m.role == Role.ASSISTANT and m.id > last[0] and m.status == ReplyStatus.COMPLETE),
                None,
            )  # fmt: skip

        answer = await self.wait(answered, "the answer after the last message")
        await self.wait(lambda: self._settled(bot, chat, 1), "every reply to end")
        await self.wait(lambda: self._has_text(bot, chat, answer.text), "the last answer to be shown")
        await asyncio.sleep(SETTLE)
        stored = await bot.stored(chat)
        assert [m.text for m in stored if m.role == Role.USER] == asked, "messages stored out of order"
        replies = [m for m in stored if m.role == Role.ASSISTANT]
        assert all(r.status in (ReplyStatus.COMPLETE, ReplyStatus.INTERRUPTED) for r in replies)
        # the answer that ends it sees every message, in order (the core may join the turns
        # of stopped replies into one)
        context = "\n".join(
            fake_openai.last_user_text({"messages": [m]})
            for m in fake_openai.requests[-1].json["messages"]
            if m["role"] == "user"
        )
        at = [context.find(text) for text in asked]
        assert -1 not in at and at == sorted(at), (
            f"the last request does not hold every message in order: {context!r}"
        )
        shown = await self.new_shown(bot, chat, before)
        assert [s.text for s in shown].count(answer.text) == 1 and shown[-1].text == answer.text

    @pytest.mark.parametrize("how", ["plugin", "allow_list"])
    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_a_denied_user_gets_one_polite_answer_and_no_provider_request(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any, contract_fake: Any,
        where: str, how: str,
    ) -> None:  # fmt: skip
        chat = self.chat_for(contract_fake, where)
        # private: person 0 is denied, another person's private chat is answered; group: of
        # the two people in it, the second is denied and the first answered
        person = 1 if chat.group else 0
        other = chat if chat.group else self.private_chat(contract_fake, 1)
        if how == "plugin":  # an access plugin (check_access) denies them
            deny = DenyUserPlugin(chat.key, chat.users[person])
            bot = await contract_bot(plugins=[("contract-deny", deny)])
        else:  # the connector's own allow-list leaves them out
            allowed_users = [] if other is None else [other.users[0]]
            settings = self.allow_only(allowed_users, DENIED_TEXT)
            if settings is None:
                pytest.skip(f"{self.connector_name} has no allow-list in its settings")
            bot = await contract_bot(connector=settings)
        await self.send(bot, chat, "let me in", person=person)

        async def told() -> list[Shown] | None:
            shown = await self.shown(bot, chat)
            return shown or None

        await self.wait(told, "the polite answer")
        await self.send(bot, chat, "let me in, please", person=person)
        allowed = other
        if allowed is not None:  # the bot still answers others, and by then saw the second try
            await self.send(bot, allowed, "hello", person=0)
            await self.wait(
                lambda: self._has_text(bot, allowed, "You said: hello"), "the allowed one's answer"
            )
        await asyncio.sleep(SETTLE)
        shown = [s.text for s in await self.shown(bot, chat)]
        expected = [DENIED_TEXT, "You said: hello"] if chat.group else [DENIED_TEXT]
        assert shown == expected, "denied: told once, never answered"
        asked = [fake_openai.last_user_text(r.json) for r in fake_openai.requests]
        assert asked == ([] if allowed is None else ["hello"])

    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_an_image_reaches_the_provider_as_an_image_part(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any, where: str
    ) -> None:
        if not self.can_send_images:
            pytest.skip(f"people cannot send images on {self.connector_name}")
        bot = await contract_bot()
        chat = self.chat_for(bot.fake, where)
        await self.send(bot, chat, "what colour is this?", image=png())
        await self.wait(
            lambda: self._has_text(bot, chat, "You said: what colour is this?"), "the answer to the image"
        )
        content = fake_openai.requests[-1].json["messages"][-1]["content"]
        parts = [p for p in content if isinstance(p, dict) and p.get("type") == "image_url"]
        assert len(parts) == 1 and parts[0]["image_url"]["url"].startswith("data:image/")
        [user] = [m for m in await bot.stored(chat) if m.role == Role.USER]
        assert any(type(p).__name__ == "ImagePart" for p in user.parts)

    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_imagine_shows_the_picture_and_nothing_else(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any, where: str
    ) -> None:
        if not self.can_show_images:
            pytest.skip(f"{self.connector_name} cannot show images")
        bot = await contract_bot(config={"plugins": {"imagine": {"provider": "fake"}}})
        chat = self.chat_for(bot.fake, where)
        fake_openai.add_image(delay=0.3)
        before = len(await self.shown(bot, chat))
        await self.send(bot, chat, "/imagine a red square")

        async def pictured() -> list[Shown] | None:
            shown = await self.new_shown(bot, chat, before)
            return shown if any(s.image for s in shown) else None

        await self.wait(pictured, "the picture")
        await asyncio.sleep(SETTLE)
        shown = await self.new_shown(bot, chat, before)
        assert [(s.image, s.text) for s in shown] == [(True, "a red square")], (
            "the picture, captioned, and no progress notice left behind"
        )

    @pytest.mark.parametrize("where", ["private", "group"])
    async def test_a_restart_mid_reply_keeps_it_interrupted_and_answers_what_waited(
        self, contract_bot: Callable[..., Awaitable[ContractBot]], fake_openai: Any, where: str
    ) -> None:
        bot = await contract_bot(bot={"busy_policy": "queue"})
        chat = self.chat_for(bot.fake, where)
        text = long_text(3000)
        fake_openai.add_reply(text, chunk_size_chars=10, tokens_per_second=40)
        before = len(await self.shown(bot, chat))
        await self.send(bot, chat, "tell me a long story")
        await self.wait_streaming(bot, chat)
        waited: str | None = None
        if self.accepts_while_busy:
            waited = await self.send(bot, chat, "and then what?")

            async def waiting() -> bool:  # stored on receipt, waiting behind the first reply
                stored = await bot.stored(chat)
                return any(m.text == "and then what?" and m.status == ReplyStatus.PENDING for m in stored)

            await self.wait(waiting, "the second message to be stored (accepted) and waiting")
        await bot.stop()
        await bot.start()
        [first, *_] = await bot.replies(chat)
        assert first.status == ReplyStatus.INTERRUPTED and first.text and text.startswith(first.text)

        async def shown_interrupted() -> list[Shown] | None:
            shown = await self.new_shown(bot, chat, before)
            return shown if any(s.interrupted for s in shown) else None

        shown = await self.wait(shown_interrupted, "the reply cut by the stop to be shown as interrupted")
        cut = shown[: next(i for i, s in enumerate(shown) if s.interrupted) + 1]
        assert joins_to([s.text for s in cut], first.text), "shown text is not the stored partial"
        if not self.accepts_while_busy:
            waited = await self.send(bot, chat, "and then what?")
        replies = await self.wait_reply(bot, chat, ReplyStatus.COMPLETE, count=2)
        assert replies[1].text == "You said: and then what?"
        assert len(replies) == 2, "the interrupted reply was answered again"
        await self.wait(lambda: self._has_text(bot, chat, replies[1].text), "the answer after the restart")
        await asyncio.sleep(SETTLE)
        shown = await self.new_shown(bot, chat, before)
        [answer] = [s for s in shown if s.text == replies[1].text]  # once
        if self.reply_relations:
            assert answer.reply_to == waited, "the answer after the restart does not reply to its question"
        asked = [fake_openai.last_user_text(r.json) for r in fake_openai.requests]
        assert asked == ["tell me a long story", "and then what?"]

    async def _has_text(self, bot: ContractBot, chat: ContractChat, text: str) -> bool:
        return any(s.text == text for s in await self.shown(bot, chat))
