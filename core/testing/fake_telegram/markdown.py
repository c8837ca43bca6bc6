"""``parse_mode="MarkdownV2"`` and legacy ``"Markdown"``, parsed the way Telegram's server does.

The rules (and error texts) follow TDLib's ``parse_markdown_v2`` / ``parse_markdown``, which the
Bot API runs: in MarkdownV2 every one of ``_*[]()~`>#+-=|{}.!`` outside an entity delimiter must
be escaped with ``\\``; inside ``code``/``pre`` only ``` ` ``` and ``\\`` need escaping; an
unclosed delimiter fails with ``Can't find end of <Type> entity at byte offset N``.
"""

from __future__ import annotations

from dataclasses import dataclass

from relaybot.core.testing.fake_telegram.entities import (
    Entity,
    EntityParseError,
    char_units,
    sort_entities,
    utf8_offset,
)

_RESERVED_V2 = frozenset("_*[]()~`>#+-=|{}.!")
_CODE_TYPES = frozenset({"code", "pre"})
#: TDLib's names for entity types, as they appear in its parse errors.
_TDLIB_NAMES = {
    "bold": "Bold", "italic": "Italic", "underline": "Underline", "strikethrough": "Strikethrough",
    "spoiler": "Spoiler", "code": "Code", "pre": "Pre", "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}  # fmt: skip


@dataclass(slots=True)
class _Open:
    type: str
    offset: int  # UTF-16 offset in the visible text where the entity starts
    source_index: int  # character index in the markup (for byte offsets in errors)
    out_index: int  # index into the output pieces (the link text doubles as its URL)
    language: str = ""


def _reserved(char: str) -> EntityParseError:
    return EntityParseError(f"Character '{char}' is reserved and must be escaped with the preceding '\\'")


def parse_markdown_v2(text: str) -> tuple[str, list[Entity]]:
    """Return the visible text and its entities, or raise :class:`EntityParseError`."""
    out: list[str] = []
    entities: list[Entity] = []
    stack: list[_Open] = []
    units = 0  # UTF-16 offset of the next visible character
    quote: _Open | None = None  # an open (expandable) block quote: lines starting with '>'
    n = len(text)
    i = 0

    def close_quote() -> None:
        nonlocal quote
        if quote is not None and units > quote.offset:
            entities.append({"type": quote.type, "offset": quote.offset,
                             "length": units - quote.offset})  # fmt: skip
        quote = None

    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        at_line_start = (i == 0 or text[i - 1] == "\n") and not (stack and stack[-1].type == "pre")
        if at_line_start:
            if c == ">" or text.startswith("**>", i):
                expandable = c == "*"
                if quote is None:
                    kind = "expandable_blockquote" if expandable else "blockquote"
                    quote = _Open(kind, units, i, len(out))
                i += 3 if expandable else 1
                continue
            if quote is not None:
                # the '\n' that ended the quote's last line stays outside the entity
                units -= 1
                close_quote()
                units += 1
        if c == "\\" and nxt and 0 < ord(nxt) <= 126:
            out.append(nxt)
            units += 1
            i += 2
            continue
        top = stack[-1] if stack else None
        in_code = top is not None and top.type in _CODE_TYPES
        if (c != "`") if in_code else (c not in _RESERVED_V2):
            out.append(c)
            units += char_units(c)
            i += 1
            continue
        if (
            quote is not None
            and quote.type == "expandable_blockquote"
            and text.startswith("||", i)
            and (i + 2 == n or text[i + 2] == "\n")
            and not any(o.type == "spoiler" for o in stack)
        ):
            close_quote()
            i += 2
            continue
        if top is not None and _ends(top.type, text, i):
            i = _close(top, text, i, out, units, entities)
            stack.pop()
            continue
        # an entity starts here
        start = i
        language = ""
        if c == "_":
            kind = "underline" if nxt == "_" else "italic"
            i += 2 if nxt == "_" else 1
        elif c == "*":
            kind, i = "bold", i + 1
        elif c == "~":
            kind, i = "strikethrough", i + 1
        elif c == "|":
            if nxt != "|":
                raise _reserved(c)
            kind, i = "spoiler", i + 2
        elif c == "[":
            kind, i = "text_link", i + 1
        elif c == "!":
            if nxt != "[":
                raise _reserved(c)
            kind, i = "custom_emoji", i + 2
        elif c == "`":
            if text.startswith("```", i):
                kind, i = "pre", i + 3
                end = i
                while end < n and not text[end].isspace() and text[end] != "`":
                    end += 1
                if end != i and end < n and text[end] != "`":
                    language, i = text[i:end], end
                if i < n and text[i] in "\r\n":  # one newline after the fence is not content
                    i += 2 if text[i : i + 2] in ("\r\n", "\n\r") else 1
            else:
                kind, i = "code", i + 1
        else:
            raise _reserved(c)
        stack.append(_Open(kind, units, start, len(out), language))
    if stack:
        opened = stack[-1]
        raise EntityParseError(
            f"Can't find end of {_TDLIB_NAMES[opened.type]} entity at byte offset "
            f"{utf8_offset(text, opened.source_index)}"
        )
    close_quote()
    return "".join(out), sort_entities(entities)


def _ends(kind: str, text: str, i: int) -> bool:
    c = text[i]
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if kind == "bold":
        return c == "*"
    if kind == "italic":
        return c == "_" and nxt != "_"
    if kind == "underline":
        return c == "_" and nxt == "_"
    if kind == "strikethrough":
        return c == "~"
    if kind == "spoiler":
        return c == "|" and nxt == "|"
    if kind == "code":
        return c == "`"
    if kind == "pre":
        return text.startswith("```", i)
    return c == "]"  # text_link, custom_emoji


def _close(opened: _Open, text: str, i: int, out: list[str], units: int, entities: list[Entity]) -> int:
    """Finish ``opened`` at markup index ``i``; append its entity; return the next index."""
    kind = opened.type
    extra: dict[str, str] = {}
    if kind in ("underline", "spoiler"):
        i += 2
    elif kind == "pre":
        i += 3
    elif kind in ("text_link", "custom_emoji"):
        i += 1
        if i < len(text) and text[i] == "(":
            i += 1
            url_start = i
            url: list[str] = []
            while i < len(text) and text[i] != ")":
                if text[i] == "\\" and i + 1 < len(text) and 0 < ord(text[i + 1]) <= 126:
                    url.append(text[i + 1])
                    i += 2
                    continue
                url.append(text[i])
                i += 1
            if i >= len(text):
                raise EntityParseError(
                    f"Can't find end of a URL at byte offset {utf8_offset(text, url_start)}"
                )
            i += 1
            target = "".join(url)
        else:
            target = "".join(out[opened.out_index :])  # "[https://x.org]" links to itself
        if kind == "custom_emoji":
            if not target.startswith("tg://emoji?id="):
                raise EntityParseError("Custom emoji entity must contain a tg://emoji URL")
            extra["custom_emoji_id"] = target.removeprefix("tg://emoji?id=")
        elif target.startswith("tg://user?id=") and target[13:].isdigit():
            kind = "text_mention"
            extra["user"] = {"id": int(target[13:]), "is_bot": False, "first_name": ""}  # type: ignore[assignment]
        elif not target.strip():
            return i  # Telegram silently drops a link without a usable URL
        else:
            extra["url"] = target
    else:
        i += 1
    if kind == "pre" and opened.language:
        extra["language"] = opened.language
    if units > opened.offset:  # empty entities are dropped
        entities.append({"type": kind, "offset": opened.offset,
                         "length": units - opened.offset, **extra})  # fmt: skip
    return i


def parse_markdown(text: str) -> tuple[str, list[Entity]]:
    """Legacy ``parse_mode="Markdown"``: ``*bold*``, ``_italic_``, `` `code` ``, pre, links.

    Entities cannot nest; an unclosed one fails with
    ``Can't find end of the entity starting at byte offset N``.
    """
    out: list[str] = []
    entities: list[Entity] = []
    units = 0
    n = len(text)
    i = 0
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            units += 1
            i += 2
            continue
        if c not in "_*`[":
            out.append(c)
            units += char_units(c)
            i += 1
            continue
        begin = i
        end_char = "]" if c == "[" else c
        is_pre = c == "`" and text.startswith("```", i)
        language = ""
        i += 3 if is_pre else 1
        if is_pre:
            end = i
            while end < n and not text[end].isspace() and text[end] != "`":
                end += 1
            if end != i and end < n and text[end] != "`":
                language, i = text[i:end], end
            if i < n and text[i] in "\r\n":
                i += 1
        offset = units
        content_start = len(out)
        while i < n and not (text.startswith("```", i) if is_pre else text[i] == end_char):
            out.append(text[i])
            units += char_units(text[i])
            i += 1
        if i >= n:
            raise EntityParseError(
                f"Can't find end of the entity starting at byte offset {utf8_offset(text, begin)}"
            )
        i += 3 if is_pre else 1
        entity: Entity = {"offset": offset, "length": units - offset}
        if c == "_":
            entity["type"] = "italic"
        elif c == "*":
            entity["type"] = "bold"
        elif c == "`":
            entity["type"] = "pre" if is_pre else "code"
            if language:
                entity["language"] = language
        else:
            url = "".join(out[content_start:])
            if i < n and text[i] == "(":
                close = text.find(")", i)
                if close != -1:
                    url, i = text[i + 1 : close], close + 1
            entity.update(type="text_link", url=url)
        if entity["length"] > 0:
            entities.append(entity)
    return "".join(out), sort_entities(entities)
