"""The running bot: config + plugins + storage + providers + connectors, started and stopped.

Typical embedding::

    app = Relaybot(load_config("relaybot.toml"))
    await app.start()          # opens storage, builds providers, starts connectors
    ...
    await app.stop()           # stops intake, saves live replies, closes everything
"""

from __future__ import annotations

import asyncio
import difflib
import logging
from collections.abc import Iterable
from typing import Any

from relaybot.core.cli.config import RelaybotConfig
from relaybot.core.contracts.connector import BaseConnector
from relaybot.core.contracts.errors import CapabilityError, ConfigError, PluginError, StorageError
from relaybot.core.contracts.models import IncomingMessage
from relaybot.core.contracts.plugin_settings import validate_plugin_tables
from relaybot.core.contracts.provider import BaseProvider, ProviderType
from relaybot.core.contracts.redact import redact_url, register_secret
from relaybot.core.modelio.media import MediaStore
from relaybot.core.modelio.pricing import PriceTable, price_table
from relaybot.core.modelio.ratelimit import BaseRateLimiter
from relaybot.core.modelio.resilience import (
    build_rate_limiter,
    resolve_downgrades,
    resolve_fallbacks,
    wrap_providers,
)
from relaybot.core.modelio.tokens import TokenCounter, counter_for
from relaybot.core.runtime.checkpoints import CheckpointWriter
from relaybot.core.runtime.dispatcher import Dispatcher
from relaybot.core.runtime.job_runner import JobRunner, plan_jobs
from relaybot.core.runtime.plugins import PluginHost, Registrations
from relaybot.core.runtime.services import AppConnectorHost, AppServices
from relaybot.core.runtime.turns import TurnManager
from relaybot.core.streaming import StreamScheduler

log = logging.getLogger("relaybot")

#: connector types that come with an extra of relaybot (``pip install 'relaybot[NAME]'``)
_CONNECTOR_EXTRAS = ("telegram", "slack", "discord", "web")


