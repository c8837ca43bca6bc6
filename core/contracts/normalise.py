"""Cleaning text at the edge: what every connector applies to incoming text.

Text reaches relaybot from platforms, browsers and terminals, and not all of it is valid
Unicode: a JSON body may carry a lone surrogate (``"\\ud83d"`` without its pair), a terminal
hands over undecodable bytes as lone surrogates, and NUL characters slip through everywhere.
Neither can be stored (SQLite and PostgreSQL refuse them in UTF-8 text), streamed back over
SSE or sent to a provider, so a message carrying one would be accepted and then lost.

:func:`clean_text` is the one rule, applied by every connector to every text it takes in
(message text, captions, titles): lone surrogates become U+FFFD (the replacement character),
NUL characters are removed, and everything else — including valid surrogate pairs, which
Python may hold as two code points — is kept as it is.
"""

from __future__ import annotations

__all__ = ["REPLACEMENT", "clean_text"]

#: what a lone surrogate becomes
REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """``text`` made valid for storage, streams and providers (see the module docstring).

    Lone surrogates are replaced with U+FFFD, NUL characters removed; a surrogate *pair* held
    as two code points is joined into the character it encodes. Valid text is returned
    unchanged (the same object), so calling it twice is harmless and cheap.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # UTF-16 with surrogatepass joins valid pairs; decoding with "replace" turns each lone
        # surrogate into U+FFFD
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text
