"""Model Markdown → what Slack renders: ``markdown`` blocks, and mrkdwn where only that works.

Slack renders standard Markdown in chat streams (``markdown_text``) and in ``markdown`` blocks
(at most 12,000 characters per message), so a final reply goes out as is, split into messages
of :data:`MAX_MARKDOWN_BLOCK` with code fences closed and reopened across the cut
(:func:`markdown_messages`). Some places only take Slack's own *mrkdwn* — the ``text``
fallback shown in notifications and by screen readers, ``section`` blocks (3,000 characters),
ephemeral notices — and :func:`to_mrkdwn` converts for those:

- ``**bold**`` / ``__bold__`` → ``*bold*``; ``*italic*`` / ``_italic_`` → ``_italic_``;
  ``***both***`` → ``*_both_*``; ``~~strike~~`` → ``~strike~`` (flanking rules, so
  ``snake_case`` and ``2 * 3 * 4`` stay as they are);
- ``[text](url)`` / ``![alt](url)`` → ``<url|text>``; ``# heading`` → ``*heading*``;
  ``-``/``*``/``+`` bullets → ``•``; ``---`` → a line; fences keep their content but drop the
  language (mrkdwn would show it as the first code line);
- ``&``, ``<`` and ``>`` are escaped everywhere (Slack's rule), which also means a model can
  never produce ``<!channel>`` or ``<@U…>`` pings.

Half-written Markdown (a stream cut mid-way) is safe: an unclosed fence is closed, unmatched
``**`` or backticks stay literal characters, and the output is never much longer than the
input (escaping aside).
"""

from __future__ import annotations

import re
from typing import Any

from relaybot.core.streaming.text import split_text

