"""Loading plugins and collecting what they register.

Built-in plugins and third-party ones load the same way: every module named in the entry-point
group ``relaybot`` is registered with pluggy under its entry-point name. Loading is
fault-isolated: a plugin that fails to import (or whose ``register_*`` hook raises) is logged and
skipped, unless ``RELAYBOT_STRICT_PLUGINS=1`` (then start-up fails). Misspelled hook names and
hook wrappers are refused by :meth:`PluginHost.check`; a provider type, connector type, command,
settings table or job registered twice is a start-up error naming both plugins (never silently
renamed). Per-message hooks run one plugin at a time (:meth:`PluginHost.notify`,
:meth:`~PluginHost.transform`, :meth:`~PluginHost.first_result`): one that raises is logged and
skipped for that message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from relaybot.core.contracts import hookspecs
from relaybot.core.contracts.commands import Command, CommandRegistry
from relaybot.core.contracts.connector import ConnectorType
from relaybot.core.contracts.errors import PluginError
from relaybot.core.contracts.jobs import Job
from relaybot.core.contracts.plugin_settings import PluginSettings
from relaybot.core.contracts.provider import ProviderType
from relaybot.core.contracts.spending import BaseSpendGuard

log = logging.getLogger("relaybot.plugins")

ENTRY_POINT_GROUP = "relaybot"


def strict_plugins() -> bool:
    """True when ``RELAYBOT_STRICT_PLUGINS`` asks plugin failures to be fatal."""
    return os.environ.get("RELAYBOT_STRICT_PLUGINS", "").lower() in {"1", "true", "yes"}


@dataclass
class Registrations:
    """Everything the plugins registered, each entry with the plugin that offered it."""

    providers: dict[str, tuple[ProviderType, str]] = field(default_factory=dict)
    connectors: dict[str, tuple[ConnectorType, str]] = field(default_factory=dict)
    commands: CommandRegistry = field(default_factory=CommandRegistry)
    jobs: dict[str, tuple[Job, str]] = field(default_factory=dict)
    #: declared ``[plugins.NAME]`` tables
    settings: dict[str, tuple[PluginSettings[Any], str]] = field(default_factory=dict)

    def declared_settings(self) -> dict[str, PluginSettings[Any]]:
        """The declared ``[plugins.NAME]`` tables by name."""
        return {name: decl for name, (decl, _) in self.settings.items()}
    #: the spend guard and its plugin, when one registered (``register_spend_guard``)
    spend_guard: tuple[BaseSpendGuard, str] | None = None

    def by_plugin(self, plugin: str) -> list[str]:
        """Human-readable list of what ``plugin`` registered (for ``relaybot plugins``)."""
        out = [f"provider type {k!r}" for k, (_, p) in self.providers.items() if p == plugin]
        out += [f"connector type {k!r}" for k, (_, p) in self.connectors.items() if p == plugin]
        out += [f"command /{c.name}" for c in self.commands if self.commands.owner(c.name) == plugin]
        out += [f"job {k!r}" for k, (_, p) in self.jobs.items() if p == plugin]
        out += [f"settings [plugins.{k}]" for k, (_, p) in self.settings.items() if p == plugin]
        if self.spend_guard is not None and self.spend_guard[1] == plugin:
            out.append(f"spend guard {type(self.spend_guard[0]).__name__}")
        return out


class PluginHost:
    """The pluggy manager plus relaybot's loading rules.

    ``disabled`` names entry points not to load (``plugins.disabled`` in config).
    ``failed`` maps plugin names that could not load to the reason.
    """

    def __init__(self, *, disabled: Iterable[str] = (), strict: bool | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.disabled = set(disabled)
        self.strict = strict_plugins() if strict is None else strict
        self.failed: dict[str, str] = {}
        self.registrations = Registrations()

    @property
    def hook(self) -> Any:
        """pluggy's hook relay (``host.hook.after_reply(reply=...)``); the core calls hooks through
        :meth:`notify`, :meth:`transform` and :meth:`first_result` instead, one plugin at a time."""
        return self.pm.hook

    def load_entrypoints(self) -> None:
        """Import and register every plugin of the ``relaybot`` entry-point group."""
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in self.disabled or self.pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                self._fail(ep.name, f"failed to import {ep.value}: {type(exc).__name__}: {exc}", exc)
                continue
            self.register(plugin, ep.name)

    def register(self, plugin: object, name: str) -> None:
        """Register a plugin object or module under ``name`` (tests and embedders use this)."""
        if name in self.disabled:
            return
        if self.pm.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r}; rename one of the entry points")
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy validation errors (bad hook signature …)
            self._fail(name, f"failed to register: {exc}", exc)

    def check(self) -> None:
        """Fail on hook implementations that match no hook (usually a misspelling) and on hook
        wrappers (``hookwrapper=True`` / ``wrapper=True``).

        The core calls every plugin's implementation on its own, isolated from the others (see
        :meth:`notify`, :meth:`transform`, :meth:`first_result`), so a wrapper around the other
        plugins would never run: refusing it says so instead of silently dropping it.
        """
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or repr(exc.plugin)
            raise PluginError(f"plugin {name!r}: {exc} (a misspelled hook name?)") from None
        for plugin in self.pm.get_plugins():
            for caller in self.pm.get_hookcallers(plugin) or []:
                for impl in caller.get_hookimpls():
                    if impl.plugin is not plugin or not (impl.hookwrapper or impl.wrapper):
                        continue
                    raise PluginError(
                        f"plugin {impl.plugin_name!r}: {caller.name} is a hook wrapper "
                        "(hookwrapper=True / wrapper=True), which relaybot does not support: every "
                        "plugin's hook runs on its own, isolated from the others; implement it as "
                        "a plain @hookimpl"
                    )

    def collect(self) -> Registrations:
        """Call every ``register_*`` hook, plugin by plugin, and return what was registered.

        Duplicate names raise :class:`PluginError` naming both plugins.
        """
        regs = self.registrations = Registrations()

        def unique(table: dict[str, tuple[Any, str]], kind: str, key: str, obj: Any, plugin: str) -> None:
            if key in table:
                raise PluginError(
                    f"{kind} {key!r} is registered by both plugin {table[key][1]!r} and {plugin!r}; "
                    f"disable one with plugins.disabled"
                )
            table[key] = (obj, plugin)

        def adder(plugin: str, hook: str) -> Callable[[Any], None]:
            def add(obj: Any) -> None:
                if hook == "register_providers":
                    _expect(obj, ProviderType, plugin)
                    unique(regs.providers, "provider type", obj.type, obj, plugin)
                elif hook == "register_connectors":
                    _expect(obj, ConnectorType, plugin)
                    unique(regs.connectors, "connector type", obj.type, obj, plugin)
                elif hook == "register_commands":
                    _expect(obj, Command, plugin)
                    regs.commands.register(obj, plugin=plugin)
                elif hook == "register_settings":
                    _expect(obj, PluginSettings, plugin)
                    unique(regs.settings, "settings table [plugins.NAME] named", obj.name, obj, plugin)
                elif hook == "register_spend_guard":
                    _expect(obj, BaseSpendGuard, plugin)
                    if regs.spend_guard is not None:
                        raise PluginError(
                            f"a spend guard is registered by both plugin {regs.spend_guard[1]!r} and "
                            f"{plugin!r}; disable one with plugins.disabled"
                        )
                    regs.spend_guard = (obj, plugin)
                else:
                    _expect(obj, Job, plugin)
                    unique(regs.jobs, "job", obj.name, obj, plugin)

            return add

        hooks = ("register_providers", "register_connectors", "register_commands", "register_settings",
                 "register_jobs", "register_spend_guard")  # fmt: skip
        for hook in hooks:
            for impl in self.impls(hook):
                try:
                    impl.function(register=adder(impl.plugin_name, hook))
                except PluginError:
                    raise
                except Exception as exc:
                    self._fail(impl.plugin_name, f"{hook} raised {type(exc).__name__}: {exc}", exc)
        return regs

    def impls(self, hook: str) -> list[Any]:
        """Implementations of ``hook`` in call order (pluggy's order: last registered first).

        Hook wrappers are refused by :meth:`check`; one registered later (after ``check``) is
        skipped here, with an error logged, never silently.
        """
        caller = getattr(self.pm.hook, hook)
        impls = []
        for impl in reversed(caller.get_hookimpls()):
            if impl.plugin_name in self.failed:
                continue
            if impl.hookwrapper or impl.wrapper:
                log.error("plugin %r: %s is a hook wrapper, not run by relaybot", impl.plugin_name, hook)
                continue
            impls.append(impl)
        return impls

    def first_result(self, hook: str, **kwargs: Any) -> Any:
        """Call a ``firstresult`` hook, each plugin isolated: the first non-None answer wins.

        A plugin that raises is logged and skipped, and the next one decides (errors of type
        :class:`~relaybot.core.contracts.errors.RelaybotError` are deliberate and propagate, as in
        :meth:`transform`). Returns None when no plugin has an opinion.
        """
        from relaybot.core.contracts.errors import RelaybotError

        for impl in self.impls(hook):
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
            except RelaybotError:
                raise
            except Exception:
                log.exception("plugin %r failed in %s; skipped for this message", impl.plugin_name, hook)
                continue
            if result is not None:
                return result
        return None

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call a notification hook, each plugin isolated: one that raises is logged, the rest run."""
        for impl in self.impls(hook):
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception:
                log.exception("plugin %r failed in %s", impl.plugin_name, hook)

    def transform(self, hook: str, **kwargs: Any) -> None:
        """Call a transform hook (mutates its arguments), skipping a plugin that raises.

        Errors of type :class:`~relaybot.core.contracts.errors.RelaybotError` are deliberate (e.g. a
        CommandError to stop a request) and propagate.
        """
        from relaybot.core.contracts.errors import RelaybotError

        for impl in self.impls(hook):
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except RelaybotError:
                raise
            except Exception:
                log.exception("plugin %r failed in %s; skipped for this message", impl.plugin_name, hook)

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, sorted."""
        return sorted(name for name, _ in self.pm.list_name_plugin())

    def hooks_of(self, name: str) -> list[str]:
        """Hook names implemented by plugin ``name``."""
        plugin = self.pm.get_plugin(name)
        callers = self.pm.get_hookcallers(plugin) or []
        return sorted(c.name for c in callers)

    def _fail(self, name: str, reason: str, exc: BaseException) -> None:
        if self.strict:
            raise PluginError(f"plugin {name!r} {reason}") from exc
        log.error("plugin %r skipped: %s (set RELAYBOT_STRICT_PLUGINS=1 to make this fatal)", name, reason)
        self.failed[name] = reason
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)


def _expect(obj: Any, kind: type, plugin: str) -> None:
    if not isinstance(obj, kind):
        raise PluginError(f"plugin {plugin!r} registered {obj!r}, expected a {kind.__name__}")
