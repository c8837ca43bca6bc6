"""What the fake remembers: messages (with every text they showed), attachments and calls.

Tests assert on these: :class:`StoredMessage` ``versions`` is what a user saw over time,
:class:`CallRecord` is one REST call as Discord saw it, :class:`RateLimitRecord` one 429.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from relaybot.core.testing.fake_discord.objects import FakeMember, FakeUser, iso_now


class CallRecord(NamedTuple):
    """One REST call (unpacks as a 9-tuple).

    ``route`` is the route template (``"POST /channels/{channel_id}/messages"``), ``status``
    the HTTP status answered, ``text`` the message content sent (creates and edits), ``json``
    the request body as parsed (``payload_json`` for multipart), ``headers`` the rate-limit
    headers the fake answered with.
    """

    t: float
    route: str
    channel_id: int | None
    message_id: int | None
    text: str | None
    status: int
    json: Any
    headers: dict[str, str]
    error_code: int | None


class TextEvent(NamedTuple):
    """A change users saw: a message ``created``, ``edited`` or ``deleted``, and its text then."""

    t: float
    kind: str  # created | edited | deleted
    channel_id: int
    message_id: int
    author_id: int
    text: str


class RateLimitRecord(NamedTuple):
    """One 429 the fake answered: which route and bucket, for how long, and its scope."""

    t: float
    route: str
    bucket: str
    retry_after: float
    scope: str  # user | global | shared


@dataclass(slots=True)
class StoredAttachment:
    """A file served on a loopback URL: uploaded by the bot or injected for a user message.

    ``data`` is None for a synthetic file of ``size`` zero bytes (the 30 MB one), streamed on
    request without being held in memory.
    """

    id: int
    filename: str
    content_type: str
    size: int
    url: str
    data: bytes | None = None
    width: int | None = None
    height: int | None = None
    downloads: int = 0  # how often its URL was fetched

    def to_api(self) -> dict[str, Any]:
        """The ``Attachment`` object."""
        data: dict[str, Any] = {
            "id": str(self.id), "filename": self.filename, "size": self.size, "url": self.url,
            "proxy_url": self.url, "content_type": self.content_type,
        }  # fmt: skip
        if self.width is not None and self.height is not None:
            data.update(width=self.width, height=self.height)
        return data


@dataclass(slots=True)
class StoredMessage:
    """A message in a channel and what it showed over time.

    ``content``/``embeds`` are current; ``versions`` lists every content it had (created,
    then each edit), so a test can check a stream's frames; ``deleted`` marks a message that
    was deleted (it stays here for assertions, the API answers 404 Unknown Message).
    """

    id: int
    channel_id: int
    guild_id: int | None
    author: FakeUser
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)
    reference_id: int | None = None
    mentions: list[FakeUser] = field(default_factory=list)
    mention_roles: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    allowed_mentions: dict[str, Any] | None = None
    member: FakeMember | None = None
    timestamp: str = field(default_factory=iso_now)
    edited_timestamp: str | None = None
    deleted: bool = False
    versions: list[str] = field(default_factory=list)
    webhook_id: int | None = None
    interaction_id: int | None = None
    flags: int = 0  # 64 ephemeral, 128 "is thinking" (a deferred interaction answer)

    @property
    def text(self) -> str:
        """What the message shows now: its content, then each embed's title and description."""
        parts = [self.content] if self.content else []
        for embed in self.embeds:
            parts.extend(str(embed[k]) for k in ("title", "description") if embed.get(k))
        return "\n".join(parts)

    def to_api(self, resolve: Any = None) -> dict[str, Any]:
        """The ``Message`` object; ``resolve(id)`` gives the referenced message's payload."""
        data: dict[str, Any] = {
            "id": str(self.id), "channel_id": str(self.channel_id), "author": self.author.to_api(),
            "content": self.content, "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp, "tts": False,
            "mention_everyone": self.mention_everyone,
            "mentions": [u.to_api() for u in self.mentions],
            "mention_roles": [str(r) for r in self.mention_roles],
            "attachments": [a.to_api() for a in self.attachments], "embeds": self.embeds,
            "pinned": False, "type": 19 if self.reference_id else 0, "flags": self.flags,
            "components": [],
        }  # fmt: skip
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.member is not None:
            data["member"] = self.member.to_api(with_user=False)
        if self.webhook_id is not None:
            data["webhook_id"] = str(self.webhook_id)
        if self.reference_id is not None:
            ref: dict[str, Any] = {"type": 0, "message_id": str(self.reference_id),
                                   "channel_id": str(self.channel_id), "fail_if_not_exists": False}
            if self.guild_id is not None:
                ref["guild_id"] = str(self.guild_id)
            data["message_reference"] = ref
            if resolve is not None:
                data["referenced_message"] = resolve(self.reference_id)
        return data


class Store:
    """Messages by channel and id, attachments by id, the call timeline and the 429s."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.timeline: list[TextEvent] = []
        self.messages: dict[int, StoredMessage] = {}
        self.by_channel: dict[int, list[StoredMessage]] = {}
        self.attachments: dict[int, StoredAttachment] = {}
        self.calls: list[CallRecord] = []
        self.rate_limited: list[RateLimitRecord] = []
        self._waiters: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        """Something changed (a call, a gateway event): wake :meth:`wait_for` callers."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Return once ``predicate()`` is true, re-checked after every change.

        Raises ``TimeoutError`` after ``timeout`` seconds (a generous bound, not a timing goal).
        """
        async with asyncio.timeout(timeout):
            while not predicate():
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                await waiter

    def add_message(self, message: StoredMessage) -> StoredMessage:
        """Store a new message and record its first version."""
        message.versions.append(message.content)
        self.messages[message.id] = message
        self.by_channel.setdefault(message.channel_id, []).append(message)
        self.record_text("created", message)
        return message

    def record_text(self, kind: str, message: StoredMessage) -> None:
        """Add to :attr:`timeline` what users see of ``message`` now, and wake waiters."""
        self.timeline.append(TextEvent(self.clock(), kind, message.channel_id, message.id, message.author.id,
                                       message.text))  # fmt: skip
        self.notify()

    def resolve(self, message_id: int) -> dict[str, Any] | None:
        """``referenced_message`` for a reply: the payload, or None (JSON null) when deleted."""
        found = self.messages.get(message_id)
        if found is None or found.deleted:
            return None
        return found.to_api()
