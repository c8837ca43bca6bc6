"""What the fake remembers: the workspace's channels, users, messages, files and every call.

Everything a test asserts on lives here. A message keeps the text a user would see
(:attr:`SlackMessage.visible`) and a history of how it changed, so a test asserts the final
reply exactly once, with no duplicate or missing piece, and can follow how it got there.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class TimelineRecord(NamedTuple):
    """One Web API call as the fake saw it.

    ``t`` is the fake's clock; ``channel``/``ts``/``text`` are filled when the method has them
    (``text`` is what the call added or set); ``status`` is the HTTP status (200 or 429);
    ``error`` is Slack's error code (None when ``ok``); ``inside_retry_after`` marks a call made
    while a Retry-After the fake had announced for the same budget was still running.
    """

    t: float
    method: str
    channel: str | None
    ts: str | None
    text: str | None
    status: int
    error: str | None
    inside_retry_after: bool
    extra: dict[str, Any]

    @property
    def ok(self) -> bool:
        """True when the call succeeded."""
        return self.status == 200 and self.error is None


@dataclass(slots=True)
class Channel:
    """A conversation: ``kind`` is ``im`` (a DM), ``channel`` (public), ``group`` (private)
    or ``mpim``. ``is_member`` says whether the bot is in it."""

    id: str
    kind: str
    name: str = ""
    user: str | None = None  # the other party of a DM
    is_member: bool = True
    is_archived: bool = False

    def to_api(self, team: str) -> dict[str, Any]:
        """The ``conversations.info`` channel object."""
        base: dict[str, Any] = {
            "id": self.id, "created": 1700000000, "is_archived": self.is_archived,
            "is_im": self.kind == "im", "is_mpim": self.kind == "mpim",
            "is_private": self.kind in ("im", "group", "mpim"), "context_team_id": team,
        }  # fmt: skip
        if self.kind == "im":
            base.update({"user": self.user, "is_user_deleted": False, "priority": 0})
        else:
            base.update({
                "name": self.name, "is_channel": self.kind == "channel",
                "is_group": self.kind == "group", "is_general": False, "is_shared": False,
                "is_ext_shared": False, "is_org_shared": False, "is_member": self.is_member,
                "name_normalized": self.name, "shared_team_ids": [team],
                "topic": {"value": "", "creator": "", "last_set": 0},
                "purpose": {"value": "", "creator": "", "last_set": 0},
            })  # fmt: skip
        return base


@dataclass(slots=True)
class User:
    """A workspace member (``is_bot`` for the app's bot user)."""

    id: str
    name: str
    team: str
    is_bot: bool = False
    real_name: str = ""
    tz: str = "Europe/Berlin"

    def to_api(self) -> dict[str, Any]:
        """The ``users.info`` user object."""
        real = self.real_name or self.name.title()
        return {
            "id": self.id, "team_id": self.team, "name": self.name, "deleted": False,
            "real_name": real, "tz": self.tz, "tz_offset": 3600, "is_bot": self.is_bot,
            "is_admin": False, "is_owner": False, "is_app_user": False, "updated": 1700000000,
            "profile": {"real_name": real, "display_name": self.name, "team": self.team,
                        "image_48": "https://example.invalid/avatar_48.png"},
        }  # fmt: skip


@dataclass(slots=True)
class StreamState:
    """A message created by ``chat.startStream``.

    ``state`` is ``streaming`` until ``chat.stopStream`` (``stopped``), a user pressing stop
    (``stopped_by_user``) or the server-side lifetime running out (``expired``, decided lazily
    from ``started_at``). ``appends`` are the markdown pieces in arrival order.
    """

    started_at: float
    recipient_user_id: str | None
    recipient_team_id: str | None
    state: str = "streaming"
    appends: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SlackMessage:
    """A message in a channel, the bot's or an injected user's.

    ``text`` is the ``text`` field; ``markdown`` the streamed/markdown_text content; ``blocks``
    as given. :attr:`visible` is what a person reading Slack sees. ``history`` holds
    ``(t, method, visible_after)`` for every change the bot made.
    """

    channel: str
    ts: str
    user: str
    from_bot: bool
    text: str = ""
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] | None = None
    markdown: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    subtype: str | None = None
    stream: StreamState | None = None
    deleted: bool = False
    edit_count: int = 0
    history: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def visible(self) -> str:
        """The text a user sees: streamed/markdown content, else blocks' text, else ``text``."""
        parts: list[str] = []
        if self.markdown is not None:
            parts.append(self.markdown)
        block_text = blocks_text(self.blocks or [])
        if block_text:
            parts.append(block_text)
        if parts:
            return "\n".join(p for p in parts if p)
        return self.text

    def to_api(self, bot_id: str | None = None, team: str = "") -> dict[str, Any]:
        """The message object as ``conversations.replies`` and ``chat.postMessage`` return it."""
        api: dict[str, Any] = {"type": "message", "user": self.user, "ts": self.ts,
                               "text": self.text or self.visible, "team": team}  # fmt: skip
        if self.thread_ts:
            api["thread_ts"] = self.thread_ts
        if self.blocks:
            api["blocks"] = self.blocks
        if self.files:
            api["files"] = self.files
            api["upload"] = False
        if self.subtype:
            api["subtype"] = self.subtype
        if self.from_bot and bot_id:
            api["bot_id"] = bot_id
            api["app_id"] = "A0FAKEAPP"
        if self.edit_count:
            api["edited"] = {"user": self.user, "ts": self.ts}
        return api


