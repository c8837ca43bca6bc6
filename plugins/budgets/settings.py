"""``[plugins.budgets]``: budget defaults, their periods, and how a budget is named and timed.

::

    [plugins.budgets]
    timezone = "Europe/Berlin"   # where a day / week / month starts (default UTC)
    reservation_ttl = 900        # seconds a reservation holds if its process dies (default 15 min)
    estimate_margin = 1.1        # the prompt's counted tokens × this = its worst case

    [plugins.budgets.user]       # every user, unless /budget set says otherwise
    usd = 0.50
    period = "day"               # day | week | month | rolling
    [plugins.budgets.chat]       # every chat (all its topics together)
    tokens = 2_000_000
    period = "month"
    [plugins.budgets.platforms.telegram]
    usd = 20
    period = "week"
    [plugins.budgets.global]     # the whole bot
    usd = 100
    period = "month"
    [plugins.budgets.providers.openai]
    usd = 30
    period = "rolling"
    window_hours = 24

A budget has ``usd`` (US dollars), ``tokens`` (input + output), or both (both must fit).
Calendar periods start at midnight / Monday / the 1st in ``timezone``; a rolling window counts
the last ``window_hours``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from relaybot import ConfigError, from_micros, to_micros

#: more than this is not a budget but a typo (an extra zero, cents for dollars …)
MAX_USD = 1_000_000.0
MAX_TOKENS = 1_000_000_000_000
MAX_WINDOW_HOURS = 24 * 366

Period = Literal["day", "week", "month", "rolling"]
_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly"}


class BudgetSpec(BaseModel):
    """One budget: a limit in dollars and/or tokens over a period."""

    model_config = ConfigDict(extra="forbid")

    usd: float | None = Field(default=None, ge=0, le=MAX_USD)
    tokens: int | None = Field(default=None, ge=0, le=MAX_TOKENS)
    period: Period = "day"
    #: the rolling window's length (only with ``period = "rolling"``)
    window_hours: float | None = Field(default=None, gt=0, le=MAX_WINDOW_HOURS)

    @model_validator(mode="after")
    def _complete(self) -> BudgetSpec:
        if self.usd is None and self.tokens is None:
            raise ValueError("set usd, tokens or both")
        if self.period == "rolling" and self.window_hours is None:
            raise ValueError('period = "rolling" needs window_hours')
        if self.period != "rolling" and self.window_hours is not None:
            raise ValueError('window_hours only applies to period = "rolling"')
        return self

    @property
    def micros(self) -> int | None:
        """The dollar limit in micro-dollars."""
        return None if self.usd is None else to_micros(self.usd)

    def describe(self) -> str:
        """``"$1.00 a day"``, ``"100,000 tokens and $2.00 per rolling 24 h"``."""
        parts = []
        if self.tokens is not None:
            parts.append(f"{self.tokens:,} tokens")
        if self.usd is not None:
            parts.append(money(to_micros(self.usd)))
        return " and ".join(parts) + " " + self.per()

    def per(self) -> str:
        if self.period == "rolling":
            return f"per rolling {self.window_hours:g} h"
        return f"a {self.period}"

    def adjective(self) -> str:
        """``daily`` / ``weekly`` / ``monthly`` / ``24-hour``."""
        if self.period == "rolling":
            return f"{self.window_hours:g}-hour"
        return _ADJECTIVE[self.period]


class BudgetsSettings(BaseModel):
    """``[plugins.budgets]``."""

    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"
    reservation_ttl: float = Field(default=900.0, ge=10, le=86_400)
    estimate_margin: float = Field(default=1.1, ge=1.0, le=10.0)
    user: BudgetSpec | None = None
    chat: BudgetSpec | None = None
    global_: BudgetSpec | None = Field(default=None, alias="global")
    platforms: dict[str, BudgetSpec] = Field(default_factory=dict)
    providers: dict[str, BudgetSpec] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def configured(self) -> bool:
        """True when the config sets any budget (then every call's spend is recorded)."""
        return any((self.user, self.chat, self.global_, self.platforms, self.providers))


def load_settings(config: Any) -> BudgetsSettings:
    """Validate ``[plugins.budgets]`` (raises :class:`ConfigError` naming each bad key)."""
    try:
        return BudgetsSettings.model_validate(config.plugins.settings("budgets"))
    except ValidationError as exc:
        problems = "; ".join(
            f"[plugins.budgets{''.join('.' + str(p) for p in err['loc'])}] {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(problems, path=config.source) from None


# ── periods ─────────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class Window:
    """Where a budget's current period started and when it next resets (``None``: rolling)."""

    since: datetime
    resets_at: datetime | None


def window(spec: BudgetSpec, now: datetime, zone: ZoneInfo) -> Window:
    """The current period of ``spec`` at ``now`` (calendar periods in ``zone``)."""
    if spec.period == "rolling":
        assert spec.window_hours is not None
        return Window(now - timedelta(hours=spec.window_hours), None)
    local = now.astimezone(zone)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if spec.period == "day":
        end = _next_midnight(start, days=1)
    elif spec.period == "week":
        start = _next_midnight(start, days=-start.weekday())
        end = _next_midnight(start, days=7)
    else:
        start = start.replace(day=1)
        end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return Window(start.astimezone(UTC), end.replace(tzinfo=zone).astimezone(UTC))


def _next_midnight(local_midnight: datetime, *, days: int) -> datetime:
    """Midnight ``days`` calendar days away (wall-clock arithmetic: DST days are 23 or 25 h)."""
    naive = local_midnight.replace(tzinfo=None) + timedelta(days=days)
    return naive.replace(tzinfo=local_midnight.tzinfo)


def describe_reset(
    spec: BudgetSpec, win: Window, now: datetime, zone: ZoneInfo, oldest: datetime | None
) -> str:
    """When a budget frees up, for a chat: ``"at 00:00 Europe/Berlin (in 3 h 5 min)"``."""
    if win.resets_at is not None:
        local = win.resets_at.astimezone(zone)
        when = (
            local.strftime("%H:%M")
            if win.resets_at - now < timedelta(days=1)
            else local.strftime("%a %d %b %H:%M")
        )
        return f"at {when} {zone.key} (in {_duration(win.resets_at - now)})"
    assert spec.window_hours is not None
    if oldest is None:
        return f"gradually (a rolling {spec.window_hours:g}-hour window)"
    frees = oldest + timedelta(hours=spec.window_hours)
    return f"gradually as older use ages out (the oldest in {_duration(max(frees - now, timedelta()))})"


def _duration(delta: timedelta) -> str:
    minutes = max(1, int(delta.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def money(micros: int) -> str:
    """Micro-dollars for a chat: ``$1.23``; small amounts with four decimals (``$0.0012``)."""
    dollars = from_micros(micros)
    if 0 < dollars < 0.0001:
        return "<$0.0001"
    if dollars < 0.1 or (dollars < 100 and micros % 10_000):
        return f"${dollars:.4f}"  # cents would hide what is left of a small budget
    return f"${dollars:,.2f}"
