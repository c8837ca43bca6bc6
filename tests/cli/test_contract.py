"""The connector contract suite (relaybot.testing.ConnectorContract) on the terminal.

The platform is a terminal in scripted mode (stdin a pipe): a person writes a line into the
pipe, and what the platform shows is what was written to stdout, one finished reply per write;
Ctrl-C (:meth:`TerminalConnector.interrupt`) stops a reply. A terminal has one person and one
chat, no rate limits, no images, and reads the next line only once the answer is done, so the
checks needing those skip with that reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import IO, Any

import pytest

from relaybot import BaseConnector, ChatKey
from relaybot.connectors.terminal import TerminalConfig, TerminalConnector
from relaybot.testing import ConnectorContract, ContractBot, ContractChat, Shown, split_interrupted

CHAT = "contract"
USER = "alice"


class Terminal:
    """The fake platform: a stdin pipe to write lines into and the writes made to stdout."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self.lines: IO[str] | None = None

    def connector(self) -> TerminalConnector:
        """A terminal connector on a new stdin pipe (the previous one's input ends)."""
        self.close()
        read, write = os.pipe()
        self.lines = open(write, "w", encoding="utf-8", buffering=1)  # closed in close()
        stdin = open(read, encoding="utf-8")  # its reader thread ends at end of input
        config = TerminalConfig(chat=CHAT, user=USER)
        return TerminalConnector("terminal", config, stdin=stdin, stdout=self, interactive=False)  # type: ignore[arg-type]

    def type_line(self, text: str) -> None:
        assert self.lines is not None, "the terminal is not started"
        self.lines.write(text + "\n")

    # what TerminalConnector writes to
    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.lines is not None:
            self.lines.close()
            self.lines = None


class TestTerminalContract(ConnectorContract):
    connector_name = "terminal"
    accepts_while_busy = False

    @pytest.fixture
    def contract_fake(self) -> Iterator[Terminal]:
        terminal = Terminal()
        yield terminal
        terminal.close()

    def connector_config(self, fake: Terminal) -> None:
        return None  # `relaybot chat` builds the terminal itself: so does make_connectors

    def make_connectors(self, fake: Terminal) -> list[BaseConnector]:
        return [fake.connector()]

    def private_chat(self, fake: Terminal, n: int) -> ContractChat | None:
        if n:
            return None  # one person at one terminal
        return ContractChat(ChatKey("terminal", CHAT), CHAT, (USER,))

    async def send(
        self, bot: ContractBot, chat: ContractChat, text: str, *, person: int = 0, image: bytes | None = None
    ) -> None:
        assert image is None and "\n" not in text
        bot.fake.type_line(text)

    async def shown(self, bot: ContractBot, chat: ContractChat) -> list[Shown]:
        shown = []
        for written in bot.fake.writes:  # scripted mode: one finished reply per write
            text, interrupted = split_interrupted(written.removesuffix("\n"))
            shown.append(Shown(text, interrupted=interrupted))
        return shown

    async def stop_reply(self, bot: ContractBot, chat: ContractChat, *, person: int = 0) -> None:
        connector: Any = bot.connector
        connector.interrupt()  # Ctrl-C while the reply is written


@pytest.mark.postgres
class TestTerminalContractOnPostgres(TestTerminalContract):
    """The same contract with the bot's storage on PostgreSQL (restart included)."""

    @pytest.fixture
    def contract_database(self, pg_url: str) -> str:
        return pg_url
