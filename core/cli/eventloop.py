"""Which asyncio event loop relaybot runs on.

A busy bot spends most of its CPU in the event loop itself: every provider stream wakes it
once per network read, every platform request several times. `uvloop`_ (libuv underneath)
does that work in C: in ``benchmarks/streaming.py`` it alone cut the bot's CPU per reply by
about 15%, and together with aiohttp underneath the HTTP clients by half. It is the default
wherever it is installed (it is a dependency on Linux and macOS).
``[bot] event_loop = "asyncio"`` (or ``RELAYBOT_EVENT_LOOP=asyncio``) selects the standard
loop, e.g. to debug with ``PYTHONASYNCIODEBUG``.

Threads: the loop shares the GIL with the store's SQLite thread
(:mod:`relaybot.core.storage.sqlite_worker`). With CPython's default switch interval of 5 ms,
every time the loop thread gives up the GIL for a system call (a socket send, ``epoll``) while
that thread is busy, it may wait up to 5 ms to get it back, and a platform request makes several
such calls: paced frames went out p99 79 ms late in the streaming benchmark. :func:`run` lowers
the interval to :data:`SWITCH_INTERVAL` (p99 10 ms in the same run) unless the embedding program
changed it already.

.. _uvloop: https://github.com/MagicStack/uvloop
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from relaybot.core.contracts.errors import ConfigError
from relaybot.core.contracts.optional import use_optional

__all__ = ["EventLoopChoice", "loop_factory", "run"]

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
T = TypeVar("T")

_log = logging.getLogger(__name__)
_ENV = "RELAYBOT_EVENT_LOOP"
#: GIL switch interval while relaybot runs (seconds; CPython's default is 0.005)
SWITCH_INTERVAL = 0.0005
_DEFAULT_SWITCH_INTERVAL = 0.005


def loop_factory(choice: EventLoopChoice = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory for :class:`asyncio.Runner`, or ``None`` for asyncio's default loop.

    ``RELAYBOT_EVENT_LOOP`` in the environment overrides ``choice``. ``"auto"`` means uvloop
    when it can be imported; ``"uvloop"`` without uvloop installed is a :class:`ConfigError`
    (the admin asked for it explicitly).
    """
    override = os.environ.get(_ENV, "").strip().lower()
    if override:
        if override not in ("auto", "uvloop", "asyncio"):
            raise ConfigError(f"{_ENV}={override!r}: use auto, uvloop or asyncio")
        choice = override  # type: ignore[assignment]
    if not use_optional(choice, "uvloop", setting="event_loop"):
        return None
    import uvloop

    return uvloop.new_event_loop


def run(
    main: Coroutine[Any, Any, T],
    choice: EventLoopChoice = "auto",
    *,
    switch_interval: float | None = SWITCH_INTERVAL,
) -> T:
    """Run ``main`` to completion on the chosen loop (like :func:`asyncio.run`).

    The GIL switch interval becomes ``switch_interval`` unless the program already changed
    CPython's default (``None``: leave it alone); see the module docstring.
    """
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never awaited: close it so Python does not warn about it
        raise
    _log.debug("event loop: %s", "uvloop" if factory else "asyncio")
    if switch_interval is not None and sys.getswitchinterval() == _DEFAULT_SWITCH_INTERVAL:
        sys.setswitchinterval(switch_interval)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