#: a ``markdown`` block (and all of them in one message together): Slack's limit
MAX_MARKDOWN_BLOCK = 12_000
#: a ``section`` block's text
MAX_SECTION = 3_000
#: ``text`` beyond this is truncated by Slack
MAX_TEXT = 40_000

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+(?=\S)")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_IMAGE_OR_LINK = re.compile(r"!?\[([^\]\n]*)\]\((<?)(https?://[^\s)>]+|mailto:[^\s)>]+)>?(?:\s+\"[^\"]*\")?\)")
# emphasis: the opener is not followed by space, the closer not preceded by space, and neither
# touches a word character on its outer side (CommonMark's flanking rules, simplified)
_BOLD_ITALIC = re.compile(r"(?<![\w*])\*\*\*(?=\S)(.+?)(?<=\S)\*\*\*(?![\w*])")
_BOLD_STARS = re.compile(r"(?<![\w*])\*\*(?=\S)(.+?)(?<=\S)\*\*(?![\w*])")
_BOLD_UNDERSCORES = re.compile(r"(?<![\w_])__(?=\S)(.+?)(?<=\S)__(?![\w_])")
_ITALIC_STAR = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"(?<!~)~~(?=\S)(.+?)(?<=\S)~~(?!~)")
# placeholders for markers we emit, so one rule's output is never re-read by the next
_B, _I, _S = "\x01", "\x02", "\x03"


def escape(text: str) -> str:
    """Escape ``&``, ``<`` and ``>`` as Slack requires in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_mrkdwn(markdown: str) -> str:
    """Convert standard Markdown to Slack mrkdwn (see the module docstring)."""
    out: list[str] = []
    fence: str | None = None  # the open fence's marker
    for line in markdown.split("\n"):
        match = _FENCE.match(line)
        if fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not match.group(2).strip():  # fmt: skip
                out.append("```")
                fence = None
            else:
                out.append(escape(line))
            continue
        if match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
            fence = match.group(1)
            out.append("```")
            continue
        out.append(_line(line))
    if fence is not None:
        out.append("```")  # half-written: close what the model has not closed yet
    return "\n".join(out)


def _line(line: str) -> str:
    if _RULE.match(line):
        return "———"
    heading = _HEADING.match(line)
    if heading:
        inner = _inline(heading.group(1)).strip()
        return f"*{inner}*" if inner and not inner.startswith("*") else inner
    quote = ""
    stripped = line.lstrip(" ")
    if stripped.startswith(">") and len(line) - len(stripped) <= 3:
        body = stripped[1:]
        quote, line = "> ", body[1:] if body.startswith(" ") else body
    line = _BULLET.sub(lambda m: f"{m.group(1)}• ", line, count=1)
    return quote + _inline(line)


def _inline(text: str) -> str:
    """Inline formatting outside code spans; code spans are kept (escaped) as they are."""
    pieces: list[str] = []
    pos = 0
    for match in _CODE_SPAN.finditer(text):
        pieces.append(_emphasis(text[pos:match.start()]))
        code = match.group(2)
        pieces.append(f"`{escape(code.strip() if code.strip() else code)}`")
        pos = match.end()
    pieces.append(_emphasis(text[pos:]))
    return "".join(pieces)


def _emphasis(text: str) -> str:
    if not text:
        return text
    links: list[str] = []

    def link(match: re.Match[str]) -> str:
        label = match.group(1).strip() or match.group(3)
        links.append(f"<{match.group(3)}|{escape(label).replace('|', '¦')}>")
        return f"\x04{len(links) - 1}\x04"

    text = _IMAGE_OR_LINK.sub(link, text)
    text = escape(text)
    text = _BOLD_ITALIC.sub(lambda m: f"{_B}{_I}{m.group(1)}{_I}{_B}", text)
    text = _BOLD_STARS.sub(lambda m: f"{_B}{m.group(1)}{_B}", text)
    text = _BOLD_UNDERSCORES.sub(lambda m: f"{_B}{m.group(1)}{_B}", text)
    text = _ITALIC_STAR.sub(lambda m: f"{_I}{m.group(1)}{_I}", text)
    text = _STRIKE.sub(lambda m: f"{_S}{m.group(1)}{_S}", text)
    text = text.replace(_B, "*").replace(_I, "_").replace(_S, "~")
    return re.sub("\x04(\\d+)\x04", lambda m: links[int(m.group(1))], text)


def markdown_block(markdown: str) -> dict[str, Any]:
    """One ``markdown`` block; ``ValueError`` past :data:`MAX_MARKDOWN_BLOCK` (split first)."""
    if not markdown.strip():
        raise ValueError("a markdown block needs some text")
    if len(markdown) > MAX_MARKDOWN_BLOCK:
        raise ValueError(
            f"a markdown block holds at most {MAX_MARKDOWN_BLOCK} characters, got {len(markdown)}"
        )
    return {"type": "markdown", "text": markdown}


def split_markdown(markdown: str, limit: int = MAX_MARKDOWN_BLOCK) -> list[str]:
    """``markdown`` in pieces of at most ``limit`` characters, cut at clean boundaries, with an
    open code fence closed at the end of a piece and reopened at the start of the next."""
    return [part.text for part in split_text(markdown, limit) if part.text.strip()]


def markdown_messages(markdown: str, *, limit: int = MAX_MARKDOWN_BLOCK) -> list[dict[str, Any]]:
    """The ``chat.postMessage``/``chat.update`` arguments for a final reply: one message per
    piece, each a ``markdown`` block plus its mrkdwn ``text`` fallback (notifications)."""
    messages = []
    for piece in split_markdown(markdown, limit):
        fallback = to_mrkdwn(piece)
        messages.append({"text": fallback[:MAX_TEXT], "blocks": [markdown_block(piece)]})
    return messages


def section_blocks(markdown: str) -> list[dict[str, Any]]:
    """``section`` blocks of mrkdwn (≤ :data:`MAX_SECTION` characters each) for ``markdown``."""
    mrkdwn = to_mrkdwn(markdown)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece}}
            for piece in split_markdown(mrkdwn, MAX_SECTION)]  # fmt: skip
