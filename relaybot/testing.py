"""The relaybot testing kit: fake servers, a recording connector, a bot harness, contract suites.

Plugin authors use these too; the pytest fixtures (``fake_openai``, ``recording_connector``,
``make_bot``) are registered automatically when relaybot is installed. A provider author
subclasses :class:`ProviderContract` (or :class:`HTTPProviderContract`, with a fake server of
their API) in a test module to run relaybot's provider contract against their provider (see
:mod:`relaybot.core.testing.provider_contract`). A connector author subclasses
:class:`ConnectorContract` with a small adapter (how a person writes into a chat on their fake
platform, what the platform shows in a chat, how to make it answer 429) to run the connector
contract — long streamed replies split within the limit and shown exactly once under 429s,
interrupted replies, per-chat order, a denied user, images in and out, a restart in the middle —
against a real bot (see :mod:`relaybot.core.testing.connector_contract`; Telegram's, the web
chat's and the terminal's ``test_contract.py`` are examples). :class:`FakeTelegramServer` is a
Bot API server with Telegram's limits, for connectors and bots built on python-telegram-bot or
any Bot API client. :class:`RecordingHost` runs a connector with no bot behind it (it records
what the connector hands in), for tests of a connector's platform side.
"""

from relaybot.core.testing.connector_contract import (
    ConnectorContract,
    ContractBot,
    ContractChat,
    Shown,
    joins_to,
    long_text,
    split_interrupted,
)
from relaybot.core.testing.fake_anthropic import FakeAnthropicReply, FakeAnthropicServer
from relaybot.core.testing.fake_discord import FakeDiscordServer
from relaybot.core.testing.fake_gemini import FakeGeminiReply, FakeGeminiServer
from relaybot.core.testing.fake_openai import FakeOpenAIServer, FakeReply
from relaybot.core.testing.fake_slack import FakeSlackServer
from relaybot.core.testing.fake_telegram import FakeTelegramServer, FloodLimits
from relaybot.core.testing.harness import BotHarness
from relaybot.core.testing.provider_contract import HTTPProviderContract, ProviderContract
from relaybot.core.testing.pytest_plugin import FAST_POLICY, require_service
from relaybot.core.testing.recording_connector import RecordedOp, RecordingConnector
from relaybot.core.testing.recording_host import RecordingHost
from relaybot.core.testing.server import LoopbackServer

__all__ = [
    "FAST_POLICY",
    "BotHarness",
    "ConnectorContract",
    "ContractBot",
    "ContractChat",
    "FakeAnthropicReply",
    "FakeAnthropicServer",
    "FakeDiscordServer",
    "FakeGeminiReply",
    "FakeGeminiServer",
    "FakeOpenAIServer",
    "FakeReply",
    "FakeSlackServer",
    "FakeTelegramServer",
    "FloodLimits",
    "HTTPProviderContract",
    "LoopbackServer",
    "ProviderContract",
    "RecordedOp",
    "RecordingConnector",
    "RecordingHost",
    "Shown",
    "joins_to",
    "long_text",
    "require_service",
    "split_interrupted",
]
