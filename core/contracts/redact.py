"""Keep secrets out of logs and error messages.

Config values that came from ``${ENV}`` references, ``SecretStr`` fields and database passwords
are registered here at start-up; :class:`RedactingFilter` (installed on the root logger by
:func:`install_log_redaction`) replaces them with ``***`` in every log record, and
:func:`redact` does the same for text shown to people.
"""

from __future__ import annotations

import logging
import re
import threading

_MIN_SECRET_LENGTH = 4  # shorter values would redact ordinary words
_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Treat ``value`` as a secret from now on (ignored if empty or very short)."""
    global _pattern
    if not value or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        # longest first so a secret containing another is replaced whole
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``***``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub("***", text)


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z0-9+]+://[^:/@\s]+):(?P<pw>[^@\s]+)@", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Hide the password of a ``scheme://user:password@host`` URL."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}:***@", url)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts secrets from the formatted message and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not drop the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


def install_log_redaction() -> None:
    """Attach :class:`RedactingFilter` to every handler of the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
