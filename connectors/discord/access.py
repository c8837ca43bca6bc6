"""Who may talk to the bot where: allow-lists by user, role, channel and guild; admins.

Two questions, both must pass (an admin passes everything):

- **who** — ``users`` and ``roles``: empty means everyone; otherwise the author is listed, or
  has a listed role in the guild the message comes from. In a DM there are no roles, so a
  role-only list lets a DM through only when ``roles_of`` (the connector's look-up of the user's
  roles in the guilds it shares) finds one;
- **where** — ``guilds`` and ``channels``: empty means everywhere; otherwise the message is in
  a listed guild or a listed channel (a thread counts as its parent channel). DMs are "where"
  only when ``allow_dms`` (default true).

Admins are ``admin_users`` or members with one of ``admin_roles``. A denied person gets the
polite ``denied`` answer once (:meth:`AccessList.first_denial`), not one per message: a
refusal per message would itself be spam.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import discord

DEFAULT_DENIED = "Sorry, I'm not available to you here. Ask an admin of this bot for access."


@dataclass(frozen=True, slots=True)
class AccessResult:
    """The decision for one message: ``allowed``, whether the author ``is_admin``, and why."""

    allowed: bool
    is_admin: bool
    reason: str


class AccessList:
    """The allow-lists and admins of one Discord bot (ids as ints or numeric strings)."""

    def __init__(
        self,
        *,
        users: Iterable[int | str] = (),
        roles: Iterable[int | str] = (),
        channels: Iterable[int | str] = (),
        guilds: Iterable[int | str] = (),
        admin_users: Iterable[int | str] = (),
        admin_roles: Iterable[int | str] = (),
        allow_dms: bool = True,
        denied: str = DEFAULT_DENIED,
        roles_of: Callable[[int], Iterable[int]] | None = None,
    ) -> None:
        self.users = _ids(users, "users")
        self.roles = _ids(roles, "roles")
        self.channels = _ids(channels, "channels")
        self.guilds = _ids(guilds, "guilds")
        self.admin_users = _ids(admin_users, "admin_users")
        self.admin_roles = _ids(admin_roles, "admin_roles")
        self.allow_dms = allow_dms
        self.denied = denied
        self.roles_of = roles_of
        self._told: set[int] = set()

    @property
    def open(self) -> bool:
        """True when nobody and nowhere is restricted."""
        return not (self.users or self.roles or self.channels or self.guilds) and self.allow_dms

    def is_admin(self, message: discord.Message) -> bool:
        """Whether the author is an admin (by user id, or a role in this guild)."""
        author = message.author
        return author.id in self.admin_users or bool(self._role_ids(message) & self.admin_roles)

    def check(self, message: discord.Message) -> AccessResult:
        """Decide for ``message`` (see the module docstring)."""
        if self.is_admin(message):
            return AccessResult(True, True, "admin")
        if self.users or self.roles:
            if message.author.id not in self.users and not self._role_ids(message) & self.roles:
                return AccessResult(False, False, "user not on the allow-list")
        if message.guild is None:
            if not self.allow_dms:
                return AccessResult(False, False, "DMs are off")
        elif self.guilds or self.channels:
            channel = message.channel
            parent = getattr(channel, "parent_id", None)
            in_channel = channel.id in self.channels or (parent is not None and parent in self.channels)
            if message.guild.id not in self.guilds and not in_channel:
                return AccessResult(False, False, "channel not on the allow-list")
        return AccessResult(True, False, "allowed")

    def first_denial(self, user_id: int) -> bool:
        """True the first time ``user_id`` is denied (answer them politely then, and only then)."""
        if user_id in self._told:
            return False
        self._told.add(user_id)
        return True

    def _role_ids(self, message: discord.Message) -> set[int]:
        author = message.author
        if isinstance(author, discord.Member):
            return {role.id for role in author.roles}
        if self.roles_of is not None:
            return set(self.roles_of(author.id))
        return set()


def _ids(values: Iterable[int | str], key: str) -> frozenset[int]:
    out = set()
    for value in values:
        text = str(value).strip()
        if not text:
            continue
        if not text.isdigit():
            raise ValueError(
                f"{key}: {value!r} is not a Discord id (enable Developer Mode in Discord, then "
                "right-click the user, role, channel or server and choose Copy ID)"
            )
        out.add(int(text))
    return frozenset(out)
