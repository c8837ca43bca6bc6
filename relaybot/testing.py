"""The relaybot testing kit: fake servers, a recording connector and a bot harness.

Plugin authors use these too; the pytest fixtures (``fake_openai``, ``recording_connector``,
``make_bot``) are registered automatically when relaybot is installed.
"""

from relaybot.core.testing.fake_anthropic import FakeAnthropicServer
from relaybot.core.testing.fake_discord import FakeDiscordServer
from relaybot.core.testing.fake_gemini import FakeGeminiServer
from relaybot.core.testing.fake_openai import FakeOpenAIServer
from relaybot.core.testing.fake_slack import FakeSlackServer
from relaybot.core.testing.harness import BotHarness
from relaybot.core.testing.pytest_plugin import FAST_POLICY, require_service
from relaybot.core.testing.recording_connector import RecordingConnector
from relaybot.core.testing.server import LoopbackServer

__all__ = [
    "FAST_POLICY",
    "BotHarness",
    "FakeAnthropicServer",
    "FakeDiscordServer",
    "FakeGeminiServer",
    "FakeOpenAIServer",
    "FakeSlackServer",
    "LoopbackServer",
    "RecordingConnector",
    "require_service",
]
