"""``[connectors.discord]`` validation: what a misconfigured table is told (no discord.py needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from relaybot.connectors.discord.config import DiscordConfig


def test_only_the_token_is_required_and_defaults_are_discords() -> None:
    config = DiscordConfig.model_validate({"token": "abc.def.ghi"})
    assert (config.api_base, config.gateway_url) == ("", "")
    assert config.max_length == 2000 and config.command_prefix == "!" and config.slash_commands
    assert DiscordConfig.model_validate({"token": "t", "embeds": True}).max_length == 4096


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"token": ""}, "token is empty"),
        ({"token": "Bot abc"}, "whitespace"),
        ({"token": "abc", "allowed_users": ["alice"]}, "is not a Discord id"),
        ({"token": "abc", "api_base": "127.0.0.1:80/api"}, "not an http(s) URL"),
        ({"token": "abc", "gateway_url": "http://127.0.0.1/gateway"}, "not a websocket URL"),
        ({"token": "abc", "command_prefix": "! "}, "command_prefix"),
        ({"token": "abc", "thread_trigger": "sometimes"}, "thread_trigger"),
        ({"token": "abc", "alowed_users": []}, "alowed_users"),
    ],
)
def test_bad_settings_say_what_is_wrong(settings: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as info:
        DiscordConfig.model_validate(settings)
    assert says in str(info.value)


def test_ids_may_be_numbers_in_toml_and_the_token_never_shows() -> None:
    config = DiscordConfig.model_validate({"token": "very-secret", "admin_roles": [123, "456"]})
    assert config.admin_roles == ["123", "456"]
    assert "very-secret" not in repr(config)
