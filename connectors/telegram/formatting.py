"""Model Markdown → Telegram text plus ``MessageEntity`` dicts (a pure function).

Telegram formats a message either from markup (``parse_mode``) or from an explicit list of
entities. We send entities: the server never parses anything, so a reply can never fail with
"can't parse entities" because of what the model wrote, and we decide what unclosed or odd
markup means (it stays literal text).

What is understood (the subset chat models actually write):

- fenced code blocks (```` ```lang ```` / ``~~~``, up to 3 spaces of indentation, as the
  streaming splitter counts them) → ``pre`` with ``language``; an unclosed fence runs to the end;
- inline code (any backtick run, closed by a run of the same length) → ``code``;
- ``**bold**`` / ``__bold__`` → ``bold``; ``*italic*`` / ``_italic_`` → ``italic``;
  ``***both***`` → both; ``~~strike~~`` → ``strikethrough`` (CommonMark flanking rules, so
  ``snake_case`` and ``2 * 3 * 4`` stay as they are);
- ``[text](url)`` and ``![alt](url)`` with an http(s)/tg/mailto URL → ``text_link``;
- ``# headings`` → ``bold``; ``> quotes`` → ``blockquote``; ``-``/``*``/``+`` list bullets →
  ``•`` (text); ``---`` rules → a line; backslash escapes of punctuation.

Guarantees (tested): entity offsets and lengths are in UTF-16 code units and lie inside the
text; entities nest and never partly overlap; the output text is never longer than the input
(so a part the splitter cut to fit still fits); at most :data:`MAX_ENTITIES` entities; the
text is stripped the way Telegram strips it, with entities shifted to match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

Entity = dict[str, Any]

#: Telegram honours about 100 entities per message; we never send more
MAX_ENTITIES = 100

# A fence line, exactly as relaybot.core.streaming.text counts fences (so split parts agree).
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_QUOTE = re.compile(r"^ {0,3}>[ ]?")
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+(?=\S)")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_BARE_URL = re.compile(r"https?://[^\s<>()\[\]]+")
_LINK_SCHEMES = ("http://", "https://", "tg://", "mailto:", "ftp://")
_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_RULE_TEXT = "———"


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (Telegram's unit for offsets, lengths and limits)."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) >> 1


def to_plain(markdown: str) -> str:
    """The visible text of :func:`markdown_to_entities` without the entities."""
    return markdown_to_entities(markdown)[0]


def markdown_to_entities(markdown: str) -> tuple[str, list[Entity]]:
    """Convert model Markdown to ``(text, entities)`` for ``sendMessage(entities=...)``.

    Never raises for any input string; see the module docstring for the guarantees.
    """
    out = _Builder()
    _render_blocks(markdown, out)
    text, entities = _strip(out.text(), out.entities)
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return text, entities[:MAX_ENTITIES]


# ── output buffer ──────────────────────────────────────────────────────────────────────────


@dataclass(slots=True)
class _Builder:
    pieces: list[str] = field(default_factory=list)
    units: int = 0
    entities: list[Entity] = field(default_factory=list)

    def add(self, text: str) -> None:
        if text:
            self.pieces.append(text)
            self.units += utf16_len(text)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        """Close an entity of ``kind`` that began at unit offset ``start`` (empty: dropped)."""
        if self.units > start:
            self.entities.append({"type": kind, "offset": start, "length": self.units - start, **extra})

    def text(self) -> str:
        return "".join(self.pieces)


def _strip(text: str, entities: list[Entity]) -> tuple[str, list[Entity]]:
    """Strip surrounding whitespace like Telegram does, shifting and clipping entities."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    if not stripped:
        return "", []
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    end = lead + utf16_len(stripped)
    kept = []
    for entity in entities:
        start = max(entity["offset"], lead)
        stop = min(entity["offset"] + entity["length"], end)
        if stop > start:
            kept.append({**entity, "offset": start - lead, "length": stop - start})
    return stripped, kept


# ── blocks ─────────────────────────────────────────────────────────────────────────────────


