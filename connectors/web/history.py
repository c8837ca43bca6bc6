"""Conversations and history as the page sees them (JSON shapes, paging, ownership, export)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from relaybot import Conversation, ImagePart, ImageRef, StoredMessage, VideoPart, VideoRef

from .security import ApiError

if TYPE_CHECKING:
    from .connector import WebConnector

DEFAULT_PAGE = 50
MAX_PAGE = 200
#: ids are 64-bit signed integers in both databases; anything outside cannot exist
MAX_ID = 2**63 - 1


def valid_id(value: Any) -> bool:
    """True when ``value`` is an int that could be a stored id (bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def conversation_json(conv: Conversation, *, active: bool) -> dict[str, Any]:
    """A conversation for the sidebar."""
    return {
        "id": conv.id,
        "number": conv.number,
        "title": conv.title or "New chat",
        "active": active,
        "message_count": conv.message_count,
        "created_at": conv.created_at.isoformat(),
        "updated_at": conv.updated_at.isoformat(),
    }


def media_json(ref: ImageRef | VideoRef) -> dict[str, Any]:
    """An attachment for the page: its URL and size; videos also ``kind`` and ``duration``."""
    from .connector import media_url

    item: dict[str, Any] = {"url": media_url(ref.uri), "width": ref.width, "height": ref.height}
    if isinstance(ref, VideoRef):
        item.update(kind="video", duration=ref.duration)
    return item


def message_json(message: StoredMessage) -> dict[str, Any]:
    """A stored message for the page: text, images and videos (as URLs), status."""
    images = [
        media_json(p.image if isinstance(p, ImagePart) else p.video)
        for p in message.parts
        if isinstance(p, ImagePart | VideoPart)
    ]
    return {
        "id": message.id,
        "parent_id": message.parent_id,
        "role": message.role.value,
        "text": message.text,
        "images": images,
        "status": message.status.value,
        "created_at": message.created_at.isoformat(),
    }


async def owned_conversation(connector: WebConnector, client: str, conversation_id: Any) -> Conversation:
    """The conversation ``conversation_id`` if it belongs to ``client``'s chat, else 404.

    Another browser's conversation answers exactly like a missing one, so ids reveal nothing.
    """
    conv = None
    if valid_id(conversation_id):
        conv = await connector.core.conversations(connector.chat_of(client)).get(conversation_id)
    if conv is None:
        raise ApiError(404, "no such conversation")
    return conv


async def history_page(
    connector: WebConnector, conv: Conversation, query: Mapping[str, str]
) -> dict[str, Any]:
    """One page of a conversation, oldest first: the newest ``limit`` messages before ``before``.

    ``has_more`` says whether older messages exist (ask again with ``before`` = the first id).
    """
    try:
        limit = int(query.get("limit", DEFAULT_PAGE))
        before = int(query["before"]) if query.get("before") else None
    except ValueError:
        raise ApiError(400, "limit and before must be integers") from None
    limit = max(1, min(limit, MAX_PAGE))
    page = await connector.core.conversations(conv.chat).page(conv.id, before=before, limit=limit)
    if page is None:
        raise ApiError(404, "no such message in this conversation")
    return {
        "conversation_id": conv.id,
        "messages": [message_json(m) for m in page.messages],
        "has_more": page.has_more,
    }


def export_response(conv: Conversation, fmt: str, text: str) -> Response:
    """The export as a download named after the conversation."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", conv.title or "conversation").strip("-")[:60] or "conversation"
    media = "application/json" if fmt == "json" else "text/markdown; charset=utf-8"
    if fmt == "json":
        text = json.dumps(json.loads(text), ensure_ascii=False, indent=2)
    return Response(
        text, media_type=media, headers={"Content-Disposition": f'attachment; filename="{stem}.{fmt}"'}
    )
