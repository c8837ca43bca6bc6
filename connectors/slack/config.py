"""``[connectors.slack]``: the Slack connector's validated settings.

Socket Mode needs two tokens::

    [connectors.slack]
    bot_token = "${SLACK_BOT_TOKEN}"     # xoxb-…
    app_token = "${SLACK_APP_TOKEN}"     # xapp-…: Socket Mode

HTTP Events mode leaves ``app_token`` empty and sets ``signing_secret`` instead (relaybot serves
the Request URL on ``http_host:http_port`` + ``http_path``). Everything else has a safe
default: answers in DMs, when mentioned and to follow-ups in threads the bot is in; Slack's
published method tiers as budgets; native chat streams. Nothing here imports slack_sdk, so
``relaybot check`` validates a config on a machine without the ``slack`` extra.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from relaybot import BaseConnectorConfig

from .access import DEFAULT_DENIED_MESSAGE

DEFAULT_GREETING = "Hi! How can I help?"
DEFAULT_LOADING_MESSAGES = ("Thinking…", "Reading the thread…", "Writing…")


class SuggestedPrompt(BaseModel):
    """One suggested prompt of the assistant pane (``title`` shown, ``message`` sent)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=75)
    message: str = Field(min_length=1)


class SlackConfig(BaseConnectorConfig):
    """Settings of one Slack app in one workspace (one ``[connectors.NAME]`` table)."""

    #: the Bot User OAuth Token (``xoxb-…``; use ``${ENV_VAR}``; it is never logged)
    bot_token: SecretStr
    #: the app-level token (``xapp-…``, scope ``connections:write``): Socket Mode. Empty = HTTP
    #: Events mode (set ``signing_secret``)
    app_token: SecretStr = SecretStr("")
    #: *Basic Information* → *Signing Secret*: verifies HTTP Events requests
    signing_secret: SecretStr = SecretStr("")
    #: Web API base URL (ends with ``/api/``); empty = Slack's ``https://slack.com/api/``.
    #: Tests point it at ``relaybot.testing.FakeSlackServer``'s ``api_url``
    base_url: str = ""

    #: HTTP Events mode: where relaybot listens for Slack's requests
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=3000, ge=0, le=65535)
    #: HTTP Events mode: the Request URL's path (events, the slash command and interactivity)
    http_path: str = "/slack/events"

    #: answer replies in a channel thread the bot is already in without a new mention
    thread_follow_ups: bool = True
    #: chat commands in messages start with this (``!new``); a leading ``/`` is Slack's own
    #: slash-command syntax and never reaches the bot as a message
    command_prefix: str = Field(default="!", min_length=1, max_length=3)
    #: the one slash command the app registers (``/relaybot new``, ``/relaybot stop``)
    slash_command: str = "/relaybot"

    #: Slack user ids allowed to use the bot; empty with empty ``allowed_channels`` = everyone
    allowed_users: list[str] = Field(default_factory=list)
    #: channel ids whose members may all use the bot
    allowed_channels: list[str] = Field(default_factory=list)
    #: workspace ids (``T…``) the bot answers in; empty = any
    allowed_teams: list[str] = Field(default_factory=list)
    #: Slack user ids that may always use the bot and run admin-only commands
    admins: list[str] = Field(default_factory=list)
    #: what a user who is not allowed sees (an ephemeral message, once an hour at most)
    denied_message: str = DEFAULT_DENIED_MESSAGE

    #: stream replies with Slack's chat streaming (``chat.startStream``…); off = post + update
    native_streaming: bool = True
    #: minimum seconds between requests into one DM / one channel (``chat.postMessage`` is
    #: about 1 per second per channel)
    private_interval: float = Field(default=1.0, ge=0)
    channel_interval: float = Field(default=1.0, ge=0)
    #: Slack's per-method tiers per workspace (calls per minute): ``chat.startStream`` and
    #: ``chat.stopStream`` Tier 2, ``chat.appendStream`` Tier 4, ``chat.update``/``chat.delete``
    #: Tier 3. Slack publishes minimums ("20+"); the defaults keep a small margin
    start_stream_per_minute: int = Field(default=19, ge=1)
    stop_stream_per_minute: int = Field(default=19, ge=1)
    append_stream_per_minute: int = Field(default=95, ge=1)
    update_per_minute: int = Field(default=48, ge=1)

    #: the assistant status while the model thinks (``assistant.threads.setStatus``); empty = off
    status: str = "is thinking…"
    #: rotating messages shown with the status (at most 10)
    loading_messages: list[str] = Field(default_factory=lambda: list(DEFAULT_LOADING_MESSAGES), max_length=10)
    #: seconds between status refreshes while nothing is shown yet (Slack drops it after 2 min)
    status_interval: float = Field(default=60.0, gt=0)
    #: the assistant pane: what the bot says when a thread opens, and up to 4 prompts
    assistant_greeting: str = DEFAULT_GREETING
    suggested_prompts: list[SuggestedPrompt] = Field(default_factory=list, max_length=4)

    #: largest image downloaded from a message (Slack files can be far larger)
    max_download_mb: float = Field(default=20, gt=0, le=1000)
    #: seconds to wait for a Web API answer
    request_timeout: float = Field(default=30.0, gt=0)
    #: seconds between Socket Mode pings (a dead connection is noticed after about two)
    ping_interval: float = Field(default=10.0, gt=0)
    #: seconds an event may take to be stored before it is acknowledged anyway (Slack
    #: re-delivers what is not acknowledged within 3 s)
    ack_within: float = Field(default=2.0, gt=0, le=2.9)

    @field_validator("allowed_users", "allowed_channels", "allowed_teams", "admins", mode="before")
    @classmethod
    def _ids_as_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [str(v).strip() for v in value]
        return value

    @field_validator("http_path")
    @classmethod
    def _leading_slash(cls, value: str) -> str:
        return value if value.startswith("/") else "/" + value

    @field_validator("slash_command")
    @classmethod
    def _slash(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError('slash_command is empty; use e.g. "/relaybot"')
        return value if value.startswith("/") else "/" + value

    @field_validator("base_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        value = value.strip()
        return value if not value or value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _check_tokens(self) -> SlackConfig:
        bot = self.bot_token.get_secret_value().strip()
        app = self.app_token.get_secret_value().strip()
        if not bot:
            raise ValueError("bot_token is empty; set it to the Bot User OAuth Token (xoxb-…)")
        if bot.startswith("xapp-"):
            raise ValueError("bot_token holds an app-level token (xapp-…); that one belongs in "
                             "app_token, and bot_token takes the Bot User OAuth Token (xoxb-…)")  # fmt: skip
        if any(c.isspace() for c in bot + app):
            raise ValueError("a token contains whitespace; copy it again from the app's settings")
        if app and not app.startswith("xapp-"):
            raise ValueError("app_token must be an app-level token (xapp-…, Basic Information → "
                             "App-Level Tokens); leave it empty for HTTP Events mode")  # fmt: skip
        if not app and not self.signing_secret.get_secret_value().strip():
            raise ValueError("set app_token (Socket Mode) or signing_secret (HTTP Events mode)")
        return self

    @property
    def mode(self) -> Literal["socket", "http"]:
        """``socket`` with an app token, else ``http``."""
        return "socket" if self.app_token.get_secret_value().strip() else "http"
