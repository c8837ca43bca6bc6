"""Who may talk to the Slack bot: allow-lists by user, channel and workspace; admins.

Pure decisions, no Slack calls. The connector asks :meth:`AccessList.allows` for every routed
message and tells a denied person once (an ephemeral message only they see), not on every
message: :class:`DeniedNotices` remembers whom it told.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

DEFAULT_DENIED_MESSAGE = "Sorry, you are not allowed to use this assistant here. Ask an admin for access."


def _ids(values: Iterable[str]) -> frozenset[str]:
    # Slack ids are upper-case (U…, C…, T…); people paste them with spaces or in lower case
    return frozenset(v.strip().upper() for v in values if v and v.strip())


class AccessList:
    """The bot's lists. Empty ``users`` and ``channels`` mean everyone (in allowed workspaces).

    - ``teams``: workspace ids (``T…``); when set, nobody outside them gets an answer — admins
      included, since a user id only means something inside its workspace.
    - ``admins``: user ids that may always use the bot and run admin-only commands.
    - ``users``: user ids allowed anywhere; ``channels``: conversations (``C…``/``G…``/``D…``)
      whose members may all use the bot.
    """

    def __init__(
        self,
        *,
        users: Iterable[str] = (),
        channels: Iterable[str] = (),
        teams: Iterable[str] = (),
        admins: Iterable[str] = (),
        denied_message: str = DEFAULT_DENIED_MESSAGE,
    ) -> None:
        self.users = _ids(users)
        self.channels = _ids(channels)
        self.teams = _ids(teams)
        self.admins = _ids(admins)
        self.denied_message = denied_message

    @property
    def open(self) -> bool:
        """True when nobody is restricted."""
        return not (self.users or self.channels or self.teams)

    def is_admin(self, user: str) -> bool:
        """True for a listed admin."""
        return user.upper() in self.admins

    def allows(self, *, user: str, channel: str, team: str) -> bool:
        """May ``user`` use the bot in ``channel`` of workspace ``team``?"""
        if self.teams and team.upper() not in self.teams:
            return False
        if self.is_admin(user) or not (self.users or self.channels):
            return True
        return user.upper() in self.users or channel.upper() in self.channels


class DeniedNotices:
    """Tell each denied person once per ``interval`` seconds (default: an hour), not per message.

    Bounded (``max_entries``, oldest forgotten first), so a flood of strangers costs no memory.
    """

    def __init__(
        self, interval: float = 3600.0, *, max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.interval = interval
        self.max_entries = max_entries
        self._clock = clock
        self._told: OrderedDict[tuple[str, str], float] = OrderedDict()

    def should_tell(self, team: str, user: str) -> bool:
        """True (and remembered) if ``user`` has not been told within the interval."""
        key = (team, user)
        now = self._clock()
        last = self._told.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._told[key] = now
        self._told.move_to_end(key)
        while len(self._told) > self.max_entries:
            self._told.popitem(last=False)
        return True
