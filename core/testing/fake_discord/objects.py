"""Discord's objects as the fake keeps them: users, guilds, roles, members and channels.

Each dataclass renders itself as the JSON Discord sends (``to_api``), with ids as strings and
the fields discord.py reads when it builds its models. Ids are real snowflakes (the creation
time is encoded in them), so ``discord.utils.snowflake_time`` works on anything the fake hands
out.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

DISCORD_EPOCH_MS = 1420070400000

# channel types (https://discord.com/developers/docs/resources/channel#channel-object-channel-types)
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
THREAD_TYPES = frozenset({PUBLIC_THREAD, PRIVATE_THREAD})

# permission bits the SETUP guide and the tests refer to
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
ADMINISTRATOR = 1 << 3


class Snowflakes:
    """Hands out increasing snowflakes: ``(ms since 2015) << 22 | counter``."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)

    def next(self) -> int:
        """A new id, unique in this fake and ordered by creation."""
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return (ms << 22) | (next(self._counter) & 0x3FFFFF)


def iso_now() -> str:
    """The current time as Discord's ISO 8601 timestamp."""
    return datetime.now(UTC).isoformat()


@dataclass(slots=True)
class FakeUser:
    """A Discord user (people and bots, including the bot under test)."""

    id: int
    username: str
    bot: bool = False
    global_name: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The ``User`` object."""
        data: dict[str, Any] = {
            "id": str(self.id), "username": self.username, "discriminator": "0",
            "global_name": self.global_name, "avatar": None, "public_flags": 0,
        }  # fmt: skip
        if self.bot:
            data["bot"] = True
        return data

    @property
    def mention(self) -> str:
        """``<@id>``, the text that mentions this user."""
        return f"<@{self.id}>"


@dataclass(slots=True)
class FakeRole:
    """A guild role (the ``@everyone`` role has the guild's id)."""

    id: int
    name: str
    permissions: int = VIEW_CHANNEL | SEND_MESSAGES
    position: int = 0

    def to_api(self) -> dict[str, Any]:
        """The ``Role`` object."""
        return {
            "id": str(self.id), "name": self.name, "color": 0, "hoist": False, "icon": None,
            "unicode_emoji": None, "position": self.position, "permissions": str(self.permissions),
            "managed": False, "mentionable": True, "flags": 0,
        }  # fmt: skip

    @property
    def mention(self) -> str:
        """``<@&id>``, the text that mentions this role."""
        return f"<@&{self.id}>"


@dataclass(slots=True)
class FakeMember:
    """A user's membership in a guild, with the ids of their roles (``@everyone`` implied)."""

    user: FakeUser
    roles: list[int] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=iso_now)

    def to_api(self, *, with_user: bool = True) -> dict[str, Any]:
        """The ``Guild Member`` object (``with_user=False`` for the partial one in messages)."""
        data: dict[str, Any] = {
            "roles": [str(r) for r in self.roles], "nick": self.nick, "joined_at": self.joined_at,
            "deaf": False, "mute": False, "flags": 0, "pending": False, "avatar": None,
            "communication_disabled_until": None, "premium_since": None,
        }  # fmt: skip
        if with_user:
            data["user"] = self.user.to_api()
        return data


@dataclass(slots=True)
class FakeChannel:
    """A channel: guild text channel, DM, or thread (a thread is a channel with a parent).

    ``accessible=False`` means the bot lost access: REST calls answer 403 ``Missing Access``.
    """

    id: int
    type: int
    name: str | None = None
    guild_id: int | None = None
    parent_id: int | None = None
    recipient: FakeUser | None = None  # DMs
    owner_id: int | None = None  # threads: who started it
    accessible: bool = True
    last_message_id: int | None = None

    @property
    def is_thread(self) -> bool:
        """Whether this channel is a thread."""
        return self.type in THREAD_TYPES

    def to_api(self) -> dict[str, Any]:
        """The ``Channel`` object for this type."""
        last = str(self.last_message_id) if self.last_message_id else None
        if self.type == DM:
            recipients = [self.recipient.to_api()] if self.recipient else []
            return {"id": str(self.id), "type": DM, "recipients": recipients, "last_message_id": last,
                    "flags": 0}  # fmt: skip
        data: dict[str, Any] = {
            "id": str(self.id), "type": self.type, "guild_id": str(self.guild_id), "name": self.name,
            "position": 0, "permission_overwrites": [], "nsfw": False, "rate_limit_per_user": 0,
            "parent_id": str(self.parent_id) if self.parent_id else None, "topic": None,
            "last_message_id": last, "flags": 0,
        }  # fmt: skip
        if self.is_thread:
            data.update({
                "owner_id": str(self.owner_id) if self.owner_id else None,
                "message_count": 0, "member_count": 1, "total_message_sent": 0,
                "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                    "archive_timestamp": iso_now(), "locked": False},
            })  # fmt: skip
        return data


@dataclass(slots=True)
class FakeGuild:
    """A guild with its channels, roles and members (the bot is always a member)."""

    id: int
    name: str
    owner_id: int
    channels: dict[int, FakeChannel] = field(default_factory=dict)
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)

    def to_api(self) -> dict[str, Any]:
        """The ``GUILD_CREATE`` payload: the guild with channels, threads, roles and members."""
        channels = [c.to_api() for c in self.channels.values() if not c.is_thread]
        threads = [c.to_api() for c in self.channels.values() if c.is_thread]
        return {
            "id": str(self.id), "name": self.name, "icon": None, "splash": None,
            "discovery_splash": None, "owner_id": str(self.owner_id), "afk_channel_id": None,
            "afk_timeout": 300, "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "roles": [r.to_api() for r in self.roles.values()],
            "emojis": [], "stickers": [], "features": [], "mfa_level": 0, "application_id": None,
            "system_channel_id": None, "system_channel_flags": 0, "rules_channel_id": None,
            "vanity_url_code": None, "description": None, "banner": None, "premium_tier": 0,
            "preferred_locale": "en-US", "public_updates_channel_id": None, "nsfw_level": 0,
            "premium_progress_bar_enabled": False, "joined_at": iso_now(), "large": False,
            "unavailable": False, "member_count": len(self.members), "voice_states": [],
            "members": [m.to_api() for m in self.members.values()], "channels": channels,
            "threads": threads, "presences": [], "stage_instances": [],
            "guild_scheduled_events": [], "soundboard_sounds": [],
        }  # fmt: skip
