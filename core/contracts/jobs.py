"""Scheduled jobs: what plugins register through ``register_jobs``, and what a run receives.

A plugin hands over a :class:`Job` (a name, a coroutine function and a schedule); the core's
:mod:`~relaybot.core.runtime.job_runner` runs it on APScheduler, at most once per scheduled time even
when several relaybot processes share the database. A run receives a :class:`JobContext`:
which run it is, its options, and ``bot`` — what any plugin may use of the running bot
(:class:`~relaybot.core.contracts.host.BotServices`: config, media, usage records, sending a text through
a chat's scheduler …) — never the running app.

Admins change any job's schedule in config, ``[jobs.NAME]``::

    [jobs.retention]
    enabled = true            # jobs registered with enabled=False are off until this
    cron = "30 3 * * *"       # or interval_seconds = 3600 (replaces the plugin's schedule)
    days = 30                 # other keys are the job's options (validated by Job.options)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from relaybot.core.contracts.host import BotServices

__all__ = ["Job", "JobContext"]


@dataclass(frozen=True, slots=True)
class JobContext:
    """What one run of a job may use.

    ``scheduled_at`` is the (aware, UTC) time the run was scheduled for — runs that were missed
    while no relaybot was running are coalesced into one, scheduled at the latest missed time.
    ``options`` is the job's ``[jobs.NAME]`` options validated by :attr:`Job.options` (``None``
    when the job declares none). ``bot.send(chat, text)`` delivers a complete text through the
    chat's streaming scheduler (paced and split like any reply) and returns the platform message
    ids; it raises :class:`~relaybot.core.contracts.errors.CapabilityError` when no connector of that
    platform runs in this process. ``bot.admin_chats()`` are the private chats of
    ``[bot] admins``.
    """

    name: str
    scheduled_at: datetime
    options: Any
    bot: BotServices
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("relaybot.jobs"))


@dataclass(frozen=True, slots=True)
class Job:
    """A job run on a schedule.

    Give exactly one of ``interval_seconds`` (> 0; the first run is one interval after the job
    is first seen) or ``cron`` (a five-field crontab string, in ``[jobs] timezone``). ``run``
    receives a :class:`JobContext`; an exception it raises is logged and reported to the
    ``on_error`` hook, and the job runs again at its next time. ``enabled=False`` registers a
    job that stays off until ``[jobs.NAME] enabled = true``. ``options`` is a pydantic model
    validating the job's other ``[jobs.NAME]`` keys (checked at start-up; errors name the key).
    """

    name: str
    run: Callable[[JobContext], Awaitable[None]]
    interval_seconds: float | None = None
    cron: str | None = None
    description: str = ""
    enabled: bool = True
    options: type[BaseModel] | None = None

    def __post_init__(self) -> None:
        if (self.interval_seconds is None) == (self.cron is None):
            raise ValueError(f"job {self.name!r}: give exactly one of interval_seconds or cron")
        if self.interval_seconds is not None and not self.interval_seconds > 0:
            raise ValueError(f"job {self.name!r}: interval_seconds must be positive")
