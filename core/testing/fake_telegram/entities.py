"""Telegram text rules shared by the parsers: UTF-16 lengths, entity checks, trimming, auto links.

Telegram measures text and entity offsets in **UTF-16 code units** (an emoji outside the
Basic Multilingual Plane counts 2). Every function here works in those units so the fake
answers exactly what the real Bot API would for offsets, lengths and limits.
"""

from __future__ import annotations

import re
from typing import Any

#: Entity types a bot may send (the Bot API ``MessageEntity.type`` values).
ENTITY_TYPES = frozenset(
    {
        "mention", "hashtag", "cashtag", "bot_command", "url", "email", "phone_number",
        "bold", "italic", "underline", "strikethrough", "spoiler", "blockquote",
        "expandable_blockquote", "code", "pre", "text_link", "text_mention", "custom_emoji",
    }
)  # fmt: skip

#: Pure formatting: auto-detected links and commands may sit inside these.
_FORMATTING = frozenset(
    {"bold", "italic", "underline", "strikethrough", "spoiler", "blockquote",
     "expandable_blockquote"}
)  # fmt: skip

Entity = dict[str, Any]


class EntityParseError(ValueError):
    """Markup or an entity list Telegram would refuse.

    ``str(error)`` is the part after ``"Bad Request: can't parse entities: "``.
    """


def utf16_len(text: str) -> int:
    """Length of ``text`` in UTF-16 code units (Telegram's unit for limits and offsets)."""
    if text.isascii():  # the common case, and far cheaper than encoding
        return len(text)
    return len(text.encode("utf-16-le")) // 2


def char_units(char: str) -> int:
    """UTF-16 units of one character: 2 for astral characters (most emoji), else 1."""
    return 2 if ord(char) > 0xFFFF else 1


def utf8_offset(text: str, index: int) -> int:
    """Byte offset of character ``index`` in UTF-8 (Telegram's parse errors report bytes)."""
    return len(text[:index].encode("utf-8"))


def sort_entities(entities: list[Entity]) -> list[Entity]:
    """Order entities as Telegram returns them: by offset, then longer (outer) first."""
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return entities


def validate_entities(text: str, raw: Any) -> list[Entity]:
    """Check an explicit ``entities`` array against ``text`` and return normalised copies.

    Raises :class:`EntityParseError` for a non-list, an unknown type, a missing required field
    (``url`` for ``text_link``, ``user`` for ``text_mention``, ``custom_emoji_id``) or a range
    outside the text. Zero-length entities are dropped, as Telegram does.
    """
    if not isinstance(raw, list):
        raise EntityParseError("entities must be a JSON array")
    total = utf16_len(text)
    result: list[Entity] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise EntityParseError(f"entity {index} is not an object")
        kind, offset, length = item.get("type"), item.get("offset"), item.get("length")
        if kind not in ENTITY_TYPES:
            raise EntityParseError(f"entity {index} has unsupported type {kind!r}")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
            raise EntityParseError(f"entity {index} needs non-negative integer offset and length")
        if offset + length > total:
            raise EntityParseError(
                f"entity {index} (offset {offset}, length {length}) ends beyond the text "
                f"({total} UTF-16 code units)"
            )
        if length == 0:
            continue
        entity: Entity = {"type": kind, "offset": offset, "length": length}
        for key, needed_by in (("url", "text_link"), ("custom_emoji_id", "custom_emoji")):
            if kind == needed_by:
                if not isinstance(item.get(key), str) or not item[key]:
                    raise EntityParseError(f"entity {index} of type {kind} needs {key}")
                entity[key] = item[key]
        if kind == "text_mention":
            user = item.get("user")
            if not isinstance(user, dict) or not isinstance(user.get("id"), int):
                raise EntityParseError(f"entity {index} of type text_mention needs user.id")
            entity["user"] = {"id": user["id"], "is_bot": False, "first_name": "", **user}
        if kind == "pre" and isinstance(item.get("language"), str) and item["language"]:
            entity["language"] = item["language"]
        result.append(entity)
    return sort_entities(result)


def trim(text: str, entities: list[Entity]) -> tuple[str, list[Entity]]:
    """Strip leading/trailing whitespace like Telegram, shifting and clipping entities.

    Whitespace covered by an entity (e.g. indentation inside ``pre``) is kept.
    """
    stripped = text.strip()
    if stripped == text:
        return text, entities
    if not stripped:
        return "", []
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    end = utf16_len(text) - utf16_len(text[len(text.rstrip()) :])
    if entities:
        lead = min(lead, min(e["offset"] for e in entities))
        end = max(end, max(e["offset"] + e["length"] for e in entities))
    units = text.encode("utf-16-le")
    new_text = units[2 * lead : 2 * end].decode("utf-16-le")
    shifted = []
    for entity in entities:
        start = max(entity["offset"], lead) - lead
        stop = min(entity["offset"] + entity["length"], end) - lead
        if stop > start:
            shifted.append({**entity, "offset": start, "length": stop - start})
    return new_text, shifted


_AUTO_PATTERN = re.compile(
    r"(?P<url>\bhttps?://[^\s<>\"']+)"
    r"|(?<![\w/])(?P<bot_command>/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?)(?![\w/])"
    r"|(?<![\w@])(?P<mention>@[A-Za-z][A-Za-z0-9_]{4,31})(?!\w)"
    r"|(?<![\w#])(?P<hashtag>#\w*[^\W\d]\w*)"
)
_URL_TAIL = ".,;:!?)]}'\""


def detect_entities(text: str, entities: list[Entity]) -> list[Entity]:
    """Add the entities Telegram detects by itself: URLs, ``/commands``, ``@mentions``, hashtags.

    Nothing is detected inside code, pre or links, nor over another non-formatting entity.
    Returns a new sorted list (``entities`` itself is not modified).
    """
    if not any(mark in text for mark in ("/", "@", "#")):
        return entities
    blocked = [(e["offset"], e["offset"] + e["length"]) for e in entities if e["type"] not in _FORMATTING]
    found: list[Entity] = []
    for match in _AUTO_PATTERN.finditer(text):
        kind = match.lastgroup or "url"
        value = match.group()
        if kind == "url":
            value = value.rstrip(_URL_TAIL)
        start = utf16_len(text[: match.start()])
        stop = start + utf16_len(value)
        if any(start < b_stop and b_start < stop for b_start, b_stop in blocked):
            continue
        found.append({"type": kind, "offset": start, "length": stop - start})
    if not found:
        return entities
    return sort_entities([*entities, *found])
