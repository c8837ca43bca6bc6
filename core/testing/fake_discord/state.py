"""The fake's world: the bot, its application, guilds, channels, users and interactions.

Shared by the REST API (:mod:`.rest`), the gateway (:mod:`.gateway`) and the test-side API
(:mod:`.server`), so every view of a channel or message is the same object.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relaybot.core.testing.fake_discord.objects import (
    DM,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeUser,
    Snowflakes,
)
from relaybot.core.testing.fake_discord.store import Store, StoredMessage
from relaybot.core.testing.fake_discord.validation import missing_access, unknown_channel

# application flags Discord sets when the privileged intents are enabled for the app
GATEWAY_PRESENCE = 1 << 12
GATEWAY_GUILD_MEMBERS = 1 << 14
GATEWAY_MESSAGE_CONTENT = 1 << 18

# privileged gateway intents by name
PRIVILEGED_INTENTS = {"members": 1 << 1, "presences": 1 << 8, "message_content": 1 << 15}
MESSAGE_CONTENT_INTENT = PRIVILEGED_INTENTS["message_content"]


@dataclass(slots=True)
class FakeInteraction:
    """A slash-command interaction sent to the bot, and how it was answered.

    ``response_type`` is the callback type the bot answered with (4 message, 5 deferred ...),
    ``original_id`` the id of the response message once there is one.
    """

    id: int
    token: str
    channel_id: int
    guild_id: int | None
    user: FakeUser
    data: dict[str, Any]
    created_at: float
    response_type: int | None = None
    original_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)


class State:
    """Everything the fake knows, indexed by id."""

    def __init__(self, bot_name: str, granted_intents: frozenset[str], clock: Callable[[], float]) -> None:
        self.snowflakes = Snowflakes()
        self.bot = FakeUser(self.new_id(), bot_name, bot=True)
        self.application_id = self.bot.id  # the same id, as for every application since 2020
        self.granted_intents = granted_intents
        self.users: dict[int, FakeUser] = {self.bot.id: self.bot}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.store = Store(clock)
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.interactions: dict[int, FakeInteraction] = {}

    @property
    def application_flags(self) -> int:
        """The application's flags: which privileged intents the "developer portal" enabled."""
        flags = 0
        if "message_content" in self.granted_intents:
            flags |= GATEWAY_MESSAGE_CONTENT
        if "members" in self.granted_intents:
            flags |= GATEWAY_GUILD_MEMBERS
        if "presences" in self.granted_intents:
            flags |= GATEWAY_PRESENCE
        return flags

    def new_id(self) -> int:
        """A fresh snowflake."""
        return self.snowflakes.next()

    def new_token(self) -> str:
        """A fresh interaction token (url-safe, like Discord's)."""
        return "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(24)

    def channel(self, channel_id: int) -> FakeChannel:
        """The channel, or Discord's 404 Unknown Channel / 403 Missing Access."""
        channel = self.channels.get(channel_id)
        if channel is None:
            raise unknown_channel()
        if not channel.accessible or (channel.parent_id and not self.channels[channel.parent_id].accessible):
            raise missing_access()
        return channel

    def member(self, guild_id: int | None, user_id: int) -> FakeMember | None:
        """The user's membership in the guild (None in DMs or when not a member)."""
        if guild_id is None:
            return None
        guild = self.guilds.get(guild_id)
        return guild.members.get(user_id) if guild else None

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel with ``user`` (created on first use, as ``POST /users/@me/channels``)."""
        for channel in self.channels.values():
            if channel.type == DM and channel.recipient is not None and channel.recipient.id == user.id:
                return channel
        channel = FakeChannel(self.new_id(), DM, recipient=user)
        self.channels[channel.id] = channel
        return channel

    def message_payload(self, message: StoredMessage) -> dict[str, Any]:
        """The ``Message`` object with ``referenced_message`` resolved (null when deleted).

        In a guild, each mentioned user carries their partial ``member``, as on the gateway.
        """
        data = message.to_api(resolve=self.store.resolve)
        if message.guild_id is not None:
            for mention in data["mentions"]:
                member = self.member(message.guild_id, int(mention["id"]))
                if member is not None:
                    mention["member"] = member.to_api(with_user=False)
        return data
