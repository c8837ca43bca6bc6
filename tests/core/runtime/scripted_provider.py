"""An in-process provider plugin whose behaviour each user message scripts with a tag.

The tag is the last ``#word`` of the request's last user turn, so a reply's behaviour does not
depend on the order in which concurrent requests arrive (randomised tests stay replayable):

``#ok``      a few words, streamed with short pauses;
``#slow``    more words, longer pauses;
``#burst``   600 characters at once, then silence until cancelled (or capped);
``#cut``     some words, then the provider fails mid-stream;
``#down``    the provider fails before any text.

The answer names the message (``re m12: …``) so a test can tell which reply is which.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from relaybot import (
    BaseProvider,
    BaseProviderConfig,
    Finish,
    ProviderCapabilities,
    ProviderEvent,
    ProviderRequest,
    ProviderType,
    ProviderUnavailableError,
    TextDelta,
    Usage,
    hookimpl,
)

_TAG = re.compile(r"(m\d+) #(\w+)")
#: what the user is told when the scripted provider fails (ProviderUnavailableError's text)
FAILURE = ProviderUnavailableError.user_message


def expected_words(name: str, tag: str) -> list[str]:
    """The deltas a reply to message ``name`` with ``tag`` streams (before any failure)."""
    count = {"ok": 6, "slow": 12, "cut": 5}.get(tag, 0)
    return [f"re {name}:"] + [f" w{i}" for i in range(count)]


class ScriptedProvider(BaseProvider):
    """See the module docstring."""

    def __init__(self, name: str, settings: Any) -> None:
        self.name = name
        self.model = "scripted"
        self.capabilities = ProviderCapabilities(context_window=8192, max_output_tokens=512)

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:  # type: ignore[override]
        last = next(m for m in reversed(request.messages) if m.role.value == "user")
        found = _TAG.findall(last.text_content)
        name, tag = found[-1] if found else ("m?", "ok")
        if tag == "down":
            raise ProviderUnavailableError("scripted outage")
        if tag == "burst":
            yield TextDelta(f"re {name}: " + "b" * 600)
            await asyncio.sleep(3600)
        pause = 0.03 if tag == "slow" else 0.005
        for word in expected_words(name, tag):
            yield TextDelta(word)
            await asyncio.sleep(pause)
        if tag == "cut":
            raise ProviderUnavailableError("scripted failure mid-stream")
        yield Usage(10, 10)
        yield Finish("stop")


@hookimpl
def register_providers(register: Any) -> None:
    register(ProviderType("scripted", BaseProviderConfig, ScriptedProvider, "test provider scripted by tags"))
