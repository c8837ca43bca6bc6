"""A fake Telegram Bot API server for tests and benchmarks (part of ``relaybot.testing``).

python-telegram-bot (or any Bot API client) talks to it over real HTTP on loopback::

    async with FakeTelegramServer(token="123:ABC") as tg:
        app = (ApplicationBuilder().token(tg.token)
               .base_url(tg.bot_base_url).base_file_url(tg.file_base_url).build())

It enforces the rules a streaming bot runs into on Telegram — flood control with escalating
``retry_after`` (sends, edits and drafts all count), "message is not modified", 4096 UTF-16
units after entity parsing, MarkdownV2/HTML parse errors, drafts only in private chats, kicked
chats, the 20 MB download limit — and records every call in a timeline so tests assert on what
the platform saw. Modules:

- :mod:`.server` — :class:`FakeTelegramServer` (lifecycle, HTTP, test-side API)
- :mod:`.methods` — the Bot API methods and their validation
- :mod:`.flood` — :class:`FloodLimits` / flood control
- :mod:`.markdown`, :mod:`.html`, :mod:`.entities` — Telegram's text parsing rules
- :mod:`.updates` — getUpdates long polling and webhook delivery
- :mod:`.store` — what is recorded (:class:`TimelineRecord`, :class:`StoredMessage`, ...)
"""

from relaybot.core.testing.fake_telegram.entities import EntityParseError, utf16_len
from relaybot.core.testing.fake_telegram.flood import FloodLimits
from relaybot.core.testing.fake_telegram.html import parse_html
from relaybot.core.testing.fake_telegram.markdown import parse_markdown, parse_markdown_v2
from relaybot.core.testing.fake_telegram.server import FakeTelegramServer
from relaybot.core.testing.fake_telegram.store import (
    ChatInfo,
    DraftRecord,
    StoredFile,
    StoredMessage,
    TimelineRecord,
)
from relaybot.core.testing.fake_telegram.updates import WebhookDelivery

__all__ = [
    "ChatInfo",
    "DraftRecord",
    "EntityParseError",
    "FakeTelegramServer",
    "FloodLimits",
    "StoredFile",
    "StoredMessage",
    "TimelineRecord",
    "WebhookDelivery",
    "parse_html",
    "parse_markdown",
    "parse_markdown_v2",
    "utf16_len",
]
