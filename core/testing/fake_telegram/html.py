"""``parse_mode="HTML"``, parsed the way Telegram's server (TDLib ``parse_html``) does.

Supported tags: ``b strong i em u ins s strike del tg-spoiler span class="tg-spoiler" a href
code pre blockquote [expandable] tg-emoji emoji-id``. Only ``&lt; &gt; &amp; &quot;`` and
numeric character references are decoded; any other ``&...;`` stays literal. A bare ``<`` that
does not start a supported tag is an error, exactly like on Telegram.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from relaybot.core.testing.fake_telegram.entities import (
    Entity,
    EntityParseError,
    char_units,
    sort_entities,
    utf8_offset,
)

_TAGS = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "tg-spoiler": "spoiler", "span": "spoiler", "a": "text_link", "code": "code", "pre": "pre",
    "blockquote": "blockquote", "tg-emoji": "custom_emoji",
}  # fmt: skip
_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY_REF = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|lt|gt|amp|quot);")
_ATTRIBUTE = re.compile(r"""\s*([a-zA-Z_][a-zA-Z0-9_-]*)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>"']+))?""")


@dataclass(slots=True)
class _Open:
    tag: str
    type: str
    offset: int
    out_index: int  # index into the output pieces: a link without href links to its text
    attributes: dict[str, str] = field(default_factory=dict)


def _unescape(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref[0] != "#":
            return _NAMED[ref]
        code = int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else match.group()

    return _ENTITY_REF.sub(replace, text) if "&" in text else text


def parse_html(text: str) -> tuple[str, list[Entity]]:
    """Return the visible text and its entities, or raise :class:`EntityParseError`."""
    out: list[str] = []
    entities: list[Entity] = []
    stack: list[_Open] = []
    units = 0
    n = len(text)
    i = 0
    while i < n:
        lt = text.find("<", i)
        chunk_end = n if lt == -1 else lt
        if chunk_end > i:
            chunk = _unescape(text[i:chunk_end])
            out.append(chunk)
            units += len(chunk) if chunk.isascii() else sum(char_units(c) for c in chunk)
            i = chunk_end
            continue
        begin = i
        if text.startswith("</", i):
            close = text.find(">", i)
            if close == -1:
                raise EntityParseError(f"Unclosed end tag at byte offset {utf8_offset(text, begin)}")
            if not stack:
                raise EntityParseError(f"Unexpected end tag at byte offset {utf8_offset(text, begin)}")
            name = text[i + 2 : close].strip().lower()
            opened = stack.pop()
            if name and name != opened.tag:
                raise EntityParseError(
                    f"Unmatched end tag at byte offset {utf8_offset(text, begin)}, "
                    f'expected "</{opened.tag}>", found "</{name}>"'
                )
            _finish(opened, units, out, entities)
            i = close + 1
            continue
        # like TDLib: the tag name runs to the first space or '>'
        name_end = i + 1
        while name_end < n and not text[name_end].isspace() and text[name_end] != ">":
            name_end += 1
        if name_end >= n:
            raise EntityParseError(f"Unclosed start tag at byte offset {utf8_offset(text, begin)}")
        tag = text[i + 1 : name_end].lower()
        if tag not in _TAGS:
            raise EntityParseError(f'Unsupported start tag "{tag}" at byte offset {utf8_offset(text, begin)}')
        close = text.find(">", name_end)
        if close == -1:
            raise EntityParseError(f"Unclosed start tag at byte offset {utf8_offset(text, begin)}")
        attributes = {
            m.group(1).lower(): _unescape((m.group(2) or "").strip("\"'"))
            for m in _ATTRIBUTE.finditer(text[name_end:close])
        }
        kind = _TAGS[tag]
        if tag == "span" and attributes.get("class") != "tg-spoiler":
            raise EntityParseError(
                f'Tag "span" must have class "tg-spoiler" at byte offset {utf8_offset(text, begin)}'
            )
        if tag == "tg-emoji" and not attributes.get("emoji-id"):
            raise EntityParseError(
                f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {utf8_offset(text, begin)}'
            )
        if tag == "blockquote" and "expandable" in attributes:
            kind = "expandable_blockquote"
        stack.append(_Open(tag, kind, units, len(out), attributes))
        i = close + 1
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    return "".join(out), _merge_pre_code(sort_entities(entities))


def _finish(opened: _Open, units: int, out: list[str], entities: list[Entity]) -> None:
    length = units - opened.offset
    if length <= 0:
        return
    entity: Entity = {"type": opened.type, "offset": opened.offset, "length": length}
    attributes = opened.attributes
    if opened.type == "text_link":
        url = attributes.get("href") or "".join(out[opened.out_index :])
        if url.startswith("tg://user?id=") and url[13:].isdigit():
            entity.update(type="text_mention",
                          user={"id": int(url[13:]), "is_bot": False, "first_name": ""})  # fmt: skip
        elif not url.strip():
            return
        else:
            entity["url"] = url
    elif opened.type == "custom_emoji":
        entity["custom_emoji_id"] = attributes["emoji-id"]
    elif opened.type == "code" and attributes.get("class", "").startswith("language-"):
        entity["language"] = attributes["class"].removeprefix("language-")
    entities.append(entity)


def _merge_pre_code(entities: list[Entity]) -> list[Entity]:
    """``<pre><code class="language-x">`` is one ``pre`` entity with ``language`` x."""
    pre_ranges = {(e["offset"], e["length"]): e for e in entities if e["type"] == "pre"}
    result: list[Entity] = []
    for entity in entities:
        if entity["type"] == "code":
            pre = pre_ranges.get((entity["offset"], entity["length"]))
            if pre is not None:
                if "language" in entity:
                    pre["language"] = entity["language"]
                continue
            entity.pop("language", None)  # only pre carries a language on Telegram
        result.append(entity)
    return result
