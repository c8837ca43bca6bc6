"""Scheduled jobs that plugins register through the ``register_jobs`` hook."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Job:
    """A job run on a schedule.

    Give exactly one of ``interval_seconds`` or ``cron`` (a five-field crontab string).
    ``run`` receives the running :class:`~relaybot.core.app.Relaybot`.
    """

    name: str
    run: Callable[[Any], Awaitable[None]]
    interval_seconds: float | None = None
    cron: str | None = None
    description: str = ""
