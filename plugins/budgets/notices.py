"""The ``budget_reset_notices`` job: tell users a budget refused when it has room again.

When a budget refuses a user's call (a message, ``/imagine``), the reservation that did not
fit also remembers the refusal in the database, in the same transaction: who, the chat to tell,
which budget, when its period resets (:meth:`~relaybot.core.storage.Store.reserve_spend`'s
``notify``). One notice is pending per user and budget; a later refusal replaces the earlier
one's chat and period, so the user is told once the *latest* refusal's period has reset.

Every ``interval_seconds`` (default 300) this job sends each such user one message in that
chat once the budget's period has reset::

    Your daily budget has reset: you can use the bot again.

A rolling window never resets as a whole; its notice is due once the window has room again for
the call it refused (``… has room again: you can use the bot again.``) — the next question may
of course be larger. A refusal by a budget the call could never fit (its worst case alone is
above the limit) is not remembered: no reset would help.

A refusal the core answered with a cheaper model (``downgrade_to``) is remembered too: the user
was told the budget had no room for their model, and the notice tells them when it has again.

Exactly once: a notice is *claimed* (its row deleted, which one process wins) before it is
sent, so two processes sharing the database, or a restart, never send it twice. A delivery that
fails is given back for the next run: without counting when this process has no connector for
the chat's platform (another process may have), else at most :data:`MAX_ATTEMPTS` times.
Users of one chat refused by the same shared budget (the chat's, a platform's, the bot's) are
told with one message.

Config (the runner's keys; the job has no options of its own)::

    [jobs.budget_reset_notices]
    interval_seconds = 300     # or cron = "*/5 * * * *"; enabled = false: no notices
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from relaybot import BudgetNotice, CapabilityError, ChatKey, Job, JobContext, SpendLedger

from .guard import BudgetGuard

__all__ = ["JOB", "MAX_ATTEMPTS", "deliver_due_notices", "notice_text", "send_reset_notices"]

#: failed deliveries after which a notice is dropped (a chat the bot was removed from …)
MAX_ATTEMPTS = 5
#: notices looked at per run (the rest wait for the next run)
BATCH = 200


def notice_text(notice: BudgetNotice) -> str:
    """``"Your daily budget has reset: you can use the bot again."``"""
    label = notice.label[:1].upper() + notice.label[1:]
    change = "has room again" if notice.rolling else "has reset"
    return f"🔄 {label} {change}: you can use the bot again."


async def deliver_due_notices(
    ledger: SpendLedger,
    send_text: Callable[[ChatKey, str], Awaitable[Any]],
    *,
    now: datetime,
    log: logging.Logger,
) -> int:
    """Send every notice due at ``now``; returns how many messages were sent.

    ``ledger`` is the bot's spend ledger (``bot.spending``); ``send_text(chat, text)`` delivers.
    """
    due = await ledger.due_budget_notices(now=now, limit=BATCH)
    groups: dict[tuple[ChatKey, str], list[BudgetNotice]] = {}
    for notice in due:
        groups.setdefault((notice.chat, notice.budget_key), []).append(notice)
    sent = 0
    for (chat, key), notices in groups.items():
        claimed = [n for n in notices if await ledger.claim_budget_notice(n)]
        if not claimed:
            continue  # another process took them, or the user was refused again meanwhile
        try:
            await send_text(chat, notice_text(claimed[0]))
        except Exception as exc:
            counted = not isinstance(exc, CapabilityError)
            log.warning("budget_reset_notices: could not tell %s about %s: %s", chat, key, exc)
            for notice in claimed:
                if not counted or notice.attempts + 1 < MAX_ATTEMPTS:
                    await ledger.restore_budget_notice(notice, count=counted)
            continue
        sent += 1
    if sent:
        log.info("budget_reset_notices: %d notice(s) sent", sent)
    return sent


async def send_reset_notices(ctx: JobContext) -> None:
    """The job: deliver the notices due now through the bot's spend ledger and scheduler.

    "Now" is the budget guard's clock (the one refusals were timed by; tests set it)."""
    bot = ctx.bot
    guard = bot.spend_guard
    now = guard.now() if isinstance(guard, BudgetGuard) else datetime.now(UTC)
    await deliver_due_notices(bot.spending, bot.send, now=now, log=ctx.log)


JOB = Job(
    "budget_reset_notices",
    send_reset_notices,
    interval_seconds=300,
    description="tell users a budget refused once its period has reset (or its window has room)",
)