def blocks_text(blocks: list[dict[str, Any]]) -> str:
    """The readable text of Block Kit ``blocks`` (markdown, section, header, context, rich_text)."""
    out: list[str] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "markdown":
            out.append(str(block.get("text", "")))
        elif kind in ("section", "header"):
            text = block.get("text")
            if isinstance(text, dict):
                out.append(str(text.get("text", "")))
            for item in block.get("fields") or []:
                if isinstance(item, dict):
                    out.append(str(item.get("text", "")))
        elif kind == "context":
            out.extend(str(e.get("text", "")) for e in block.get("elements", []) if isinstance(e, dict))
        elif kind == "rich_text":
            out.append(_rich_text(block.get("elements") or []))
    return "\n".join(t for t in out if t)


def _rich_text(elements: list[Any]) -> str:
    pieces: list[str] = []
    for element in elements:
        if not isinstance(element, dict):
            continue
        if "elements" in element:
            pieces.append(_rich_text(element["elements"]))
        elif element.get("type") == "text":
            pieces.append(str(element.get("text", "")))
        elif element.get("type") == "user":
            pieces.append(f"<@{element.get('user_id', '')}>")
        elif element.get("type") == "link":
            pieces.append(str(element.get("text") or element.get("url", "")))
    return "".join(pieces)


@dataclass(slots=True)
class StoredFile:
    """A file in the workspace: injected by a test or uploaded with files v2.

    ``restricted`` files exist but the bot may not read them (downloads answer 403).
    ``completed`` turns True with ``files.completeUploadExternal``.
    """

    id: str
    name: str
    mimetype: str
    data: bytes
    user: str
    title: str = ""
    restricted: bool = False
    completed: bool = True
    declared_length: int | None = None
    channels: list[str] = field(default_factory=list)
    thread_ts: str | None = None
    #: the size events report, when a test wants a huge file without holding its bytes
    reported_size: int | None = None

    def to_api(self, base_url: str, team: str) -> dict[str, Any]:
        """The file object of events and ``files.completeUploadExternal``."""
        ext = self.name.rsplit(".", 1)[-1].lower() if "." in self.name else "binary"
        size = self.reported_size if self.reported_size is not None else len(self.data)
        private = f"{base_url}/files-pri/{team}-{self.id}/{self.name}"
        return {
            "id": self.id, "created": 1700000000, "timestamp": 1700000000, "name": self.name,
            "title": self.title or self.name, "mimetype": self.mimetype, "filetype": ext,
            "pretty_type": ext.upper(), "user": self.user, "user_team": team, "editable": False,
            "size": size, "mode": "hosted", "is_external": False,
            "external_type": "", "is_public": False, "public_url_shared": False,
            "display_as_bot": False, "username": "", "url_private": private,
            "url_private_download": f"{base_url}/files-pri/{team}-{self.id}/download/{self.name}",
            "permalink": f"{base_url}/files/{self.user}/{self.id}/{self.name}",
            "channels": list(self.channels), "groups": [], "ims": [], "comments_count": 0,
        }  # fmt: skip


class Ids:
    """Slack-shaped ids (``C…``, ``F…``, ``Ev…``) and strictly increasing message ``ts``."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._ts = itertools.count(100)
        self._base = int(time.time())

    def new(self, prefix: str) -> str:
        """A fresh id: ``prefix`` + 9 upper-case base-36 digits (as Slack's look)."""
        n = next(self._counter)
        digits = ""
        while n or len(digits) < 9:
            n, r = divmod(n, 36)
            digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[r] + digits
        return prefix + digits

    def ts(self) -> str:
        """A message timestamp ``"<seconds>.<6 digits>"``, unique and increasing."""
        n = next(self._ts)
        return f"{self._base + n // 1_000_000}.{n % 1_000_000:06d}"


@dataclass(slots=True)
class Store:
    """The fake's state. Tests read it through :class:`~.server.FakeSlackServer`'s helpers."""

    channels: dict[str, Channel] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    messages: dict[tuple[str, str], SlackMessage] = field(default_factory=dict)
    #: messages per channel in posting order (a dict keeps order and deletes in O(1))
    by_channel: defaultdict[str, dict[str, SlackMessage]] = field(default_factory=lambda: defaultdict(dict))
    #: messages per thread (parent and replies, keyed by the parent's ts), in posting order
    by_thread: defaultdict[tuple[str, str], list[SlackMessage]] = field(
        default_factory=lambda: defaultdict(list)
    )
    files: dict[str, StoredFile] = field(default_factory=dict)
    ephemeral: list[dict[str, Any]] = field(default_factory=list)
    assistant: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[TimelineRecord] = field(default_factory=list)
    by_method: defaultdict[str, list[TimelineRecord]] = field(default_factory=lambda: defaultdict(list))
    count_429: int = 0
    inside_retry_after: int = 0

    def record(self, entry: TimelineRecord) -> None:
        """Append to the timeline and its indexes (O(1))."""
        self.timeline.append(entry)
        self.by_method[entry.method].append(entry)
        if entry.status == 429:
            self.count_429 += 1
        if entry.inside_retry_after:
            self.inside_retry_after += 1

    def add_message(self, message: SlackMessage) -> None:
        """Remember a message in its channel."""
        self.messages[(message.channel, message.ts)] = message
        self.by_channel[message.channel][message.ts] = message
        self.by_thread[(message.channel, message.thread_ts or message.ts)].append(message)

    def thread(self, channel: str, thread_ts: str) -> list[SlackMessage]:
        """The parent and its replies, oldest first (deleted ones left out); O(thread size)."""
        return [m for m in self.by_thread.get((channel, thread_ts), ()) if not m.deleted]
