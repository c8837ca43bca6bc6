"""Declared plugin settings: the ``[plugins.NAME]`` tables and the models that validate them.

A plugin that reads settings declares them once, with a pydantic model (``extra="forbid"``, so
a misspelled key is an error)::

    from pydantic import BaseModel, ConfigDict
    from relaybot import PluginSettings, hookimpl

    class GreeterSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        greeting: str = "Hello"

    SETTINGS = PluginSettings("greeter", GreeterSettings, "what /hello says")

    @hookimpl
    def register_settings(register):
        register(SETTINGS)

    async def hello(ctx):
        await ctx.reply(SETTINGS.of(ctx.bot).greeting)   # typed: a GreeterSettings

The core validates every declared table when it starts — and ``relaybot check`` does the same,
so both fail on the same mistakes, naming the file, the key path and the fix: a bad value, a
misspelled key, a ``[plugins.X]`` table no installed plugin declares, a misspelled key of
``[plugins]`` itself. A table that is absent is validated as empty (so the model's defaults
must make sense on their own, or the plugin reports "not set up" when used).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from relaybot.core.cli.config import validate_section
from relaybot.core.contracts.errors import ConfigError

if TYPE_CHECKING:
    from relaybot.core.cli.config import RelaybotConfig
    from relaybot.core.contracts.host import BotServices

__all__ = ["PluginSettings", "validate_plugin_tables"]

M = TypeVar("M", bound=BaseModel)

#: keys of ``[plugins]`` that are the core's own, not plugin tables
CORE_KEYS = ("disabled",)


@dataclass(frozen=True)
class PluginSettings(Generic[M]):
    """The declaration of one ``[plugins.<name>]`` table, validated by ``model``.

    ``check(settings, config)`` (optional) runs after the model, for rules that involve the rest
    of the config (e.g. "``provider`` names a ``[providers.*]`` table of type openai"); it raises
    :class:`~relaybot.core.contracts.errors.ConfigError` naming the key. It runs only when the table is
    present, so an unconfigured optional feature does not stop the bot.
    """

    name: str
    model: type[M]
    description: str = ""
    check: Callable[[M, RelaybotConfig], None] | None = None

    def of(self, bot: BotServices) -> M:
        """The validated settings of this table in the running bot (``ctx.bot``), typed as ``model``.

        Raises :class:`~relaybot.core.contracts.errors.ConfigError` when the table was not validated
        (the plugin did not register this declaration).
        """
        settings = bot.plugin_settings.get(self.name)
        if not isinstance(settings, self.model):
            raise ConfigError(
                "was not validated: the plugin must declare it with the register_settings hook",
                key=f"plugins.{self.name}",
            )
        return settings

    def validate(self, config: RelaybotConfig) -> M:
        """Validate ``[plugins.<name>]`` of ``config`` (raises ConfigError naming file and key)."""
        table = config.plugins.settings(self.name)
        settings: M = validate_section(self.model, table, config.source, f"plugins.{self.name}")
        if self.check is not None and self.name in config.plugins.tables():
            self.check(settings, config)
        return settings


def validate_plugin_tables(
    config: RelaybotConfig,
    declared: Mapping[str, PluginSettings[Any]],
    *,
    skipped: Iterable[str] = (),
) -> dict[str, BaseModel]:
    """Validate every ``[plugins.*]`` table of ``config`` against the ``declared`` models.

    Returns the validated settings by table name (every declared table, present or not).
    ``skipped`` names plugins that are disabled or failed to load: their tables are left alone
    (they cannot be checked, and switching a plugin off must not make its settings an error).
    A table nobody declares is a :class:`ConfigError` suggesting the closest declared name.
    """
    skip = set(skipped)
    for name in config.plugins.tables():
        if name in declared or name in skip:
            continue
        known = sorted(declared)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean [plugins.{close[0]}]? " if close else ""
        raise ConfigError(
            f"is not the settings table of any installed plugin; {hint}"
            f"fix the name or remove the table (plugins with settings: {', '.join(known) or 'none'})",
            path=config.source,
            key=f"plugins.{name}",
        )
    return {name: decl.validate(config) for name, decl in declared.items()}
