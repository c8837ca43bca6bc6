"""Every relaybot hook, in one place.

Mark implementations with :data:`relaybot.hookimpl` (plain implementations: hook wrappers,
``hookwrapper=True`` / ``wrapper=True``, are refused at start-up, because the core calls each
plugin in isolation). Hooks *discover and decide*; objects
*do the I/O*: the ``register_*`` hooks hand typed objects (providers, connectors, commands, jobs)
to the core, whose async methods do the work. Per-message hooks are cheap synchronous
decisions or transformations and run for every message, streamed replies included.

Groups
------
registration (once at start-up):  register_providers, register_connectors,
                                   register_commands, register_jobs, register_settings,
                                   register_spend_guard
lifecycle:                         relaybot_startup, relaybot_shutdown
per message (in this order):       check_access → build_context → before_provider_request
                                   → (streaming) → after_reply;  on_error on failures
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from relaybot.core.contracts.commands import Command
    from relaybot.core.contracts.connector import ConnectorType
    from relaybot.core.contracts.hooktypes import AccessDecision, ReplyRecord
    from relaybot.core.contracts.host import BotServices
    from relaybot.core.contracts.jobs import Job
    from relaybot.core.contracts.models import IncomingMessage, ProviderRequest
    from relaybot.core.contracts.plugin_settings import PluginSettings
    from relaybot.core.contracts.provider import ProviderType
    from relaybot.core.contracts.spending import BaseSpendGuard
    from relaybot.core.modelio.context import ContextDraft

PROJECT = "relaybot"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ── registration ────────────────────────────────────────────────────────────────────────────


@hookspec
def register_providers(register: Callable[[ProviderType], None]) -> None:
    """Offer provider types: call ``register(ProviderType(...))`` once per type.

    Mode: called once per plugin at start-up. Two plugins offering the same ``type`` is a
    start-up error naming both.
    """


@hookspec
def register_connectors(register: Callable[[ConnectorType], None]) -> None:
    """Offer connector types: call ``register(ConnectorType(...))`` once per type.

    Mode: called once per plugin at start-up; duplicate types are a start-up error.
    """


@hookspec
def register_commands(register: Callable[[Command], None]) -> None:
    """Offer chat commands: call ``register(Command(...))`` for each.

    Mode: called once per plugin at start-up; duplicate command names are a start-up error.
    """


@hookspec
def register_jobs(register: Callable[[Job], None]) -> None:
    """Offer scheduled jobs: call ``register(Job(...))`` for each.

    Mode: called once per plugin at start-up; duplicate job names are a start-up error. The
    core runs them on APScheduler (``[jobs]`` in config; see :mod:`relaybot.core.runtime.job_runner`),
    each run once per scheduled time across every process sharing the database.
    """


@hookspec
def register_settings(register: Callable[[PluginSettings[Any]], None]) -> None:
    """Declare ``[plugins.NAME]`` tables: call ``register(PluginSettings(name, Model))`` for each.

    ``Model`` is a pydantic model (use ``extra="forbid"``). The core validates the table at
    start-up and in ``relaybot check`` (an invalid or unknown table is a config error naming
    file, key and fix); the plugin reads its settings with ``SETTINGS.of(app)``. Mode: called
    once per plugin at start-up; a table declared twice is a start-up error.
    """


@hookspec
def register_spend_guard(register: Callable[[BaseSpendGuard], None]) -> None:
    """Offer the spend guard: call ``register(guard)`` with a
    :class:`~relaybot.core.contracts.spending.BaseSpendGuard`.

    The guard reserves the worst case of every provider call before it is made and settles it
    afterwards (budgets). Mode: called once per plugin at start-up; at most one guard may be
    registered (two is a start-up error naming both plugins).
    """


# ── lifecycle ───────────────────────────────────────────────────────────────────────────────


@hookspec
def relaybot_startup(bot: BotServices) -> None:
    """The bot has started (storage open, connectors running). ``bot`` is what a plugin may
    use of it (:class:`~relaybot.core.contracts.host.BotServices`).

    Mode: notification, all implementations run; an exception is logged, not raised.
    """


@hookspec
def relaybot_shutdown(bot: BotServices) -> None:
    """The bot is stopping; live replies have been finished or checkpointed (``bot`` as in
    :func:`relaybot_startup`; storage is still open).

    Mode: notification, all implementations run; an exception is logged, not raised.
    """


# ── per message ─────────────────────────────────────────────────────────────────────────────


@hookspec(firstresult=True)
def check_access(message: IncomingMessage) -> AccessDecision | None:
    """Decide whether ``message`` may be handled (access lists, rate limits, budgets).

    Return ``AccessDecision.deny("reason shown to the user")`` to stop it,
    ``AccessDecision.allow()`` to allow it and skip later checks, or ``None`` to have no
    opinion. Mode: ``firstresult`` (the first non-None answer wins). Runs for commands too.
    A plugin that raises is logged and skipped (the next one decides), like every other
    per-message hook.
    """


@hookspec
def build_context(context: ContextDraft) -> None:
    """Adjust the model context after the core picked the history that fits.

    ``context.system`` (the system prompt) and ``context.messages`` (oldest first) may be
    changed in place; ``context.message`` is the incoming message, ``context.chat`` its key.
    Keep additions small: the core does not trim again. Mode: all implementations run, in
    plugin order.
    """


@hookspec
def before_provider_request(request: ProviderRequest, provider: str, message: IncomingMessage) -> None:
    """Last look at the request before it goes to provider ``provider`` (mutate in place).

    Mode: all implementations run. Raising :class:`~relaybot.core.contracts.errors.CommandError` stops
    the request and shows its text to the user.
    """


@hookspec
def after_reply(reply: ReplyRecord) -> None:
    """A reply has ended: complete, interrupted or failed — streamed or not.

    ``reply`` carries the full text, status, usage and ids. Mode: notification, all run; an
    exception is logged, never shown to the user.
    """


@hookspec
def on_error(error: BaseException, message: IncomingMessage | None) -> None:
    """An error reached the top of a handler. Mode: notification (report it, don't raise).

    ``message`` is ``None`` for failures outside a message, e.g. a scheduled job that raised.
    """
