"""Declared plugin settings (issue 12.5): a typed declaration, validated at start-up, read typed."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from relaybot import Command, ConfigError, PluginError, PluginSettings, hookimpl
from relaybot.core.runtime.plugins import PluginHost


class GreeterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    greeting: str = "Hello"
    times: int = Field(default=1, ge=1, le=3)


GREETER = PluginSettings("greeter", GreeterSettings, "what /hello says")


class Greeter:
    """A third-party-style plugin: declares [plugins.greeter] and reads it through the accessor."""

    @hookimpl
    def register_settings(self, register):
        register(GREETER)

    @hookimpl
    def register_commands(self, register):
        async def hello(ctx):
            settings = GREETER.of(ctx.bot)  # a GreeterSettings, validated at start-up
            await ctx.reply(" ".join([settings.greeting] * settings.times))

        register(Command("hello", "say hello", hello))


async def test_a_plugin_reads_its_validated_settings(make_bot) -> None:
    bot = await make_bot(
        plugins=[("greeter", Greeter())], config={"plugins": {"greeter": {"greeting": "Moin", "times": 2}}}
    )
    assert await bot.say("/hello") == "Moin Moin"
    assert isinstance(GREETER.of(bot.app), GreeterSettings)


async def test_an_absent_table_gives_the_defaults(make_bot) -> None:
    bot = await make_bot(plugins=[("greeter", Greeter())])
    assert await bot.say("/hello") == "Hello"


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"greeter": {"greting": "Hi"}}, "[plugins.greeter.greting] is not a known key"),
        ({"greeter": {"times": 9}}, "[plugins.greeter.times] Input should be less than or equal to 3"),
        ({"greeterr": {"greeting": "Hi"}}, "[plugins.greeterr] is not the settings table"),
    ],
)
async def test_bad_settings_stop_the_start_naming_file_and_key(make_bot, table, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        await make_bot(plugins=[("greeter", Greeter())], config={"plugins": table})
    assert fragment in str(err.value)
    assert ": [plugins." in str(err.value)  # "<file>: [plugins.…] …"


async def test_a_disabled_plugins_table_is_left_alone(make_bot) -> None:
    """Switching a plugin off must not turn its settings into an error."""
    bot = await make_bot(config={"plugins": {"disabled": ["usage"], "usage": {"timezon": "typo"}}})
    assert "usage" not in bot.app.plugin_settings


def test_a_table_declared_twice_names_both_plugins() -> None:
    class SettingsOnly:
        @hookimpl
        def register_settings(self, register):
            register(GREETER)

    host = PluginHost()
    host.register(SettingsOnly(), "one")
    host.register(SettingsOnly(), "two")
    with pytest.raises(PluginError) as err:
        host.collect()
    assert "'greeter'" in str(err.value) and "'one'" in str(err.value) and "'two'" in str(err.value)