def _render_blocks(markdown: str, out: _Builder) -> None:
    """Render line by line: every source line but fence markers gives one output line."""
    lines = markdown.split("\n")
    i, n = 0, len(lines)
    emitted = False
    while i < n:
        if emitted:
            out.add("\n")
        emitted = True
        line = lines[i]
        if _fence(line) is not None:
            i = _render_fence(lines, i, out)
            continue
        kind = _line_kind(line)
        if kind == "text":
            # a paragraph is rendered as one piece, so emphasis may span its lines
            j = i + 1
            while j < n and _line_kind(lines[j]) == "text" and _fence(lines[j]) is None:
                j += 1
            _render_inline("\n".join(lines[i:j]), out)
            i = j
        elif kind == "blank":
            i += 1
        elif kind == "quote":
            start = out.units
            j = i
            while j < n and _line_kind(lines[j]) == "quote":
                j += 1
            _render_inline("\n".join(_QUOTE.sub("", q, count=1) for q in lines[i:j]), out)
            out.entity("blockquote", start)
            i = j
        elif kind == "heading":
            match = _HEADING.match(line)
            assert match is not None
            start = out.units
            _render_inline(match.group(2), out)
            out.entity("bold", start)
            i += 1
        elif kind == "rule":
            out.add(_RULE_TEXT)
            i += 1
        else:  # bullet
            match = _BULLET.match(line)
            assert match is not None
            out.add(match.group(1) + "• ")
            _render_inline(line[match.end() :], out)
            i += 1


def _fence(line: str) -> re.Match[str] | None:
    """A fence line (not ```inline``` code on one line, as the splitter decides too)."""
    match = _FENCE.match(line)
    if match is None or (match.group(1)[0] == "`" and "`" in match.group(2)):
        return None
    return match


def _line_kind(line: str) -> str:
    if not line.strip():
        return "blank"
    if _RULE.match(line):
        return "rule"
    if _HEADING.match(line):
        return "heading"
    if _QUOTE.match(line):
        return "quote"
    if _BULLET.match(line):
        return "bullet"
    return "text"


def _render_fence(lines: list[str], i: int, out: _Builder) -> int:
    """Render the code block opening at ``lines[i]``; return the index after it."""
    fence = _fence(lines[i])
    assert fence is not None
    marker = fence.group(1)
    language = fence.group(2).strip().split(" ", 1)[0] if fence.group(2).strip() else ""
    indent = len(lines[i]) - len(lines[i].lstrip(" "))
    body: list[str] = []
    j = i + 1
    while j < len(lines):
        close = _FENCE.match(lines[j])
        if (
            close is not None
            and close.group(1)[0] == marker[0]
            and len(close.group(1)) >= len(marker)
            and not close.group(2).strip()
        ):
            j += 1
            break
        line = lines[j]
        if indent:
            strip = min(indent, len(line) - len(line.lstrip(" ")))
            line = line[strip:]
        body.append(line)
        j += 1
    code = "\n".join(body)
    start = out.units
    out.add(code)
    extra = {"language": language} if language and _valid_language(language) else {}
    out.entity("pre", start, **extra)
    return j


def _valid_language(language: str) -> bool:
    return len(language) <= 32 and all(c.isalnum() or c in "+-_#." for c in language)


# ── inline ─────────────────────────────────────────────────────────────────────────────────

# Token kinds: ("text", str) ("code", str) ("link", label, url) ("delim", char, run, open, close)


def _render_inline(source: str, out: _Builder) -> None:
    tokens = _tokenize(source)
    pairs = _match_delimiters(tokens)
    stack: list[tuple[int, list[str]]] = []  # (start offset, entity types) per open pair
    for index, token in enumerate(tokens):
        kind = token[0]
        if kind == "text":
            out.add(token[1])
        elif kind == "code":
            start = out.units
            out.add(token[1])
            out.entity("code", start)
        elif kind == "link":
            start = out.units
            label, url = token[1], token[2]
            if label.strip():
                _render_inline(label, out)
            else:
                out.add(url)
            out.entity("text_link", start, url=url)
        else:  # delimiter
            role = pairs.get(index)
            if role is None:
                out.add(token[1] * token[2])
            elif role == "open":
                stack.append((out.units, _styles(token[1], token[2])))
            else:
                start, styles = stack.pop()
                for style in styles:
                    out.entity(style, start)


def _styles(char: str, run: int) -> list[str]:
    if char == "~":
        return ["strikethrough"]
    return {1: ["italic"], 2: ["bold"], 3: ["bold", "italic"]}[run]


