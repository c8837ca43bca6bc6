"""``/usage``: a user's tokens and cost for today and this month.

Token counts come from the replies' stored usage (what the provider reported, or the core's
estimate when it reported nothing — the answer says when estimates are included). Prices are
configured per model, in US dollars per million tokens::

    [plugins.usage]
    timezone = "Europe/Berlin"   # when "today" and "this month" start (default UTC)
    prices = { "gpt-4o-mini" = { input = 0.15, output = 0.60 }, "gpt-image-1" = { input = 5, output = 40 } }

A price for ``gpt-4o-mini`` also applies to dated snapshots (``gpt-4o-mini-2024-07-18``) and to
router names (``openai/gpt-4o-mini``); models without a price are counted but not costed, and
the answer names them.

A plugin like any other, using only the public API (``from relaybot import …``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from relaybot import Command, CommandContext, PluginSettings, Usage, hookimpl

#: what may follow a priced model name and still be the same model: a date or version snapshot
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest|preview(?:-\d{2}-\d{2})?)$")


class Price(BaseModel):
    """US dollars per million tokens, for prompt (``input``) and answer (``output``) tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    def cost(self, usage: Usage) -> float:
        """The price of ``usage`` in US dollars."""
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1_000_000


class UsageSettings(BaseModel):
    """``[plugins.usage]``."""

    model_config = ConfigDict(extra="forbid")

    prices: dict[str, Price] = Field(default_factory=dict)
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

    def price_of(self, model: str) -> Price | None:
        """The configured price of ``model`` (exact name, router-prefixed name or snapshot)."""
        for name in dict.fromkeys((model, model.rsplit("/", 1)[-1])):
            if name in self.prices:
                return self.prices[name]
            base = _SNAPSHOT.sub("", name)
            if base != name and base in self.prices:
                return self.prices[base]
        return None


#: ``[plugins.usage]``, validated by the core at start-up and by ``relaybot check``
SETTINGS = PluginSettings("usage", UsageSettings, "prices per model and the time zone of /usage")


@dataclass(frozen=True, slots=True)
class PeriodReport:
    """Usage of one period: per model, the total, its cost and what could not be priced."""

    label: str
    by_model: dict[str, Usage]
    settings: UsageSettings

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
            price = self.settings.price_of(model)
            if price is not None:
                total += price.cost(usage)
        return total

    @property
    def unpriced(self) -> list[str]:
        """Models used in this period that have no configured price."""
        return sorted(m for m, u in self.by_model.items() if self.settings.price_of(m) is None and _tokens(u))

    def render(self) -> list[str]:
        """Lines for the chat: the total, then one line per model when there are several."""
        total = self.total
        if not _tokens(total):
            return [f"{self.label}: nothing yet"]
        cost = f" · {_money(self.cost)}" if self.settings.prices else ""
        lines = [f"{self.label}: {_count(total)}{cost}"]
        if len(self.by_model) > 1:
            for model, usage in sorted(self.by_model.items(), key=lambda kv: -_tokens(kv[1])):
                price = self.settings.price_of(model)
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
    return f"${dollars:,.2f}" if dollars >= 0.1 or dollars == 0 else f"${dollars:.4f}"


def period_starts(now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """Start of the day and of the month containing ``now`` in ``timezone``, as UTC datetimes."""
    local = now.astimezone(ZoneInfo(timezone))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.astimezone(UTC), day.replace(day=1).astimezone(UTC)


async def usage_report(app: Any, user_id: str, *, now: datetime | None = None) -> str:
    """The text ``/usage`` answers for ``user_id``."""
    settings = SETTINGS.of(app)
    today, month = period_starts(now or datetime.now(UTC), settings.timezone)
    periods = [
        PeriodReport("Today", await app.store.usage_by_model(user_id=user_id, since=today), settings),
        PeriodReport("This month", await app.store.usage_by_model(user_id=user_id, since=month), settings),
    ]
    lines = ["📊 Your usage"]
    for period in periods:
        lines.extend(period.render())
    month_report = periods[1]
    notes = []
    if month_report.total.estimated:
        notes.append("~ marks estimates: the provider did not report exact counts for some replies.")
    if settings.prices and month_report.unpriced:
        notes.append(
            f"No price is configured for {', '.join(month_report.unpriced)}; not included in the cost."
        )
    if not settings.prices and _tokens(month_report.total):
        notes.append("Costs are not shown: no prices are configured.")
    return "\n".join(lines + (["", *notes] if notes else []))


async def usage(ctx: CommandContext) -> None:
    """``/usage``: the sender's tokens and cost for today and this month."""
    await ctx.reply(await usage_report(ctx.app, ctx.message.user.id))


@hookimpl
def register_commands(register):  # type: ignore[no-untyped-def]
    register(Command("usage", "your tokens and cost today and this month", usage))


@hookimpl
def register_settings(register):  # type: ignore[no-untyped-def]
    register(SETTINGS)
