"""What the fake remembers: chats, messages, files, drafts and the timeline of bot calls.

Everything a test asserts on lives here, indexed so that recording a call and looking up a
message are O(1): the benchmark drives hundreds of chats through one fake.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from relaybot.core.testing.fake_telegram.entities import Entity


class TimelineRecord(NamedTuple):
    """One Bot API call as the fake saw it (unpacks as a 7-tuple).

    ``t`` is the fake's clock; ``chat_id``/``message_id``/``text`` are filled when the method
    has them (``text`` is the visible text after entity parsing, or the caption);
    ``status_code`` is the HTTP status answered (200, 400, 429 ...); ``extra`` holds the rest
    (``description`` of an error, ``retry_after``, ``draft_id``, ``action``, ...).
    """

    t: float
    method: str
    chat_id: int | str | None
    message_id: int | None
    text: str | None
    status_code: int
    extra: dict[str, Any]


@dataclass(slots=True)
class ChatInfo:
    """A chat the fake knows: created by an injected user message or :meth:`add_chat`."""

    id: int
    type: str  # private | group | supergroup | channel
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    is_forum: bool = False
    kicked: bool = False

    def to_api(self) -> dict[str, Any]:
        """The Bot API ``Chat`` object."""
        chat: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            chat["first_name"] = self.first_name or f"User{self.id}"
            if self.username:
                chat["username"] = self.username
        else:
            chat["title"] = self.title or f"Chat {self.id}"
            if self.username:
                chat["username"] = self.username
            if self.is_forum:
                chat["is_forum"] = True
        return chat


@dataclass(slots=True)
class StoredMessage:
    """A message in a chat (sent by the bot or injected as a user's).

    ``text`` is the visible text (entities already parsed out) or the caption; ``entities``
    are Bot API ``MessageEntity`` dicts in UTF-16 units; ``edit_count`` counts successful
    edits; ``api`` is the last ``Message`` object returned for it.
    """

    chat_id: int
    message_id: int
    from_bot: bool
    text: str
    entities: list[Entity]
    api: dict[str, Any]
    reply_markup: Any = None
    thread_id: int | None = None
    edit_count: int = 0
    deleted: bool = False
    kind: str = "text"  # text | photo | document | other


@dataclass(slots=True)
class StoredFile:
    """An uploaded or injected file, downloadable at ``/file/bot<token>/<file_path>``."""

    file_id: str
    file_unique_id: str
    data: bytes
    file_path: str
    filename: str
    mime_type: str


@dataclass(slots=True)
class DraftRecord:
    """One accepted ``sendMessageDraft`` frame."""

    t: float
    draft_id: int
    text: str
    entities: list[Entity]
    thread_id: int | None


@dataclass(slots=True)
class Store:
    """The fake's state. Tests read it through :class:`FakeTelegramServer`'s helpers."""

    chats: dict[int, ChatInfo] = field(default_factory=dict)
    messages: dict[tuple[int, int], StoredMessage] = field(default_factory=dict)
    #: bot messages per chat in send order (a dict keeps order and deletes in O(1))
    bot_messages: defaultdict[int, dict[int, StoredMessage]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    next_message_id: defaultdict[int, int] = field(default_factory=lambda: defaultdict(lambda: 1))
    files: dict[str, StoredFile] = field(default_factory=dict)
    files_by_path: dict[str, StoredFile] = field(default_factory=dict)
    drafts: defaultdict[int, list[DraftRecord]] = field(default_factory=lambda: defaultdict(list))
    timeline: list[TimelineRecord] = field(default_factory=list)
    by_chat: defaultdict[int | str, list[TimelineRecord]] = field(default_factory=lambda: defaultdict(list))
    by_method: defaultdict[str, list[TimelineRecord]] = field(default_factory=lambda: defaultdict(list))
    count_429: int = 0
    commands: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    callback_queries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, entry: TimelineRecord) -> None:
        """Append to the timeline and its indexes (O(1))."""
        self.timeline.append(entry)
        self.by_method[entry.method].append(entry)
        if entry.chat_id is not None:
            self.by_chat[entry.chat_id].append(entry)
        if entry.status_code == 429:
            self.count_429 += 1

    def new_message_id(self, chat_id: int) -> int:
        """Message ids are sequential per chat, shared by users and the bot (as on Telegram)."""
        message_id = self.next_message_id[chat_id]
        self.next_message_id[chat_id] = message_id + 1
        return message_id

    def add_message(self, message: StoredMessage) -> None:
        """Remember a message (and index it as the bot's when it is)."""
        self.messages[(message.chat_id, message.message_id)] = message
        if message.from_bot:
            self.bot_messages[message.chat_id][message.message_id] = message

    def delete_message(self, message: StoredMessage) -> None:
        """Mark deleted; it disappears from :attr:`bot_messages` but stays for lookups."""
        message.deleted = True
        self.bot_messages[message.chat_id].pop(message.message_id, None)

    def add_file(self, stored: StoredFile) -> None:
        """Make a file available to ``getFile`` and the download route."""
        self.files[stored.file_id] = stored
        self.files_by_path[stored.file_path] = stored
