"""A fake Slack for tests and benchmarks (part of ``relaybot.testing``).

slack_sdk / slack_bolt talk to it over real HTTP and WebSocket on loopback::

    async with FakeSlackServer() as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)

It enforces what a streaming Slack bot runs into — per-method tier limits per workspace and
``chat.postMessage`` per channel with realistic 429s (``Retry-After``; calls made inside a
window are counted), the chat streaming state machine and its errors, channel/auth errors with
Slack's bodies, the 3-second ack with re-deliveries — and records every call. Modules:

- :mod:`.server` — :class:`FakeSlackServer` (lifecycle, HTTP, Socket Mode route, inspection)
- :mod:`.inject` — people doing things: DMs, mentions, edits, files, slash commands
- :mod:`.methods` — chat / conversations / users / assistant methods
- :mod:`.streams` — ``chat.startStream`` / ``appendStream`` / ``stopStream``
- :mod:`.files` — files v2 uploads and authenticated downloads
- :mod:`.limits` — :class:`RateLimits` / the rate limiter
- :mod:`.delivery` — Socket Mode envelopes and signed HTTP events, acks and re-deliveries
- :mod:`.events` — payload builders; :mod:`.store` — what is recorded
"""

from relaybot.core.testing.fake_slack.delivery import SLACK_RETRY_DELAYS, Attempt, Delivery, sign
from relaybot.core.testing.fake_slack.limits import RateLimits
from relaybot.core.testing.fake_slack.methods import Workspace
from relaybot.core.testing.fake_slack.server import FakeSlackServer
from relaybot.core.testing.fake_slack.store import (
    Channel,
    SlackMessage,
    StoredFile,
    StreamState,
    TimelineRecord,
    User,
)

__all__ = [
    "SLACK_RETRY_DELAYS",
    "Attempt",
    "Channel",
    "Delivery",
    "FakeSlackServer",
    "RateLimits",
    "SlackMessage",
    "StoredFile",
    "StreamState",
    "TimelineRecord",
    "User",
    "Workspace",
    "sign",
]
