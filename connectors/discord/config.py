"""``[connectors.discord]``: the Discord connector's validated settings.

Only ``token`` is required::

    [connectors.discord]
    token = "${DISCORD_BOT_TOKEN}"

Everything else has a safe default: every DM answered, in servers only mentions, replies to
the bot, text commands and threads the bot takes part in; nobody restricted; 2,000-character
messages paced at about 5 requests per 5 s per channel until Discord's own headers say more.
Nothing here imports discord.py, so ``relaybot check`` validates a config on a machine without
the ``discord`` extra.

``api_base`` and ``gateway_url`` exist for tests (a fake Discord on loopback). discord.py reads
both from process-wide class attributes (``discord.http.Route.BASE``,
``DiscordWebSocket.DEFAULT_GATEWAY``), so every Discord connector of one process must use the
same endpoints; the connector refuses to start otherwise.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from relaybot import BaseConnectorConfig

#: what a user who is not allowed hears (once; the core does not repeat it for a while)
DEFAULT_DENIED_MESSAGE = "Sorry, I'm not available to you here. Ask an admin of this bot for access."
#: shown under a message that is still being written; gone on the final edit ("-#" is subtext)
DEFAULT_WRITING_MARKER = "-# ✍️ writing…"

_ID_LISTS = (
    "allowed_users",
    "allowed_roles",
    "allowed_channels",
    "allowed_guilds",
    "admin_users",
    "admin_roles",
)


class DiscordConfig(BaseConnectorConfig):
    """Settings of one Discord bot (one ``[connectors.NAME]`` table)."""

    #: the bot token (Developer Portal → Bot → Reset Token; use ``${ENV_VAR}``; never logged)
    token: SecretStr
    #: REST base, e.g. ``http://127.0.0.1:PORT/api/v10`` for a fake; empty = Discord's
    api_base: str = ""
    #: gateway websocket, e.g. ``ws://127.0.0.1:PORT/gateway``; empty = Discord's
    gateway_url: str = ""

    #: in server channels answer mentions, replies to the bot and text commands ("mention"),
    #: or every message ("all"). DMs are always answered (unless ``allow_dms`` is false).
    channel_trigger: Literal["mention", "all"] = "mention"
    #: threads: answer every message in threads the bot started or was mentioned in
    #: ("engaged"), treat them like channels ("mention"), or ignore them ("off")
    thread_trigger: Literal["engaged", "mention", "off"] = "engaged"
    #: text commands in channels (``!new``, ``!list`` …) without a mention; empty = off
    #: (``/new`` typed in a DM or after a mention works too)
    command_prefix: str = "!"
    #: register relaybot's commands as Discord slash commands at start-up
    slash_commands: bool = True

    #: user ids allowed to use the bot (empty, with empty ``allowed_roles`` = everyone)
    allowed_users: list[str] = Field(default_factory=list)
    #: role ids whose members may use the bot
    allowed_roles: list[str] = Field(default_factory=list)
    #: channel ids the bot answers in (a thread counts as its channel; empty, with empty
    #: ``allowed_guilds`` = everywhere)
    allowed_channels: list[str] = Field(default_factory=list)
    #: server (guild) ids the bot answers in
    allowed_guilds: list[str] = Field(default_factory=list)
    #: answer DMs
    allow_dms: bool = True
    #: user ids that are admins (admin-only commands; pass every allow-list)
    admin_users: list[str] = Field(default_factory=list)
    #: role ids whose members are admins
    admin_roles: list[str] = Field(default_factory=list)
    #: what a user who is not allowed hears
    denied_message: str = DEFAULT_DENIED_MESSAGE

    #: send answers as embeds (4,096 characters each) instead of plain messages (2,000)
    embeds: bool = False
    #: shown under a message still being written, removed by the final edit ("" = none)
    writing_marker: str = DEFAULT_WRITING_MARKER
    #: minimum seconds between messages/edits into one channel before Discord's headers are
    #: known (Discord: about 5 per 5 s per channel)
    channel_interval: float = Field(default=1.0, ge=0)
    #: requests per second across all channels (Discord: 50; 0 = unlimited)
    global_rate: float = Field(default=45.0, ge=0)
    #: largest image attachment downloaded, in MB (larger ones are refused with a message)
    max_download_mb: float = Field(default=20, gt=0, le=500)
    #: seconds to wait for the gateway's READY at start-up
    connect_timeout: float = Field(default=30.0, gt=0)

    @field_validator(*_ID_LISTS, mode="before")
    @classmethod
    def _ids_as_strings(cls, value: object) -> object:
        # TOML users write ids as numbers; Discord ids are compared as integers later
        if isinstance(value, list):
            return [str(v).strip() for v in value]
        return value

    @field_validator(*_ID_LISTS)
    @classmethod
    def _numeric_ids(cls, value: list[str]) -> list[str]:
        for item in value:
            if item and not item.isdigit():
                raise ValueError(
                    f"{item!r} is not a Discord id (enable Developer Mode in Discord, then "
                    "right-click the user, role, channel or server and choose Copy ID)"
                )
        return [item for item in value if item]

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL (e.g. http://127.0.0.1:8000/api/v10)")
        return value

    @field_validator("gateway_url")
    @classmethod
    def _gateway_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("ws://", "wss://")):
            raise ValueError(f"{value!r} is not a websocket URL (ws:// or wss://)")
        return value

    @field_validator("command_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value.strip() != value or len(value) > 5:
            raise ValueError("command_prefix must be 0-5 characters without spaces (e.g. '!')")
        return value

    @model_validator(mode="after")
    def _check_token(self) -> DiscordConfig:
        token = self.token.get_secret_value().strip()
        if not token:
            raise ValueError("token is empty; set it to the bot token from the Developer Portal (Bot tab)")
        if any(c.isspace() for c in token):
            raise ValueError("token contains whitespace; copy it again from the Developer Portal")
        if token.lower().startswith("bot "):
            raise ValueError("token starts with 'Bot '; give the token alone")
        return self

    @property
    def max_length(self) -> int:
        """Most UTF-16 units of one message: 4,096 in an embed, else 2,000."""
        return 4096 if self.embeds else 2000
