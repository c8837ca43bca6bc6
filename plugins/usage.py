"""``/usage``: a user's tokens and cost for today and this month, and their budgets.

Token counts come from the replies' stored usage (what the provider reported, or the core's
estimate when it reported nothing — the answer says when estimates are included). Costs use
the app's price table (:mod:`relaybot.core.modelio.pricing`: shipped prices, corrected by ``[prices]``
and by this section's older ``prices`` key, in US dollars per million tokens)::

    [plugins.usage]
    timezone = "Europe/Berlin"   # when "today" and "this month" start (default UTC)
    prices = { "my-model" = { input = 0.15, output = 0.60 } }   # still honoured; prefer [prices]

A price for ``gpt-4o-mini`` also applies to dated snapshots (``gpt-4o-mini-2024-07-18``) and to
router names (``openai/gpt-4o-mini``); models without a price are counted but not costed, and
the answer names them. When the budgets plugin runs, the answer ends with each budget that
applies: used, left, and when it resets.

A plugin like any other, using only the public API (``from relaybot import …``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relaybot import (
    BotServices,
    Command,
    CommandContext,
    CommandError,
    ConfigError,
    ModelPrice,
    PluginSettings,
    PriceConfig,
    PriceTable,
    RequestOrigin,
    Usage,
    hookimpl,
)

log = logging.getLogger("relaybot.plugins.usage")

#: the older name of a configured price (``[plugins.usage].prices.MODEL``)
Price = PriceConfig


class UsageSettings(BaseModel):
    """``[plugins.usage]``."""

    model_config = ConfigDict(extra="forbid")

    #: older spelling of ``[prices]``; merged into the app's price table
    prices: dict[str, PriceConfig] = Field(default_factory=dict)
    #: IANA time zone in which "today" and "this month" begin
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value

    def price_of(self, model: str) -> ModelPrice | None:
        """The price this section sets for ``model`` (exact name, router-prefixed name or snapshot)."""
        table = PriceTable({name: price.to_price() for name, price in self.prices.items()})
        return table.price_of(model)


#: ``[plugins.usage]``, validated by the core at start-up and by ``relaybot check``
SETTINGS = PluginSettings("usage", UsageSettings, "prices per model and the time zone of /usage")


@dataclass(frozen=True, slots=True)
class PeriodReport:
    """Usage of one period: per model, the total, its cost and what could not be priced."""

    label: str
    by_model: dict[str, Usage]
    #: the app's price table (anything with ``price_of(model)``)
    prices: Any

    @property
    def total(self) -> Usage:
        """All models together (estimated if any part is)."""
        values = self.by_model.values()
        return Usage(
            sum(u.input_tokens for u in values),
            sum(u.output_tokens for u in values),
            estimated=any(u.estimated for u in values),
        )

    @property
    def cost(self) -> float:
        """The cost of the priced models, in US dollars."""
        total = 0.0
        for model, usage in self.by_model.items():
            price = self.prices.price_of(model)
            if price is not None:
                total += price.cost(usage)
        return total

    @property
    def unpriced(self) -> list[str]:
        """Models used in this period that have no configured price."""
        return sorted(m for m, u in self.by_model.items() if self.prices.price_of(m) is None and _tokens(u))

    def render(self) -> list[str]:
        """Lines for the chat: the total, then one line per model when there are several."""
        total = self.total
        if not _tokens(total):
            return [f"{self.label}: nothing yet"]
        cost = f" · {_money(self.cost)}" if len(self.unpriced) < len(self.by_model) else ""
        lines = [f"{self.label}: {_count(total)}{cost}"]
        if len(self.by_model) > 1:
            for model, usage in sorted(self.by_model.items(), key=lambda kv: -_tokens(kv[1])):
                price = self.prices.price_of(model)
                priced = f" · {_money(price.cost(usage))}" if price is not None else ""
                lines.append(f"  {model or '(unknown model)'}: {_count(usage)}{priced}")
        return lines


def _tokens(usage: Usage) -> int:
    return usage.input_tokens + usage.output_tokens


def _count(usage: Usage) -> str:
    mark = "~" if usage.estimated else ""
    return f"{mark}{_tokens(usage):,} tokens ({usage.input_tokens:,} in, {usage.output_tokens:,} out)"


def _money(dollars: float) -> str:
    # cents hide the cost of light use entirely; four decimals show it
    if 0 < dollars < 0.0001:
        return "<$0.0001"
    return f"${dollars:,.2f}" if dollars >= 0.1 or dollars == 0 else f"${dollars:.4f}"


def period_starts(now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """Start of the day and of the month containing ``now`` in ``timezone``, as UTC datetimes."""
    local = now.astimezone(ZoneInfo(timezone))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.astimezone(UTC), day.replace(day=1).astimezone(UTC)


async def usage_report(
    bot: BotServices, user_id: str, *, now: datetime | None = None, origin: RequestOrigin | None = None
) -> str:
    """The text ``/usage`` answers for ``user_id`` (with ``origin``: and its budgets)."""
    settings = SETTINGS.of(bot)
    today, month = period_starts(now or datetime.now(UTC), settings.timezone)
    ledger = bot.usage
    periods = [
        PeriodReport("Today", await ledger.usage_by_model(user_id=user_id, since=today), bot.prices),
        PeriodReport("This month", await ledger.usage_by_model(user_id=user_id, since=month), bot.prices),
    ]
    lines = ["📊 Your usage"]
    for period in periods:
        lines.extend(period.render())
    month_report = periods[1]
    notes = []
    if month_report.total.estimated:
        notes.append("~ marks estimates: the provider did not report exact counts for some replies.")
    if month_report.unpriced:
        notes.append(
            f"No price is configured for {', '.join(month_report.unpriced)}; not included in the cost."
        )
    if origin is not None:
        guard = bot.spend_guard  # the budgets plugin's lines, when it runs
        budgets = await guard.status_lines_for(origin) if guard is not None else []
        if budgets:
            lines += ["", "💰 Budgets", *budgets]
    return "\n".join(lines + (["", *notes] if notes else []))


async def usage(ctx: CommandContext) -> None:
    """``/usage``: the sender's tokens and cost for today and this month."""
    try:
        text = await usage_report(
            ctx.bot, ctx.message.user.id, origin=RequestOrigin(ctx.message.chat, ctx.message.user.id)
        )
    except ConfigError as exc:
        log.error("/usage is not set up: %s", exc)
        raise CommandError(
            "Usage reports are not set up correctly; an admin has to fix the config."
        ) from None
    await ctx.reply(text)


@hookimpl
def register_commands(register):  # type: ignore[no-untyped-def]
    register(Command("usage", "your tokens and cost today and this month", usage))


@hookimpl
def register_settings(register):  # type: ignore[no-untyped-def]
    register(SETTINGS)