class Relaybot:
    """One bot process.

    ``extra_plugins`` are registered after the entry-point plugins (tests and embedders use
    them); ``connectors`` limits which configured connectors start (``None``: all enabled
    ones); ``load_entrypoints=False`` loads only ``extra_plugins``.
    """

    def __init__(
        self,
        config: RelaybotConfig,
        *,
        extra_plugins: Iterable[tuple[str, object]] = (),
        load_entrypoints: bool = True,
        plugins: PluginHost | None = None,
    ) -> None:
        self.config = config
        self.plugins = plugins or PluginHost(disabled=config.plugins.disabled)
        if plugins is None:
            if load_entrypoints:
                self.plugins.load_entrypoints()
            for name, plugin in extra_plugins:
                self.plugins.register(plugin, name)
            self.plugins.check()
        self.registrations: Registrations = self.plugins.collect()
        #: who is answered when (busy policy, concurrent replies in shared chats)
        self.turns = TurnManager(config.bot.busy_policy, max_concurrent=config.bot.max_concurrent_replies)
        self.dispatcher = Dispatcher(self)
        #: running providers by config name, each a ResilientProvider (retries, fallbacks,
        #: rate limits) around the plugin's provider (``.primary``)
        self.providers: dict[str, BaseProvider] = {}
        #: the provider rpm/tpm limiter (``None`` when no provider sets rpm/tpm)
        self.rate_limiter: BaseRateLimiter | None = None
        self.connectors: dict[str, BaseConnector] = {}
        self._schedulers: dict[str, StreamScheduler] = {}
        self._counters: dict[str, TokenCounter] = {}
        self.store: Any = None
        #: batches the checkpoints of streaming replies (set by :meth:`start`)
        self.checkpoints: CheckpointWriter | None = None
        #: images sent and generated (``media:`` references in messages)
        self.media = MediaStore(config.storage.media_path())
        #: the scheduled jobs of this process (set by :meth:`start`; see core/runtime/job_runner.py)
        self.jobs: JobRunner | None = None
        #: validated ``[plugins.NAME]`` settings by table name (read them with
        #: ``PluginSettings.of(app)``); filled by :meth:`validate_plugin_settings`
        self.plugin_settings: dict[str, Any] = {}
        #: model prices: the shipped table with the config's corrections (relaybot.core.modelio.pricing)
        self.prices: PriceTable = price_table(config)
        #: the plugin that reserves and settles every provider call (budgets), if any
        self.spend_guard = self.registrations.spend_guard[0] if self.registrations.spend_guard else None
        #: what plugins may use of this bot (``ctx.bot``, the lifecycle hooks, the spend guard)
        self.services = AppServices(self)
        #: each running connector's host (see :mod:`relaybot.core.runtime.services`)
        self._hosts: dict[str, AppConnectorHost] = {}
        self.started = False

    # ── building ────────────────────────────────────────────────────────────────────────────

    def build_provider(self, name: str) -> BaseProvider:
        """Validate ``[providers.NAME]`` and build the provider (no network I/O).

        This is the plugin's provider itself; :meth:`start` wraps it for retries/fallbacks.
        """
        provider_type, settings = self._provider_settings(name)
        return provider_type.factory(name, settings)

    def _provider_settings(self, name: str) -> tuple[ProviderType, Any]:
        """The provider type of ``[providers.NAME]`` and its validated settings."""
        cfg = self.config
        if name not in cfg.providers:
            raise ConfigError(f"no [providers.{name}] table", path=cfg.source, key="providers")
        type_name = cfg.provider_type(name)
        entry = self.registrations.providers.get(type_name)
        if entry is None:
            known = ", ".join(sorted(self.registrations.providers)) or "none"
            raise ConfigError(
                f"unknown provider type {type_name!r} (installed provider types: {known}); "
                f"fix `type` or install the plugin that provides it",
                path=cfg.source,
                key=f"providers.{name}.type",
            )
        provider_type = entry[0]
        settings = cfg.provider_config(name, provider_type.config_model)
        _register_secrets(settings)
        return provider_type, settings

    def build_connector(self, name: str) -> BaseConnector | None:
        """Validate ``[connectors.NAME]`` and build it; ``None`` when ``enabled = false``."""
        cfg = self.config
        type_name = cfg.connector_type(name)
        entry = self.registrations.connectors.get(type_name)
        if entry is None:
            installed = sorted(self.registrations.connectors)
            close = difflib.get_close_matches(type_name, [*installed, *_CONNECTOR_EXTRAS], n=1)
            if type_name in _CONNECTOR_EXTRAS:
                fix = f"install its extra: pip install 'relaybot[{type_name}]'"
            elif close:
                fix = f"did you mean type = {close[0]!r}?"
            else:
                fix = "fix `type`, or install the plugin that provides it"
            raise ConfigError(
                f"unknown connector type {type_name!r} (installed: {', '.join(installed) or 'none'}); {fix}",
                path=cfg.source,
                key=f"connectors.{name}" + (".type" if "type" in cfg.connectors[name] else ""),
            )
        settings = cfg.connector_config(name, entry[0].config_model)
        if not getattr(settings, "enabled", True):
            return None
        _register_secrets(settings)
        connector = entry[0].factory(name, settings)
        connector.name = name
        return connector

    def validate_plugin_settings(self) -> dict[str, Any]:
        """Validate every ``[plugins.*]`` table against the declared models (raises ConfigError).

        Tables of disabled plugins, and of plugins that failed to load, are left alone.
        """
        skipped = [*self.plugins.disabled, *self.plugins.failed]
        declared = self.registrations.declared_settings()
        self.plugin_settings = validate_plugin_tables(self.config, declared, skipped=skipped)
        return self.plugin_settings

    def plan(self) -> dict[str, list[str]]:
        """What :meth:`start` would start, validating every section (``relaybot check``).

        :meth:`start` runs the same validation (before it touches the database), so whatever
        ``check`` accepts, ``run`` accepts, and the other way round.
        """
        self.validate_plugin_settings()
        providers = []
        settings: dict[str, Any] = {}
        built: dict[str, BaseProvider] = {}
        for name in self.config.providers:
            provider_type, settings[name] = self._provider_settings(name)
            p = built[name] = provider_type.factory(name, settings[name])
            star = " (default)" if name == self.config.default_provider else ""
            fallbacks = getattr(settings[name], "fallbacks", [])
            chain = f" fallbacks={','.join(fallbacks)}" if fallbacks else ""
            providers.append(f"{name}: {self.config.provider_type(name)} model={p.model!r}{chain}{star}")
        resolve_fallbacks(settings, self.config.source)
        resolve_downgrades(built, settings, self.config.source)
        if self.spend_guard is not None:
            self.spend_guard.validate(self.config)
        connectors = []
        for name in self.config.connectors:
            c = self.build_connector(name)
            connectors.append(f"{name}: {self.config.connector_type(name)}" + ("" if c else " (disabled)"))
        return {
            "storage": [redact_url(self.config.storage.url)],
            "providers": providers,
            "connectors": connectors,
            "commands": [f"/{c.name}" for c in self.registrations.commands],
            "plugins": self.plugins.plugin_names(),
            "jobs": [
                f"{name}: {p.schedule}" + ("" if p.enabled else " (disabled)")
                for name, p in plan_jobs(self.registrations.jobs, self.config).items()
            ],
        }

    # ── running ─────────────────────────────────────────────────────────────────────────────

    async def start(
        self, *, connectors: Iterable[BaseConnector] | None = None, start_configured: bool = True
    ) -> None:
        """Open storage, build providers and start connectors.

        ``connectors`` adds ready-made connector objects (the terminal chat, tests);
        ``start_configured`` also starts the ``[connectors.*]`` from config.
        """
        from relaybot.core.storage import Store
        from relaybot.core.storage.engine import configured_at

        if self.config.default_provider not in self.config.providers:
            raise ConfigError("no provider configured", path=self.config.source, key="bot.default_provider")
        # Validate everything first (the same checks as `relaybot check`): a config mistake must
        # not leave a freshly created or migrated database behind.
        self.validate_plugin_settings()
        planned_jobs = plan_jobs(self.registrations.jobs, self.config)  # [jobs] errors: before any I/O
        settings: dict[str, Any] = {}
        types: dict[str, ProviderType] = {}
        for name in self.config.providers:
            types[name], settings[name] = self._provider_settings(name)
        resolve_fallbacks(settings, self.config.source)
        wanted: list[BaseConnector] = list(connectors or [])
        if start_configured:
            for name in self.config.connectors:
                built = self.build_connector(name)
                if built is not None:
                    wanted.append(built)
        names: set[str] = set()
        for connector in wanted:
            if connector.name in names:
                raise PluginError(f"two connectors are named {connector.name!r}")
            names.add(connector.name)

        try:
            self.store = await Store.open(self.config.storage.url)
        except StorageError as exc:
            raise configured_at(exc, self.config.source) from None
        self.jobs = JobRunner.for_app(self, planned_jobs)
        await self.jobs.load()  # its database work, before anything is listening
        interval = self.config.bot.checkpoint_interval
        self.checkpoints = CheckpointWriter(self.store, gap=min(0.5, interval / 4))
        recovered = await self.store.recover_interrupted()
        if recovered:
            log.warning("%d reply(ies) were cut off by a previous crash; marked interrupted", recovered)
        raw = {name: types[name].factory(name, settings[name]) for name in self.config.providers}
        self.rate_limiter = build_rate_limiter(self.config.ratelimit, settings)
        if self.spend_guard is not None:
            await self.spend_guard.start(self.services)
        self.providers = dict(
            wrap_providers(
                raw, settings, limiter=self.rate_limiter, source=self.config.source, guard=self.spend_guard
            )
        )
        for connector in wanted:
            self.connectors[connector.name] = connector
        for connector in wanted:
            host = self._hosts[connector.name] = AppConnectorHost(self, connector.name)
            await connector.start(host)
            log.info("connector %r started", connector.name)
        self.jobs.start()
        self.started = True
        self.plugins.notify("relaybot_startup", bot=self.services)
        await self._answer_pending()

    async def _answer_pending(self) -> None:
        """Answer the messages a previous run stored but never answered (stop or crash first).

        Messages of a platform whose connector is not running now stay ``pending`` until a
        run where it is.
        """
        pending = await self.store.pending_messages()
        waiting = [p for p in pending if p.chat.platform not in self.connectors]
        if waiting:
            log.warning("%d unanswered message(s) wait for connectors that are not running: %s",
                        len(waiting), ", ".join(sorted({p.chat.platform for p in waiting})))  # fmt: skip
        resumable = [p for p in pending if p.chat.platform in self.connectors]
        if resumable:
            log.info("answering %d message(s) left unanswered by the previous run", len(resumable))
        for item in resumable:
            await self.dispatcher.resume(item)

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Stop intake, save live replies as interrupted, close everything (bounded by timeout).

        In order: scheduled jobs stop; connectors stop receiving; no waiting turn starts any
        more (those messages stay stored as ``pending`` and are answered after the next start)
        and every running reply is cancelled, its partial text saved as interrupted; the
        schedulers deliver the final frames (so open web tabs get their final event before
        their stream closes); then connectors, providers and storage close.
        """
        if self.jobs is not None:  # first: a job may still send through the connectors
            await self.jobs.stop(timeout=timeout)
        for connector in list(self.connectors.values()):
            try:
                await asyncio.wait_for(connector.stop(), timeout)
            except Exception:
                log.exception("connector %r did not stop cleanly", connector.name)
        try:
            await asyncio.wait_for(self.turns.close(), timeout)
        except TimeoutError:
            log.warning("some replies took too long to stop at shutdown")
        try:
            await asyncio.wait_for(self.dispatcher.drain(), timeout)
        except TimeoutError:
            log.warning("some messages were still being handled at shutdown")
        for scheduler in self._schedulers.values():
            await scheduler.aclose(timeout=min(timeout, 5.0))
        for connector in list(self.connectors.values()):
            try:
                await asyncio.wait_for(connector.aclose(), timeout)
            except Exception:
                log.exception("connector %r did not close cleanly", connector.name)
        for host in self._hosts.values():
            host.remove_hooks()  # hook objects live as long as their connector
        for provider in self.providers.values():
            try:
                await provider.aclose()
            except Exception:
                log.exception("provider %r did not close cleanly", provider.name)
        if self.rate_limiter is not None:
            try:
                await self.rate_limiter.aclose()
            except Exception:
                log.exception("the rate limiter did not close cleanly")
        if self.started:
            self.plugins.notify("relaybot_shutdown", bot=self.services)
        if self.checkpoints is not None:
            await self.checkpoints.aclose()
        if self.spend_guard is not None and self.store is not None:
            try:
                await self.spend_guard.aclose()
            except Exception:
                log.exception("the spend guard did not close cleanly")
        if self.store is not None:
            await self.store.close()
        self.started = False

    # ── services for the core and plugins ───────────────────────────────────────────────────

    def provider(self, name: str | None = None) -> BaseProvider:
        """The running provider ``name`` (default provider when None)."""
        name = name or self.config.default_provider
        try:
            provider = self.providers[name]
        except KeyError:
            raise CapabilityError(f"provider {name!r} is not running") from None
        if not provider.capabilities.streaming:
            raise CapabilityError(f"provider {name!r} cannot stream")
        return provider

    def token_counter(self, provider_name: str) -> TokenCounter:
        """The token counter suited to a provider's model (cached)."""
        counter = self._counters.get(provider_name)
        if counter is None:
            provider = self.providers[provider_name]
            counter = counter_for(provider.capabilities.tokenizer, provider.model)
            if callable(getattr(provider, "count_tokens", None)):
                counter = _ProviderCounter(counter, provider)
            self._counters[provider_name] = counter
        return counter

    def provider_type(self, name: str) -> str:
        """The ``type`` of the running provider ``name`` (``openai``, ``llama_cpp`` …)."""
        return self.config.provider_type(name)

    def scheduler(self, platform: str) -> StreamScheduler:
        """The streaming scheduler of connector ``platform`` (one per connector)."""
        scheduler = self._schedulers.get(platform)
        if scheduler is None:
            scheduler = self._schedulers[platform] = StreamScheduler(self.connectors[platform])
        return scheduler

    def is_admin(self, message: IncomingMessage) -> bool:
        """True if the sender is an admin (flag from the connector or ``bot.admins``)."""
        return message.user.is_admin or f"{message.chat.platform}:{message.user.id}" in self.config.bot.admins


class _ProviderCounter(TokenCounter):
    """Uses a provider's own exact tokenizer (e.g. a local model's) once the model is loaded.

    Before that it estimates: loading a model inside the event loop to count tokens would stall
    every chat for the load time.
    """

    def __init__(self, fallback: TokenCounter, provider: Any) -> None:
        self._fallback = fallback
        self._provider = provider
        self.name = f"provider:{provider.name}"

    @property
    def exact(self) -> bool:
        return bool(getattr(self._provider, "loaded", True))

    def count_text(self, text: str) -> int:
        if not getattr(self._provider, "loaded", True):
            return self._fallback.count_text(text)
        try:
            return int(self._provider.count_tokens(text))
        except Exception:  # a failing tokenizer must not fail the reply: estimate instead
            return self._fallback.count_text(text)


def _register_secrets(settings: Any) -> None:
    """Register every SecretStr field of a plugin config as a secret for log redaction."""
    from pydantic import SecretStr

    for value in getattr(settings, "__dict__", {}).values():
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())
