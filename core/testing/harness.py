"""BotHarness: a real relaybot wired to fakes, for tests of the core and of plugins."""

from __future__ import annotations

import copy
from typing import Any

from relaybot.core.cli.config import parse_config
from relaybot.core.contracts.models import ChatKey, IncomingMessage, User
from relaybot.core.runtime.app import Relaybot
from relaybot.core.testing.recording_connector import RecordingConnector


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class BotHarness:
    """Runs a :class:`~relaybot.core.runtime.app.Relaybot` answering via an OpenAI-compatible fake.

    ``await harness.say("hi")`` sends a message as a user and returns once it has been fully
    answered, with the texts the connector delivered for it.
    """

    def __init__(
        self,
        *,
        base_url: str,
        connector: RecordingConnector,
        database: str,
        plugins: list[tuple[str, Any]],
        overrides: dict[str, Any],
    ) -> None:
        raw = {
            "bot": {"default_provider": "fake", "checkpoint_interval": 0.2},
            "storage": {"url": database},
            "providers": {
                "fake": {
                    "type": "openai",
                    "base_url": base_url,
                    "api_key": "sk-test-key",
                    "model": "gpt-4o-mini",
                }
            },
        }
        self.config = parse_config(_merge(raw, overrides), "<test>")
        self.connector = connector
        self.plugins = plugins
        self.app: Relaybot | None = None

    async def start(self) -> None:
        """Start the bot (entry-point plugins + ``plugins``) with the recording connector."""
        self.app = Relaybot(self.config, extra_plugins=self.plugins)
        await self.app.start(connectors=[self.connector], start_configured=False)

    async def stop(self) -> None:
        """Stop the bot (live replies are saved as interrupted)."""
        if self.app is not None and self.app.started:
            await self.app.stop()

    def chat(self, chat: str = "chat-1", thread: str | None = None) -> ChatKey:
        """The ChatKey of a chat on the recording connector."""
        return ChatKey(self.connector.name, chat, thread)

    async def send(
        self,
        text: str,
        *,
        chat: str = "chat-1",
        user: str = "user-1",
        private: bool = True,
        reply_to: str | None = None,
        message_id: str | None = None,
        wait: bool = True,
        **extra: Any,
    ) -> Any:
        """Deliver a user message; with ``wait`` return after it has been fully answered."""
        message = IncomingMessage(
            chat=self.chat(chat),
            user=User(user, user),
            text=text,
            is_private=private,
            reply_to=reply_to,
            platform_message_id=message_id,
            **extra,
        )
        assert self.app is not None, "start() first"
        task = await self.app.dispatcher.handle(message)
        if wait:
            await task
        return task

    async def say(self, text: str, *, chat: str = "chat-1", **kw: Any) -> str:
        """Send ``text`` and return the bot's answer (all messages it sent for it, joined)."""
        before = len(self.connector.messages(self.chat(chat)))
        await self.send(text, chat=chat, **kw)
        return "\n".join(self.connector.messages(self.chat(chat))[before:])
