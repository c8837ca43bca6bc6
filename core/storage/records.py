"""What :class:`~relaybot.core.storage.Store` hands back: plain, immutable records.

The records carry domain types from :mod:`relaybot.core.contracts.models` (``ChatKey``, ``Role``,
``ReplyStatus``, ``Usage``, content parts), never database rows, so callers do not depend on
SQLAlchemy.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from relaybot.core.contracts.errors import StorageError
from relaybot.core.contracts.models import (
    ChatKey,
    ContentPart,
    ImagePart,
    ImageRef,
    ReplyStatus,
    Role,
    TextPart,
    Usage,
    VideoPart,
    VideoRef,
)


class _UseLeaf(enum.Enum):
    USE_LEAF = "USE_LEAF"

    def __repr__(self) -> str:
        return "USE_LEAF"


USE_LEAF: Final = _UseLeaf.USE_LEAF
"""Default ``parent_id`` of :meth:`Store.add_message`: attach to the conversation's leaf."""

UseLeaf = _UseLeaf


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to append with :meth:`Store.add_messages` (the fields of ``add_message``)."""

    role: Role
    parts: list[ContentPart]
    token_count: int = 0
    token_estimated: bool = False
    status: ReplyStatus = ReplyStatus.COMPLETE
    user_id: str = ""
    provider: str = ""
    model: str = ""


class NotFoundError(StorageError, LookupError):
    """A conversation or message id given to the store does not exist (any more).

    Usually a race with a deletion, or a stale id; the database itself is fine.
    """

    user_message = "That conversation or message no longer exists."


class AlreadyStoredError(StorageError):
    """The platform message was stored before (a re-delivered event): nothing was written.

    ``message_id`` is the stored message it was linked to the first time.
    """

    user_message = "That message was received already."

    def __init__(self, message: str, message_id: int) -> None:
        super().__init__(message)
        self.message_id = message_id


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation: the path from ``root_id`` to ``leaf_id`` in its chat's message tree.

    ``number`` is the 1-based position among the chat's conversations, oldest first (what
    ``/switch 2`` refers to); 0 when the store did not compute it. ``message_count`` is the
    length of the path, filled by :meth:`Store.list_conversations` only (``None`` elsewhere).
    ``root_id``/``leaf_id`` are ``None`` for a conversation without messages.
    """

    id: int
    chat: ChatKey
    title: str
    root_id: int | None
    leaf_id: int | None
    number: int
    created_at: datetime
    updated_at: datetime
    message_count: int | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One stored message (a node of the chat's message tree).

    ``conversation_id`` is the conversation that created the message (``None`` once that
    conversation was deleted while another conversation's path still uses the message).
    ``text`` is the joined text of the text parts. ``usage`` is set on replies whose token
    usage was recorded. For an assistant reply, ``user_id`` is the user it answered, so usage
    can be totalled per user.
    """

    id: int
    conversation_id: int | None
    parent_id: int | None
    role: Role
    parts: list[ContentPart]
    text: str
    token_count: int
    token_estimated: bool
    status: ReplyStatus
    usage: Usage | None
    user_id: str
    provider: str
    model: str
    created_at: datetime
    updated_at: datetime


class MessagePath(list[StoredMessage]):
    """Messages of a path in root→leaf order, plus whether older ones were left out.

    It *is* a ``list`` (so ``for m in store.path(...)`` and indexing work); ``truncated`` is
    true when the token budget or the limit stopped the walk before the root, i.e. the
    conversation has older messages that are not included.
    """

    __slots__ = ("truncated",)

    def __init__(self, messages: Iterable[StoredMessage] = (), *, truncated: bool = False):
        super().__init__(messages)
        self.truncated = truncated

    @property
    def messages(self) -> list[StoredMessage]:
        """The messages as a plain list (a copy)."""
        return list(self)

    @property
    def token_count(self) -> int:
        """Sum of the messages' token counts."""
        return sum(m.token_count for m in self)

    def __repr__(self) -> str:
        return f"MessagePath({list.__repr__(self)}, truncated={self.truncated})"


# -- content parts <-> JSON -------------------------------------------------------------------


def parts_to_json(parts: Iterable[ContentPart]) -> list[dict[str, Any]]:
    """Serialise content parts for the ``messages.parts`` JSON column (and for export)."""
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            out.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            image = part.image
            item: dict[str, Any] = {"type": "image", "uri": image.uri, "mime_type": image.mime_type}
            for key in ("width", "height", "size_bytes"):
                value = getattr(image, key)
                if value is not None:
                    item[key] = value
            out.append(item)
        elif isinstance(part, VideoPart):
            video = part.video
            item = {"type": "video", "uri": video.uri, "mime_type": video.mime_type}
            item["has_audio"] = video.has_audio
            for key in ("duration", "width", "height", "size_bytes"):
                value = getattr(video, key)
                if value is not None:
                    item[key] = value
            out.append(item)
        else:  # pragma: no cover - guarded by the type checker
            raise TypeError(f"not a content part: {part!r}")
    return out


def parts_from_json(data: Iterable[Mapping[str, Any]]) -> list[ContentPart]:
    """Rebuild content parts. Part types this version does not know are skipped, so a
    database written by a newer relaybot still loads."""
    parts: list[ContentPart] = []
    for item in data:
        kind = item.get("type")
        if kind == "text":
            parts.append(TextPart(str(item.get("text", ""))))
        elif kind == "image":
            parts.append(
                ImagePart(
                    ImageRef(
                        uri=str(item["uri"]),
                        mime_type=str(item.get("mime_type", "image/jpeg")),
                        width=item.get("width"),
                        height=item.get("height"),
                        size_bytes=item.get("size_bytes"),
                    )
                )
            )
        elif kind == "video":
            parts.append(
                VideoPart(
                    VideoRef(
                        uri=str(item["uri"]),
                        mime_type=str(item.get("mime_type", "video/mp4")),
                        duration=item.get("duration"),
                        width=item.get("width"),
                        height=item.get("height"),
                        size_bytes=item.get("size_bytes"),
                        has_audio=bool(item.get("has_audio", False)),
                    )
                )
            )
    return parts


def joined_text(parts: Iterable[ContentPart]) -> str:
    """The text parts joined, as stored in ``messages.text`` for search and export."""
    return "".join(p.text for p in parts if isinstance(p, TextPart))


def replace_text(parts: list[ContentPart], text: str) -> list[ContentPart]:
    """``parts`` with its text parts replaced by one part holding ``text`` (where the first
    text part was; first if there was none). Images stay where they were."""
    out: list[ContentPart] = []
    placed = False
    for part in parts:
        if isinstance(part, TextPart):
            if not placed:
                out.append(TextPart(text))
                placed = True
        else:
            out.append(part)
    if not placed:
        out.insert(0, TextPart(text))
    return out


def export_message(message: StoredMessage) -> dict[str, Any]:
    """A stored message as JSON-ready data (see ``Store.export_conversation``)."""
    usage = message.usage
    return {
        "id": message.id,
        "parent_id": message.parent_id,
        "role": message.role.value,
        "text": message.text,
        "parts": parts_to_json(message.parts),
        "status": message.status.value,
        "user_id": message.user_id,
        "provider": message.provider,
        "model": message.model,
        "token_count": message.token_count,
        "usage": None
        if usage is None
        else {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "estimated": usage.estimated,
        },
        "created_at": message.created_at.isoformat(),
    }
