"""Length counting and clean splitting of message text.

Platforms limit a message's length in their own unit: Telegram and Discord count UTF-16 code
units (an emoji outside the Basic Multilingual Plane is 2), others count code points. When a
streamed reply outgrows the limit, the text is cut at the cleanest boundary that fits:

1. a paragraph break (``\\n\\n``), 2. a line break, 3. a sentence end followed by whitespace,
4. any whitespace, and only then 5. a hard cut (a single "word" longer than the limit), which
never splits a surrogate pair and avoids splitting a base character from its combining marks.

Boundaries 1-3 are only taken when they keep at least ``min_fill`` of the window (default
half): cutting a 4,000-character message after its first paragraph would waste a message.

A code fence (```` ```lang ````) open at the cut is closed at the end of the part and reopened,
with the same language, at the start of the next; room for that is reserved up front, so a
rendered :class:`Part` never exceeds the limit.

Every part's ``body`` is an exact slice of the input: joining the bodies gives back the
original text. Only the rendered :attr:`Part.text` adds fences and drops trailing whitespace.
Cutting is a pure function of the text, so the incremental splitter in
:class:`~relaybot.core.streaming.stream.ReplyStream` and :func:`split_text` agree.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

LengthUnit = Literal["chars", "utf16"]

#: smallest ``max_length`` the splitter accepts (room for a reopened fence plus some text)
MIN_LIMIT = 16

# Room kept free in every cut part for a closing fence ("\n```"); see cut_part.
_CLOSE_RESERVE = 4
# A reopened fence's language is dropped when it would eat more than this share of the limit.
_MAX_LANG = 32

_NON_SPACE = re.compile(r"\S")
# A sentence end: terminal punctuation, optional closing quotes/brackets, then whitespace.
_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’»)\]]*\s")
# A fence line (CommonMark: up to 3 spaces of indentation, 3+ backticks or tildes).
_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$", re.MULTILINE)
# Whitespace that must not become a break (it exists to keep words together).
_NO_BREAK = frozenset("\u00a0\u2007\u202f")
_ZWJ = "\u200d"


def text_length(text: str, unit: LengthUnit = "chars") -> int:
    """Length of ``text`` in ``unit``: code points (``"chars"``) or UTF-16 code units."""
    if unit == "chars" or text.isascii():
        return len(text)
    # surrogatepass: a lone surrogate (bad upstream decoding) still counts as one unit
    return len(text.encode("utf-16-le", "surrogatepass")) >> 1


def fit_prefix(text: str, budget: int, unit: LengthUnit = "chars") -> int:
    """The largest ``n`` such that ``text[:n]`` is at most ``budget`` units long."""
    if budget <= 0:
        return 0
    n = min(len(text), budget)
    if unit == "chars":
        return n
    head = text[:n]
    if head.isascii():
        return n
    units = text_length(head, unit)
    # Each step drops one code point (1 or 2 units); at most ~budget/2 steps, once per cut.
    while units > budget:
        n -= 1
        units -= 2 if ord(text[n]) > 0xFFFF else 1
    return n


def _has_text(text: str, end: int) -> bool:
    """True when ``text[:end]`` contains something other than whitespace."""
    return _NON_SPACE.search(text, 0, end) is not None


def _is_break_space(char: str) -> bool:
    return char.isspace() and char not in _NO_BREAK


def _hard_cut(text: str, n: int) -> int:
    """Cut at ``n`` but not between a base character and what attaches to it."""
    cut = n
    # Walk back a little over combining marks, variation selectors and ZWJ sequences.
    for _ in range(16):
        if cut <= 1 or cut >= len(text):
            break
        nxt, prev = text[cut], text[cut - 1]
        attached = (
            unicodedata.combining(nxt)
            or nxt == _ZWJ
            or prev == _ZWJ
            or "\ufe00" <= nxt <= "\ufe0f"
            or "\U0001f3fb" <= nxt <= "\U0001f3ff"  # skin tone modifiers
            or "\ud800" <= prev <= "\udbff"  # a lone high surrogate in the string
        )
        if not attached:
            return cut
        cut -= 1
    else:
        return n
    return cut if cut >= 1 else n


def find_cut(text: str, budget: int, unit: LengthUnit = "chars", *, min_fill: float = 0.5) -> int:
    """Index where ``text`` should be cut so ``text[:cut]`` fits in ``budget`` units.

    Returns ``len(text)`` when everything fits. Otherwise the cut is just after the best
    boundary (see the module docstring) and ``text[:cut]`` contains non-whitespace. The
    result is at least 1 for non-empty text, even when ``budget`` cannot hold a character.
    """
    n = fit_prefix(text, budget, unit)
    if n >= len(text):
        return len(text)
    if n <= 0:
        return min(1, len(text))
    window = text[:n]
    floor = max(1, int(n * min_fill))

    i = window.rfind("\n\n", floor - 2 if floor >= 2 else 0)
    if i >= 0 and i + 2 >= floor and _has_text(window, i):
        return i + 2
    i = window.rfind("\n", floor - 1)
    if i >= 0 and i + 1 >= floor and _has_text(window, i):
        return i + 1
    last_sentence = -1
    for m in _SENTENCE_END.finditer(window, floor - 1):
        last_sentence = m.end()
    if last_sentence >= floor and _has_text(window, last_sentence):
        return last_sentence
    j = n - 1
    while j >= 0 and not _is_break_space(window[j]):
        j -= 1
    if j >= 0 and _has_text(window, j):
        return j + 1
    return _hard_cut(text, n)


@dataclass(frozen=True, slots=True)
class Fence:
    """An open code fence: its marker (```` ``` ````, ``~~~~`` …) and language."""

    marker: str
    lang: str = ""

    @property
    def opener(self) -> str:
        """Text that reopens this fence at the start of a part."""
        return f"{self.marker}{self.lang}\n"

    @property
    def closer(self) -> str:
        """Text that closes this fence at the end of a part (after trailing space is dropped)."""
        return f"\n{self.marker}"


def scan_fences(text: str, fence: Fence | None = None, *, line_start: bool = True) -> Fence | None:
    """The fence open after ``text``, given the one open before it (``None``: none open).

    ``line_start=False`` means ``text`` continues a line begun earlier, so its first line
    cannot open or close a fence.
    """
    pos = 0
    if not line_start:
        nl = text.find("\n")
        if nl < 0:
            return fence
        pos = nl + 1
    for m in _FENCE_LINE.finditer(text, pos):
        marker, info = m.group(1), m.group(2)
        if fence is None:
            if marker[0] == "`" and "`" in info:
                continue  # inline code such as ```x``` is not a fence
            words = info.split()
            fence = Fence(marker, words[0][:_MAX_LANG] if words else "")
        elif marker[0] == fence.marker[0] and len(marker) >= len(fence.marker) and not info.strip():
            fence = None
    return fence


def fit_fence(fence: Fence | None, limit: int, unit: LengthUnit = "chars") -> Fence | None:
    """The fence to reopen in a part of ``limit`` units: drops a language that is too long."""
    if fence is None or not fence.lang:
        return fence
    if text_length(fence.opener, unit) + _CLOSE_RESERVE > limit // 4:
        return Fence(fence.marker)
    return fence


@dataclass(frozen=True, slots=True)
class Part:
    """One message's share of a reply.

    ``body`` is an exact slice of the reply text. ``fence_in`` is a fence reopened at the
    start, ``fence_out`` one closed at the end (``None``: nothing to add).
    """

    body: str
    fence_in: Fence | None = None
    fence_out: Fence | None = None

    @property
    def text(self) -> str:
        """The text to show: reopened fence, body without trailing whitespace, closed fence."""
        return render(self.body, self.fence_in, self.fence_out)


def render(body: str, fence_in: Fence | None = None, fence_out: Fence | None = None) -> str:
    """Render a part body with its fences; trailing whitespace is dropped (platforms trim it)."""
    text = body.rstrip()
    if fence_in is not None:
        text = fence_in.opener + text
    if fence_out is not None:
        text += fence_out.closer
    return text


def cut_part(
    text: str,
    limit: int,
    unit: LengthUnit = "chars",
    fence_in: Fence | None = None,
    *,
    line_start: bool = True,
) -> tuple[int, Part]:
    """Cut the first part off ``text``; return the cut index and the part.

    The rendered part (reopened ``fence_in`` + body + closing fence) fits in ``limit``.
    Call it when ``text`` with ``fence_in`` reopened does not fit as a whole.
    """
    prefix = text_length(fence_in.opener, unit) if fence_in is not None else 0
    reserve = _CLOSE_RESERVE
    while True:
        cut = find_cut(text, limit - prefix - reserve, unit)
        body = text[:cut]
        fence_out = scan_fences(body, fence_in, line_start=line_start)
        need = text_length(fence_out.closer, unit) if fence_out is not None else 0
        if need <= reserve:
            return cut, Part(body, fence_in, fence_out)
        reserve = need  # an unusually long marker (````` ```` `````): cut again with more room


def split_text(text: str, limit: int, unit: LengthUnit = "chars") -> list[Part]:
    """Split ``text`` into parts whose rendered text fits in ``limit`` units.

    The last part keeps any fence the text leaves open (it is the text's own business).
    Empty text gives one empty part.
    """
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT}, got {limit}")
    parts: list[Part] = []
    fence: Fence | None = None
    line_start = True
    rest = text
    while True:
        prefix = text_length(fence.opener, unit) if fence is not None else 0
        if prefix + text_length(rest, unit) <= limit:
            parts.append(Part(rest, fence, None))
            return parts
        cut, part = cut_part(rest, limit, unit, fence, line_start=line_start)
        parts.append(part)
        fence = fit_fence(part.fence_out, limit, unit)
        line_start = part.body.endswith("\n")
        rest = rest[cut:]
