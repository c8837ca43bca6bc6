"""``[connectors.telegram]``: the Telegram connector's validated settings.

Only ``token`` is required::

    [connectors.telegram]
    token = "${TELEGRAM_BOT_TOKEN}"

Everything else has a safe default: long polling, answers in groups only when mentioned,
replied to or addressed with a command, Telegram's published flood limits, native drafts in
private chats. Nothing here imports python-telegram-bot, so ``relaybot check`` can validate a
config on a machine without the ``telegram`` extra.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from relaybot import BaseConnectorConfig

#: what a denied user is told (once an hour at most; the dispatcher rate-limits it)
DEFAULT_DENIED_MESSAGE = "Sorry, this bot is private and you are not on its list of users."


class TelegramConfig(BaseConnectorConfig):
    """Settings of one Telegram bot (one ``[connectors.NAME]`` table)."""

    #: the bot token from @BotFather (use ``${ENV_VAR}``; it is never logged)
    token: SecretStr
    #: Bot API endpoint without the token, e.g. ``http://127.0.0.1:8081/bot`` for a local Bot API
    #: server; empty = Telegram's ``https://api.telegram.org/bot``
    base_url: str = ""
    #: file download endpoint; empty = derived from ``base_url`` (``…/bot`` → ``…/file/bot``)
    base_file_url: str = ""

    #: how updates arrive: long polling (works anywhere) or a webhook served by relaybot
    mode: Literal["polling", "webhook"] = "polling"
    #: public HTTPS URL Telegram posts updates to (webhook mode); empty = derived from
    #: ``webhook_host``/``webhook_port``/``webhook_path`` (only useful with a local Bot API server)
    webhook_url: str = ""
    #: local address the webhook server listens on
    webhook_host: str = "127.0.0.1"
    #: local port (0 = any free port); Telegram itself only calls 443, 80, 88 and 8443
    webhook_port: int = Field(default=8443, ge=0, le=65535)
    #: path of the webhook route on the local server
    webhook_path: str = "/telegram"
    #: checked against ``X-Telegram-Bot-Api-Secret-Token``; empty = a random one per start
    secret_token: SecretStr | None = None

    #: in groups answer when mentioned/replied to/commanded ("mention"), always ("all"), or only
    #: to commands ("commands"). Private chats are always answered.
    group_trigger: Literal["mention", "all", "commands"] = "mention"
    #: Telegram user ids (or @usernames) allowed to use the bot; empty with empty
    #: ``allowed_chats`` = everyone
    allowed_users: list[str] = Field(default_factory=list)
    #: chat ids (groups) whose members may all use the bot
    allowed_chats: list[str] = Field(default_factory=list)
    #: Telegram user ids (or @usernames) that may run admin-only commands
    admins: list[str] = Field(default_factory=list)
    #: what a user who is not allowed hears
    denied_message: str = DEFAULT_DENIED_MESSAGE

    #: minimum seconds between messages/edits into one private chat (Telegram: ~1/s)
    private_interval: float = Field(default=1.0, ge=0)
    #: minimum seconds between messages/edits into one group (Telegram: ~20/min)
    group_interval: float = Field(default=3.0, ge=0)
    #: requests per second across all chats (Telegram: ~30/s; 0 = unlimited)
    global_rate: float = Field(default=30.0, ge=0)
    #: stream private replies as native animated drafts (sendMessageDraft)
    use_drafts: bool = True
    #: largest photo/image document downloaded (Telegram lets bots fetch up to 20 MB)
    max_download_mb: float = Field(default=20, gt=0, le=2000)

    #: what carries Bot API requests: aiohttp (a fraction of the CPU per call; "auto" uses it when
    #: installed) or httpx, python-telegram-bot's default
    http_client: Literal["auto", "aiohttp", "httpx"] = "auto"
    #: HTTP connections to the Bot API (streams in many chats send concurrently)
    connection_pool_size: int = Field(default=256, ge=1)
    #: seconds to wait for a Bot API answer (long polls add their own timeout to this)
    request_timeout: float = Field(default=15.0, gt=0)
    #: seconds a long poll is held open by the server
    poll_timeout: int = Field(default=25, ge=0, le=60)

    @field_validator("allowed_users", "allowed_chats", "admins", mode="before")
    @classmethod
    def _ids_as_strings(cls, value: object) -> object:
        # TOML users write ids as numbers; compare them as strings
        if isinstance(value, list):
            return [str(v).strip() for v in value]
        return value

    @field_validator("webhook_path")
    @classmethod
    def _leading_slash(cls, value: str) -> str:
        return value if value.startswith("/") else "/" + value

    @model_validator(mode="after")
    def _check_token(self) -> TelegramConfig:
        token = self.token.get_secret_value().strip()
        if not token:
            raise ValueError("token is empty; set it to the token @BotFather gave you")
        if any(c.isspace() for c in token):
            raise ValueError("token contains whitespace; copy it again from @BotFather")
        return self

    def file_url(self) -> str:
        """The base file URL, derived from ``base_url`` when not set."""
        if self.base_file_url:
            return self.base_file_url
        if self.base_url:
            base = self.base_url.rstrip("/")
            if base.endswith("/bot"):
                return base[: -len("/bot")] + "/file/bot"
            return base + "/file/bot"
        return ""
