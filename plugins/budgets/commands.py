"""``/budget`` (show / set / reset a user's or chat's budget) and ``/usage-report`` (admins).

::

    /budget                                   your budgets and this chat's: used, left, reset
    /budget show user telegram:42             someone else's (admins)
    /budget set user telegram:42 $2 day       admins: a user's budget …
    /budget set chat here 500k tokens week    … or a chat's ("here": this chat)
    /budget set user me $5 and 1m tokens rolling 24h
    /budget set chat here off                 no budget for this chat, whatever the default
    /budget reset user telegram:42            back to the config default
    /usage-report [day|week|month]            top users, chats and models (admins)

A user is ``platform:user id`` and a chat ``platform:chat id`` (a bare id means this
platform's); ``me`` is the sender and ``here`` this chat. Budgets set here are stored in the
database and win over ``[plugins.budgets]`` defaults.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import ValidationError

from relaybot import BotServices, CommandContext, CommandError, Override, RequestOrigin, Usage, to_micros

from .guard import Applicable, BudgetGuard, chat_subject, spec_of, user_subject
from .settings import MAX_TOKENS, MAX_USD, BudgetSpec, describe_reset, money, window

_AMOUNT = re.compile(
    r"^(?P<minus>-)?(?P<dollar>\$)?(?P<number>\d+(?:[.,]\d+)?)(?P<suffix>[km])?"
    r"(?P<unit>usd|\$|dollars?|tokens?)?$",
    re.IGNORECASE,
)
_WINDOW = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>h|d)$", re.IGNORECASE)
_PERIODS = {
    "day": "day",
    "daily": "day",
    "week": "week",
    "weekly": "week",
    "month": "month",
    "monthly": "month",
}
_SET_USAGE = (
    "Usage: /budget set user|chat <who> <amount> [and <amount>] <day|week|month|rolling 24h>, "
    "e.g. /budget set user telegram:42 $2 day, or /budget set chat here off"
)


def guard_of(bot: BotServices) -> BudgetGuard:
    guard = bot.spend_guard
    if not isinstance(guard, BudgetGuard):
        raise CommandError("Budgets are not enabled on this bot.")
    return guard


def origin_of(ctx: CommandContext) -> RequestOrigin:
    return RequestOrigin(ctx.message.chat, ctx.message.user.id)


# ── showing budgets ─────────────────────────────────────────────────────────────────────────


async def status_lines(
    guard: BudgetGuard, budgets: list[Applicable], *, now: datetime | None = None, yours: bool = True
) -> list[str]:
    """One line per budget: what is used and left, and when it resets."""
    now = now or guard.now()
    checks = [guard.check(b, now) for b in budgets]
    spent = await guard.services.spending.spent(checks, now=now)
    lines = []
    for budget, (tokens, micros) in zip(budgets, spent, strict=True):
        spec = budget.spec
        used = []
        if spec.tokens is not None:
            used.append(f"{tokens:,} of {spec.tokens:,} tokens ({max(0, spec.tokens - tokens):,} left)")
        if spec.micros is not None:
            used.append(
                f"{money(micros)} of {money(spec.micros)} ({money(max(0, spec.micros - micros))} left)"
            )
        win = window(spec, now, guard.settings.zone)
        resets = describe_reset(spec, win, now, guard.settings.zone, None)
        mark = " (set by an admin)" if budget.overridden else ""
        label = budget.label(yours=yours)
        lines.append(f"• {label[:1].upper()}{label[1:]}{mark}: {' and '.join(used)}; resets {resets}")
    return lines


async def budget_status(bot: BotServices, origin: RequestOrigin) -> list[str]:
    """The budget lines ``/usage`` and ``/budget`` show for ``origin`` (empty: no budgets)."""
    guard = bot.spend_guard
    if not isinstance(guard, BudgetGuard):
        return []
    budgets = await guard.applicable(origin, bot.config.default_provider)
    return await status_lines(guard, budgets)


def subject(ctx: CommandContext, scope: str, who: str) -> str:
    """``me`` / ``here`` / ``platform:id`` / a bare id → ``platform:id``."""
    origin = origin_of(ctx)
    if who in ("me", "my", "mine"):
        return user_subject(origin)
    if who in ("here", "this"):
        if scope != "chat":
            raise CommandError("“here” names a chat: use /budget set chat here …")
        return chat_subject(origin)
    if not who or any(c.isspace() for c in who):
        raise CommandError(f"Name the {scope} as platform:id, e.g. telegram:12345")
    return who if ":" in who else f"{origin.chat.platform}:{who}"


async def show(ctx: CommandContext, args: list[str]) -> None:
    guard = guard_of(ctx.bot)
    origin = origin_of(ctx)
    if not args:
        lines = await status_lines(guard, await guard.applicable(origin, ctx.bot.config.default_provider))
        await ctx.reply("💰 Budgets\n" + ("\n".join(lines) if lines else "No budget applies here."))
        return
    if len(args) != 2 or args[0] not in ("user", "chat"):
        raise CommandError("Usage: /budget show [user|chat <who>]")
    scope, name = args[0], subject(ctx, args[0], args[1])
    mine = name == (user_subject(origin) if scope == "user" else chat_subject(origin))
    if not mine and not ctx.bot.is_admin(ctx.message):
        raise CommandError("Only admins can see other people's budgets.")
    overrides = await ctx.bot.spending.budget_overrides([(scope, name)])
    override = overrides.get((scope, name))
    default = guard.settings.user if scope == "user" else guard.settings.chat
    spec = spec_of(override) if override is not None else default
    if spec is None:
        state = "turned off by an admin" if override is not None else "none configured"
        await ctx.reply(f"💰 {scope.title()} {name}: no budget ({state}).")
        return
    budget = Applicable(scope, name, spec, overridden=override is not None)
    (line,) = await status_lines(guard, [budget], yours=mine)
    await ctx.reply(f"💰 {scope.title()} {name}\n{line}")


# ── changing budgets ────────────────────────────────────────────────────────────────────────


def parse_spec(words: list[str]) -> BudgetSpec | None:
    """``["$2", "day"]``, ``["500k", "tokens", "week"]``, ``["off"]`` … → the budget (``None``: off).

    Raises CommandError with the reason for anything else (negative, absurd, no period …).
    """
    if words == ["off"]:
        return None
    usd: float | None = None
    tokens: int | None = None
    period: str | None = None
    hours: float | None = None
    i = 0
    while i < len(words):
        word = words[i].lower()
        i += 1
        if word == "and":
            continue
        if word in _PERIODS:
            period = _PERIODS[word]
            continue
        if word == "rolling":
            period = "rolling"
            if i < len(words) and (m := _WINDOW.match(words[i])):
                i += 1
                hours = float(m["number"]) * (24 if m["unit"].lower() == "d" else 1)
            continue
        m = _AMOUNT.match(word)
        if m is None:
            raise CommandError(f"I don't understand “{words[i - 1]}”. {_SET_USAGE}")
        unit = (m["unit"] or "").lower()
        if (
            not unit
            and i < len(words)
            and words[i].lower() in ("usd", "$", "dollar", "dollars", "token", "tokens")
        ):
            unit = words[i].lower()
            i += 1
        if m["dollar"]:
            unit = unit or "usd"
        if not unit:
            raise CommandError(f"Say whether {word} is dollars or tokens, e.g. $2 or 50k tokens.")
        if m["minus"]:
            raise CommandError("A budget can't be negative.")
        value = float(m["number"].replace(",", ".")) * {"k": 1e3, "m": 1e6}.get(
            (m["suffix"] or "").lower(), 1
        )
        if unit.startswith("token"):
            if value > MAX_TOKENS:
                raise CommandError(
                    f"{value:,.0f} tokens is more than any budget needs (at most {MAX_TOKENS:,})."
                )
            tokens = int(value)
        else:
            if value > MAX_USD:
                raise CommandError(f"${value:,.2f} is more than any budget needs (at most ${MAX_USD:,.0f}).")
            usd = value
    if period is None:
        raise CommandError("Add the period: day, week, month or rolling 24h.")
    if period == "rolling" and hours is None:
        raise CommandError("Give the rolling window's length, e.g. rolling 24h or rolling 7d.")
    try:
        return BudgetSpec(usd=usd, tokens=tokens, period=period, window_hours=hours)  # type: ignore[arg-type]
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise CommandError(f"That budget is not valid: {reason}.") from None


async def set_budget(ctx: CommandContext, args: list[str]) -> None:
    guard = guard_of(ctx.bot)
    if not ctx.bot.is_admin(ctx.message):
        raise CommandError("Only admins can change budgets.")
    if len(args) < 3 or args[0] not in ("user", "chat"):
        raise CommandError(_SET_USAGE)
    scope, name = args[0], subject(ctx, args[0], args[1])
    spec = parse_spec(args[2:])
    now = guard.now()
    await ctx.bot.spending.set_budget_override(
        Override(
            scope=scope,
            subject=name,
            tokens=spec.tokens if spec else None,
            usd_micros=to_micros(spec.usd) if spec and spec.usd is not None else None,
            period=spec.period if spec else "day",
            window_seconds=round(spec.window_hours * 3600) if spec and spec.window_hours else None,
            updated_at=now,
            updated_by=f"{ctx.message.chat.platform}:{ctx.message.user.id}",
        )
    )
    what = spec.describe() if spec else "no budget (off)"
    await ctx.reply(f"✅ {scope.title()} {name}: {what}.")


async def reset_budget(ctx: CommandContext, args: list[str]) -> None:
    guard = guard_of(ctx.bot)
    if not ctx.bot.is_admin(ctx.message):
        raise CommandError("Only admins can change budgets.")
    if len(args) != 2 or args[0] not in ("user", "chat"):
        raise CommandError("Usage: /budget reset user|chat <who>")
    scope, name = args[0], subject(ctx, args[0], args[1])
    removed = await ctx.bot.spending.delete_budget_override(scope, name)
    default = guard.settings.user if scope == "user" else guard.settings.chat
    back = default.describe() if default else "no budget"
    if removed:
        await ctx.reply(f"✅ {scope.title()} {name} is back to the default: {back}.")
    else:
        await ctx.reply(f"{scope.title()} {name} had no budget of its own; the default applies: {back}.")


async def budget(ctx: CommandContext) -> None:
    """``/budget``: see the module docstring."""
    args = ctx.args.split()
    action = args[0].lower() if args else "show"
    handlers = {"show": show, "set": set_budget, "reset": reset_budget}
    if action not in handlers:
        raise CommandError("Usage: /budget [show | set … | reset …] (see /help)")
    await handlers[action](ctx, args[1:])


# ── /usage-report ───────────────────────────────────────────────────────────────────────────


async def usage_report(ctx: CommandContext) -> None:
    """``/usage-report [day|week|month]``: the biggest users, chats and models (admins).

    Built from every reply's stored usage priced with the app's price table, so it covers
    replies no budget applied to as well.
    """
    guard = guard_of(ctx.bot)
    word = (ctx.args.strip().lower() or "month").removeprefix("this ")
    period = _PERIODS.get(word)
    if period is None:
        raise CommandError("Usage: /usage-report [day|week|month]")
    now = guard.now()
    since = window(BudgetSpec(usd=1, period=period), now, guard.settings.zone).since  # type: ignore[arg-type]
    label = {"day": "Today", "week": "This week", "month": "This month"}[period]
    zone = guard.settings.zone
    head = (
        f"📈 Usage report — {label} (since {since.astimezone(zone):%Y-%m-%d %H:%M} {guard.settings.timezone})"
    )
    rows = await ctx.bot.usage.usage_rows(since=since)
    if not rows:
        await ctx.reply(head + "\nNothing yet.")
        return
    groups: dict[str, dict[str, list[int]]] = {"user": {}, "chat": {}, "model": {}}
    unpriced: set[str] = set()
    total = [0, 0, 0]
    for platform, chat, user, model, tokens_in, tokens_out, replies in rows:
        price = ctx.bot.prices.price_of(model) if model else None
        micros = to_micros(price.cost(Usage(tokens_in, tokens_out))) if price is not None else 0
        if price is None and tokens_in + tokens_out:
            unpriced.add(model or "(unknown model)")
        for group, key in (
            ("user", f"{platform}:{user}" if user else "(unknown)"),
            ("chat", f"{platform}:{chat}"),
            ("model", model or "(unknown model)"),
        ):
            entry = groups[group].setdefault(key, [0, 0, 0])
            entry[0] += micros
            entry[1] += tokens_in + tokens_out
            entry[2] += replies
        total = [total[0] + micros, total[1] + tokens_in + tokens_out, total[2] + replies]
    lines = [head, f"Total: {money(total[0])} · {total[1]:,} tokens · {_calls(total[2])}"]
    for group, title in (("user", "Top users"), ("chat", "Top chats"), ("model", "Top models")):
        lines.append(f"\n{title}:")
        ranked = sorted(groups[group].items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))[:5]
        for i, (name, (m, t, n)) in enumerate(ranked, start=1):
            lines.append(f"{i}. {name} — {money(m)} · {t:,} tokens · {_calls(n)}")
    if unpriced:
        lines.append(f"\nNo price is known for {', '.join(sorted(unpriced))}; not included in the cost.")
    await ctx.reply("\n".join(lines))


def _calls(n: int) -> str:
    return f"{n:,} repl" + ("y" if n == 1 else "ies")
