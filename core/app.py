"""The running bot: config + plugins + storage + providers + connectors, started and stopped.

Typical embedding::

    app = Relaybot(load_config("relaybot.toml"))
    await app.start()          # opens storage, builds providers, starts connectors
    ...
    await app.stop()           # stops intake, saves live replies, closes everything
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from .checkpoints import CheckpointWriter
from .config import RelaybotConfig
from .connector import BaseConnector
from .conversations import ConversationManager
from .dispatcher import Dispatcher
from .errors import CapabilityError, ConfigError, PluginError
from .media import MediaStore
from .models import IncomingMessage
from .plugins import PluginHost, Registrations
from .pricing import PriceTable, price_table
from .provider import BaseProvider, ProviderType
from .ratelimit import BaseRateLimiter
from .redact import redact_url, register_secret
from .resilience import build_rate_limiter, resolve_downgrades, resolve_fallbacks, wrap_providers
from .streaming import StreamScheduler
from .tokens import TokenCounter, counter_for

log = logging.getLogger("relaybot")


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
        self.conversations = ConversationManager(config.bot.busy_policy)
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
        #: model prices: the shipped table with the config's corrections (relaybot.core.pricing)
        self.prices: PriceTable = price_table(config)
        #: the plugin that reserves and settles every provider call (budgets), if any
        self.spend_guard = self.registrations.spend_guard[0] if self.registrations.spend_guard else None
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
            known = ", ".join(sorted(self.registrations.connectors)) or "none"
            raise ConfigError(
                f"unknown connector type {type_name!r} (installed connector types: {known}); "
                f"install its extra, e.g. pip install 'relaybot[{type_name}]'",
                path=cfg.source,
                key=f"connectors.{name}",
            )
        settings = cfg.connector_config(name, entry[0].config_model)
        if not getattr(settings, "enabled", True):
            return None
        _register_secrets(settings)
        connector = entry[0].factory(name, settings)
        connector.name = name
        return connector

    def plan(self) -> dict[str, list[str]]:
        """What :meth:`start` would start, validating every section (``relaybot check``)."""
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
        }

    # ── running ─────────────────────────────────────────────────────────────────────────────

    async def start(
        self, *, connectors: Iterable[BaseConnector] | None = None, start_configured: bool = True
    ) -> None:
        """Open storage, build providers and start connectors.

        ``connectors`` adds ready-made connector objects (the terminal chat, tests);
        ``start_configured`` also starts the ``[connectors.*]`` from config.
        """
        from .storage import Store

        if self.config.default_provider not in self.config.providers:
            raise ConfigError("no provider configured", path=self.config.source, key="bot.default_provider")
        self.store = await Store.open(self.config.storage.url)
        interval = self.config.bot.checkpoint_interval
        self.checkpoints = CheckpointWriter(self.store, gap=min(0.5, interval / 4))
        recovered = await self.store.recover_interrupted()
        if recovered:
            log.warning("%d reply(ies) were cut off by a previous crash; marked interrupted", recovered)
        raw: dict[str, BaseProvider] = {}
        settings: dict[str, Any] = {}
        for name in self.config.providers:
            provider_type, settings[name] = self._provider_settings(name)
            raw[name] = provider_type.factory(name, settings[name])
        self.rate_limiter = build_rate_limiter(self.config.ratelimit, settings)
        if self.spend_guard is not None:
            await self.spend_guard.start(self)
        self.providers = dict(
            wrap_providers(
                raw, settings, limiter=self.rate_limiter, source=self.config.source, guard=self.spend_guard
            )
        )
        wanted: list[BaseConnector] = list(connectors or [])
        if start_configured:
            for name in self.config.connectors:
                built = self.build_connector(name)
                if built is not None:
                    wanted.append(built)
        for connector in wanted:
            if connector.name in self.connectors:
                raise PluginError(f"two connectors are named {connector.name!r}")
            self.connectors[connector.name] = connector
        for connector in wanted:
            connector.app = self
            await connector.start(self.dispatcher.handle)
            log.info("connector %r started", connector.name)
        self.started = True
        self.plugins.notify("relaybot_startup", app=self)

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Stop intake, save live replies as interrupted, close everything (bounded by timeout)."""
        for connector in list(self.connectors.values()):
            try:
                await asyncio.wait_for(connector.stop(), timeout)
            except Exception:
                log.exception("connector %r did not stop cleanly", connector.name)
        await self.conversations.cancel_all()
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
            self.plugins.notify("relaybot_shutdown", app=self)
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