def _tokenize(s: str) -> list[tuple[Any, ...]]:
    tokens: list[tuple[Any, ...]] = []
    buf: list[str] = []
    n = len(s)
    i = 0

    def flush() -> None:
        if buf:
            tokens.append(("text", "".join(buf)))
            buf.clear()

    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in _PUNCT:
            buf.append(s[i + 1])
            i += 2
            continue
        if c == "`":
            run = _run_length(s, i, "`")
            close = _find_backtick_close(s, i + run, run)
            if close < 0:
                buf.append("`" * run)
                i += run
                continue
            code = s[i + run : close]
            if len(code) > 2 and code[0] == " " and code[-1] == " " and code.strip():
                code = code[1:-1]
            if code:
                flush()
                tokens.append(("code", code))
            else:
                buf.append(s[i : close + run])
            i = close + run
            continue
        if c == "[" or (c == "!" and i + 1 < n and s[i + 1] == "["):
            link = _parse_link(s, i + 1 if c == "!" else i)
            if link is not None:
                label, url, end = link
                flush()
                tokens.append(("link", label, url))
                i = end
                continue
        if c == "h" and s.startswith(("http://", "https://"), i) and (i == 0 or not s[i - 1].isalnum()):
            match = _BARE_URL.match(s, i)
            if match is not None:  # a URL is literal: its underscores are not emphasis
                buf.append(match.group())
                i = match.end()
                continue
        if c in "*_~":
            run = _run_length(s, i, c)
            prev = s[i - 1] if i > 0 else " "
            nxt = s[i + run] if i + run < n else " "
            usable = (run <= 3) if c != "~" else run == 2
            if usable:
                left = not nxt.isspace() and (nxt not in _PUNCT or prev.isspace() or prev in _PUNCT)
                right = not prev.isspace() and (prev not in _PUNCT or nxt.isspace() or nxt in _PUNCT)
                if c == "_":
                    can_open = left and (not right or prev in _PUNCT)
                    can_close = right and (not left or nxt in _PUNCT)
                else:
                    can_open, can_close = left, right
                if can_open or can_close:
                    flush()
                    tokens.append(("delim", c, run, can_open, can_close))
                    i += run
                    continue
            buf.append(c * run)
            i += run
            continue
        buf.append(c)
        i += 1
    flush()
    return tokens


def _run_length(s: str, i: int, char: str) -> int:
    j = i
    while j < len(s) and s[j] == char:
        j += 1
    return j - i


def _find_backtick_close(s: str, start: int, run: int) -> int:
    """Index of a backtick run of exactly ``run`` at or after ``start``; -1 if none."""
    j = s.find("`" * run, start)
    while j >= 0:
        length = _run_length(s, j, "`")
        if length == run:
            return j
        j = s.find("`" * run, j + length)
    return -1


def _parse_link(s: str, i: int) -> tuple[str, str, int] | None:
    """``[label](url)`` starting at ``s[i] == "["``: (label, url, end index) or None."""
    depth = 0
    j = i
    n = len(s)
    while j < n:
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if c == "`":  # brackets inside a code span do not count
            run = _run_length(s, j, "`")
            close = _find_backtick_close(s, j + run, run)
            j = close + run if close >= 0 else j + run
            continue
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                break
        elif c == "\n" and j + 1 < n and s[j + 1] == "\n":
            return None
        j += 1
    else:
        return None
    if j + 1 >= n or s[j + 1] != "(":
        return None
    label = s[i + 1 : j]
    k = j + 2
    parens = 1
    while k < n:
        c = s[k]
        if c == "(":
            parens += 1
        elif c == ")":
            parens -= 1
            if parens == 0:
                break
        elif c.isspace() and c != " ":
            return None
        k += 1
    else:
        return None
    target = s[j + 2 : k].strip()
    url = target.split(" ", 1)[0].strip("<>")  # drop an optional "title"
    if not url.lower().startswith(_LINK_SCHEMES) or len(url) > 2048:
        return None
    return label, url, k + 1


def _match_delimiters(tokens: list[tuple[Any, ...]]) -> dict[int, str]:
    """Pair emphasis delimiters (nearest opener of the same char and run); the rest stay text.

    Pairs always nest: when a closer matches an opener, unmatched openers between them are
    dropped (they become literal text), as CommonMark does.
    """
    roles: dict[int, str] = {}
    stack: list[int] = []
    for index, token in enumerate(tokens):
        if token[0] != "delim":
            continue
        _, char, run, can_open, can_close = token
        if can_close:
            found = -1
            for pos in range(len(stack) - 1, -1, -1):
                opener = tokens[stack[pos]]
                if opener[1] == char and opener[2] == run:
                    found = pos
                    break
            if found >= 0:
                roles[stack[found]] = "open"
                roles[index] = "close"
                del stack[found:]
                continue
        if can_open:
            stack.append(index)
    return roles


__all__ = ["MAX_ENTITIES", "markdown_to_entities", "to_plain", "utf16_len"]
