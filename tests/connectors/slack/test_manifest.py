"""The Slack app manifest a user imports: the scopes and events the connector relies on."""

from __future__ import annotations

import json
from importlib import resources

MANIFEST = json.loads(resources.files("relaybot.connectors.slack").joinpath("manifest.json").read_text())


def test_manifest_enables_socket_mode_the_assistant_and_the_slash_command() -> None:
    settings = MANIFEST["settings"]
    assert settings["socket_mode_enabled"] is True and settings["interactivity"]["is_enabled"] is True
    assert "assistant_view" in MANIFEST["features"]
    assert [c["command"] for c in MANIFEST["features"]["slash_commands"]] == ["/relaybot"]


def test_scopes_cover_what_the_connector_calls() -> None:
    scopes = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    needed = {
        "chat:write",  # chat.postMessage / update / startStream / appendStream / stopStream
        "assistant:write",  # assistant.threads.setStatus / setSuggestedPrompts / setTitle
        "app_mentions:read", "im:history", "channels:history", "groups:history", "mpim:history",
        "files:read", "files:write", "users:read", "commands",
    }  # fmt: skip
    assert needed <= scopes


def test_bot_events_are_the_ones_routing_handles() -> None:
    events = set(MANIFEST["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "assistant_thread_started", "message.im", "message.channels"} <= events
