"""The relaybot testing kit: fake servers, a recording connector, a bot harness, contract suites.

Plugin authors use these too; the pytest fixtures (``fake_openai``, ``recording_connector``,
``make_bot``) are registered automatically when relaybot is installed. A provider author
subclasses :class:`ProviderContract` (or :class:`HTTPProviderContract`, with a fake server of
their API) in a test module to run relaybot's provider contract against their provider (see
:mod:`relaybot.core.testing.provider_contract`). :class:`FakeTelegramServer` is a Bot API server
with Telegram's limits, for connectors and bots built on python-telegram-bot or any Bot API
client. :class:`RecordingHost` runs a connector with no bot behind it (it records what the
connector hands in), for tests of a connector's platform side.
"""

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
    "require_service",
]
