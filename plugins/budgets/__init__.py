"""Budgets: spending limits per user, chat, platform, provider and for the whole bot.

A plugin like any other, on the public API (``from relaybot import …``): it registers a spend
guard (:class:`~relaybot.plugins.budgets.guard.BudgetGuard`) that the core consults before every
provider call — chat replies, ``/imagine``, retries and fallbacks — and the ``/budget`` and
``/usage-report`` commands. Configuration: :mod:`relaybot.plugins.budgets.settings`; commands:
:mod:`relaybot.plugins.budgets.commands`. With no budget configured, it only records what each
call cost.
"""

from __future__ import annotations

import logging

from relaybot import Command, ConfigError, PluginSettings, hookimpl

from .commands import budget, budget_status, usage_report
from .guard import BudgetGuard
from .settings import BudgetSpec, BudgetsSettings, load_settings

__all__ = ["BudgetGuard", "BudgetSpec", "BudgetsSettings", "budget_status", "load_settings"]

log = logging.getLogger("relaybot.plugins.budgets")

#: ``[plugins.budgets]``, validated by the core at start-up and by ``relaybot check``
SETTINGS = PluginSettings(
    "budgets", BudgetsSettings, "spending limits per user, chat, platform, provider and bot"
)


@hookimpl
def register_settings(register):  # type: ignore[no-untyped-def]
    register(SETTINGS)


@hookimpl
def register_spend_guard(register):  # type: ignore[no-untyped-def]
    register(BudgetGuard())


@hookimpl
def register_commands(register):  # type: ignore[no-untyped-def]
    register(
        Command(
            "budget",
            "budgets: what is used and left (admins: set / reset a user's or chat's)",
            budget,
            usage="[show | set user|chat <who> <amount> <period> | reset user|chat <who>]",
        )
    )
    register(
        Command(
            "usage_report",
            "top users, chats and models by cost (admins)",
            usage_report,
            usage="[day|week|month]",
            admin_only=True,
        )
    )


@hookimpl
def relaybot_startup(bot):  # type: ignore[no-untyped-def]
    # the guard validated the section already (a bad one stops start-up); say what is enforced
    try:
        settings = load_settings(bot.config)
    except ConfigError as exc:  # pragma: no cover - start() raised it first
        log.error("budgets will not work: %s", exc)
        return
    enforced = [
        name
        for name, spec in (("user", settings.user), ("chat", settings.chat), ("global", settings.global_))
        if spec is not None
    ]
    enforced += [f"platform {p}" for p in settings.platforms] + [f"provider {p}" for p in settings.providers]
    if enforced:
        log.info("budgets enforced: %s", ", ".join(enforced))
