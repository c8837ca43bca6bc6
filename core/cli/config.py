"""Loading and validating the TOML configuration.

One file configures everything (see ``config.example.toml``). Loading happens in two steps:

1. :func:`load_config` reads the TOML, replaces ``${ENV_VAR}`` references (secrets) and validates
   the core sections (``[bot]``, ``[storage]``, ``[plugins]``);
2. once plugins are loaded, :meth:`RelaybotConfig.provider_config` /
   :meth:`RelaybotConfig.connector_config` validate each ``[providers.NAME]`` /
   ``[connectors.NAME]`` table against the config model its plugin registered.

Every error is a :class:`~relaybot.core.contracts.errors.ConfigError` naming the file, the key path and
what to do. Values that came from ``${ENV}`` references are registered as secrets so they never
appear in logs or errors.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from relaybot.core.contracts.errors import ConfigError
from relaybot.core.contracts.redact import register_secret
from relaybot.core.modelio.pricing import PriceConfig

#: the file used when neither ``--config`` nor ``RELAYBOT_CONFIG`` names one
DEFAULT_CONFIG_NAME = "relaybot.toml"
#: provider configured when the config has no ``[providers]`` at all: the bundled offline model.
#: connector started by ``relaybot run`` when the config has no ``[connectors]`` at all
EMBEDDED_CONNECTOR = {"web": {"type": "web"}}
#: Greedy decoding with a mild repeat penalty: a 135M-parameter model rambles when sampled.
EMBEDDED_PROVIDER = {"local": {"type": "llama_cpp", "options": {"temperature": 0.0, "repeat_penalty": 1.15}}}

_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class BotConfig(BaseModel):
    """``[bot]``: behaviour shared by every chat."""

    model_config = ConfigDict(extra="forbid")

    system_prompt: str = "You are a helpful assistant."
    #: a ``[providers.NAME]`` table; empty means the first configured provider
    default_provider: str = ""
    #: what a new message does while a reply streams in the same chat
    busy_policy: Literal["interrupt", "queue"] = "interrupt"
    #: seconds between checkpoints of a streaming reply to storage
    checkpoint_interval: float = Field(default=3.0, gt=0)
    #: replies written at the same time in one shared chat (group, topic, channel, thread);
    #: more wait in arrival order, showing the typing indicator
    max_concurrent_replies: int = Field(default=4, ge=1, le=100)
    #: a reply still streaming after this many seconds is stopped (kept, marked interrupted)
    max_reply_seconds: float = Field(default=600.0, gt=0)
    #: platform user ids (``platform:user``) allowed to run admin-only commands
    admins: list[str] = Field(default_factory=list)
    #: the asyncio event loop: uvloop when installed ("auto"), or force one (see core/cli/eventloop.py)
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"


class StorageConfig(BaseModel):
    """``[storage]``: where conversations live."""

    model_config = ConfigDict(extra="forbid")

    url: str = "sqlite+aiosqlite:///relaybot.db"
    #: folder for images (content-addressed files); empty = ``relaybot-media`` beside the
    #: SQLite file, or in the working directory for other databases
    media_dir: str = ""

    def media_path(self) -> str:
        """The folder images are stored in (see ``media_dir``)."""
        if self.media_dir:
            return self.media_dir
        prefix, sep, path = self.url.partition(":///")
        if sep and prefix.startswith("sqlite") and path:
            return os.path.join(os.path.dirname(path) or ".", "relaybot-media")
        return "relaybot-media"


class RateLimitConfig(BaseModel):
    """``[ratelimit]``: where provider rpm/tpm windows are counted.

    ``local`` counts in this process; ``redis`` shares the count between every process using
    the same ``redis_url`` (extra ``redis``), for scale-out.
    """

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "redis"] = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: prefix of the Redis keys (one sorted set per provider name)
    key_prefix: str = "relaybot:ratelimit:"


class JobsConfig(BaseModel):
    """``[jobs]``: the scheduler of plugin jobs, plus one ``[jobs.NAME]`` table per job.

    A ``[jobs.NAME]`` table may set ``enabled``, ``cron`` or ``interval_seconds`` (replacing
    the plugin's schedule) and the job's own options (see :class:`relaybot.Job`).
    """

    model_config = ConfigDict(extra="allow")

    #: false: this process runs no scheduled jobs (others sharing the database still do)
    enabled: bool = True
    #: IANA time zone of cron schedules
    timezone: str = "UTC"
    #: how long a run holds its lease: another process may run the job again after this
    #: even if the first never finished (it crashed); keep it above a job's longest run
    lease_seconds: float = Field(default=3600.0, gt=0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value

    def table(self, name: str) -> dict[str, Any]:
        """The raw ``[jobs.NAME]`` table (empty if absent)."""
        value = (self.model_extra or {}).get(name, {})
        return value if isinstance(value, dict) else {}


class VideoConfig(BaseModel):
    """``[video]``: videos people send (extra ``video``: PyAV)."""

    model_config = ConfigDict(extra="forbid")

    #: frames sampled evenly across a video for models that take images but not video
    frames: int = Field(default=8, ge=1, le=32)
    #: largest video accepted, in bytes (platforms let bots download 20 MB)
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0, le=100 * 1024 * 1024)
    #: longest edge of a sampled frame, in pixels
    frame_edge: int = Field(default=768, ge=64, le=4096)
    #: seconds of CPU-bound decoding allowed per video before sampling stops with what it has
    decode_seconds: float = Field(default=20.0, gt=0)


class PluginsConfig(BaseModel):
    """``[plugins]``: which plugins are off, plus one sub-table of settings per plugin.

    The sub-tables are validated against the models plugins declare (see
    :mod:`relaybot.core.contracts.plugin_settings`); any other key here is an error.
    """

    model_config = ConfigDict(extra="allow")

    #: entry-point names of plugins not to load (built-ins included)
    disabled: list[str] = Field(default_factory=list)

    def settings(self, plugin: str) -> dict[str, Any]:
        """The raw ``[plugins.<plugin>]`` table (empty if absent)."""
        value = (self.model_extra or {}).get(plugin, {})
        return value if isinstance(value, dict) else {}

    def tables(self) -> list[str]:
        """Names of the ``[plugins.NAME]`` sub-tables present."""
        return [k for k, v in (self.model_extra or {}).items() if isinstance(v, dict)]

    def check_keys(self, source: str) -> None:
        """Every key besides ``disabled`` must be a ``[plugins.NAME]`` table (raises ConfigError)."""
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, dict):
                continue
            close = difflib.get_close_matches(key, ["disabled"], n=1, cutoff=0.6)
            fix = f"did you mean `{close[0]}`?" if close else "plugin settings go in a [plugins.NAME] table;"
            raise ConfigError(
                f"is not a key of [plugins]: {fix} (known: disabled, and one table per plugin)",
                path=source,
                key=f"plugins.{key}",
            )


class RelaybotConfig(BaseModel):
    """The whole configuration. ``source`` is the file it came from (for error messages)."""

    model_config = ConfigDict(extra="forbid")

    bot: BotConfig = Field(default_factory=BotConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    providers: dict[str, dict[str, Any]] = Field(default_factory=lambda: dict(EMBEDDED_PROVIDER))
    connectors: dict[str, dict[str, Any]] = Field(default_factory=lambda: dict(EMBEDDED_CONNECTOR))
    plugins: PluginsConfig = Field(default_factory=PluginsConfig)
    ratelimit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    #: model prices correcting or adding to the shipped table (see relaybot.core.modelio.pricing)
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    source: str = "<defaults>"

    @property
    def default_provider(self) -> str:
        """The provider used when nothing else is chosen."""
        return self.bot.default_provider or next(iter(self.providers), "")

    def provider_type(self, name: str) -> str:
        """The ``type`` of ``[providers.NAME]`` (the table name when absent)."""
        return str(self.providers[name].get("type") or name)

    def connector_type(self, name: str) -> str:
        """The ``type`` of ``[connectors.NAME]`` (the table name when absent)."""
        return str(self.connectors[name].get("type") or name)

    def provider_config(self, name: str, model: type[BaseModel]) -> Any:
        """Validate ``[providers.NAME]`` against ``model`` (raises ConfigError)."""
        data = dict(self.providers[name])
        data.setdefault("type", name)
        return validate_section(model, data, self.source, f"providers.{name}")

    def connector_config(self, name: str, model: type[BaseModel]) -> Any:
        """Validate ``[connectors.NAME]`` against ``model`` (raises ConfigError)."""
        data = dict(self.connectors[name])
        data.setdefault("type", name)
        return validate_section(model, data, self.source, f"connectors.{name}")

    def check_references(self) -> None:
        """Cross-section checks that pydantic cannot express."""
        self.plugins.check_keys(self.source)
        if not self.providers:
            raise ConfigError(
                "no provider is configured; add a [providers.NAME] table or remove [providers] "
                "to use the bundled offline model",
                path=self.source,
                key="providers",
            )
        if self.bot.default_provider and self.bot.default_provider not in self.providers:
            known = ", ".join(sorted(self.providers))
            raise ConfigError(
                f"default_provider = {self.bot.default_provider!r} names no [providers.*] table "
                f"(configured: {known}); fix the name or add the table",
                path=self.source,
                key="bot.default_provider",
            )


def validate_section(model: type[BaseModel], data: dict[str, Any], source: str, key: str) -> Any:
    """Validate one table, turning pydantic errors into a readable ConfigError."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, key), path=source) from None


def _format_errors(exc: ValidationError, prefix: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        kind = err["type"]
        if kind == "extra_forbidden":
            lines.append(f"[{loc}] is not a known key: remove it or check its spelling")
        elif kind == "missing":
            lines.append(f"[{loc}] is required: add it")
        else:
            # never echo the input value: it may be a secret
            lines.append(f"[{loc}] {err['msg']}")
    return "; ".join(lines)


def _interpolate(value: Any, source: str, key: str) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in strings, recursively."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group("name"), match.group("default")
            env = os.environ.get(name)
            if env is None or env == "":
                if default is not None:
                    return default
                raise ConfigError(
                    f"the environment variable {name} is not set; export it "
                    f"(e.g. `export {name}=...`) or remove the key",
                    path=source,
                    key=key,
                )
            register_secret(env)
            return env

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, source, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to use: ``explicit``, else ``$RELAYBOT_CONFIG``, else ``./relaybot.toml``
    if it exists, else ``None`` (built-in defaults)."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("RELAYBOT_CONFIG")
    if env:
        return Path(env)
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.exists() else None


def parse_config(data: dict[str, Any], source: str = "<memory>") -> RelaybotConfig:
    """Validate an already-parsed TOML document (after ``${ENV}`` interpolation)."""
    data = _interpolate(data, source, "")
    for section in ("providers", "connectors"):
        tables = data.get(section, {})
        if not isinstance(tables, dict) or any(not isinstance(v, dict) for v in tables.values()):
            raise ConfigError(
                f"[{section}] must contain tables like [{section}.NAME]", path=source, key=section
            )
    config = validate_section(RelaybotConfig, {**data, "source": source}, source, "")
    config.check_references()
    return config


def load_config(path: str | os.PathLike[str] | None = None) -> RelaybotConfig:
    """Read, interpolate and validate the config (see :func:`find_config` for which file).

    Raises :class:`ConfigError` for a missing file, invalid TOML or invalid values.
    """
    found = find_config(path)
    if found is None:
        return parse_config({}, "<defaults>")
    source = str(found)
    try:
        raw = found.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "file not found; create it from config.example.toml or pass --config PATH", path=source
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", path=source) from None
    try:
        data = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", path=source) from None
    return parse_config(data, source)
