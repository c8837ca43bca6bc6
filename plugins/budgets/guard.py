"""The budgets plugin's spend guard: which budgets apply to a call, reserve, settle.

Every provider call (see :mod:`relaybot.core.contracts.spending`) is checked against up to five budgets:
the user's, the chat's, the platform's, the whole bot's and the provider's. A user's or chat's
budget is the one an admin set with ``/budget set`` (stored in the database) or else the
config default. The worst case reserved is the prompt's tokens (the core's count × the
configured margin) plus the request's output limit, at the model's price; settling records
what the provider reported, or our estimate (flagged) when it reported nothing.

A call no budget applies to is not reserved at all: its cost is recorded once when it ends
(one write), so a budget added later for its scope sees it — unless the config sets no budget
at all: then nothing is written (every reply's usage is stored with the reply anyway, which
``/usage`` and ``/usage-report`` price), and a reply costs no write more than without budgets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from relaybot import (
    BaseSpendGuard,
    BotServices,
    BudgetCheck,
    BudgetExceededError,
    CallOutcome,
    ChatMessage,
    ModelPrice,
    Override,
    PlannedCall,
    RequestOrigin,
    Reservation,
    Role,
    Shortfall,
    SpendDraft,
    TextPart,
    Usage,
    to_micros,
)

from .settings import BudgetSpec, BudgetsSettings, describe_reset, load_settings, money, window

log = logging.getLogger("relaybot.plugins.budgets")


@dataclass(frozen=True, slots=True)
class Applicable:
    """One budget that applies to a call, with how to find its spend and how to name it."""

    scope: str  # user | chat | platform | global | provider
    subject: str
    spec: BudgetSpec
    overridden: bool = False

    @property
    def key(self) -> str:
        return f"{self.scope}:{self.subject}" if self.subject else self.scope

    @property
    def column(self) -> str | None:
        return {"user": "user_id", "chat": "chat", "platform": "platform", "provider": "provider"}.get(
            self.scope
        )

    def label(self, *, yours: bool = True) -> str:
        """How the budget is named in a chat (``yours``: speaking to the user it belongs to)."""
        adjective = self.spec.adjective()
        return {
            "user": f"your {adjective} budget" if yours else f"the {adjective} budget of {self.subject}",
            "chat": f"this chat's {adjective} budget"
            if yours
            else f"the {adjective} budget of {self.subject}",
            "platform": f"the {adjective} budget of {self.subject}",
            "global": f"the bot's {adjective} budget",
            "provider": f"the {adjective} budget for {self.subject}",
        }[self.scope]


def user_subject(origin: RequestOrigin) -> str:
    """How budgets name a user: ``platform:user id`` (as ``bot.admins`` does)."""
    return f"{origin.chat.platform}:{origin.user_id}"


def chat_subject(origin: RequestOrigin) -> str:
    """How budgets name a chat: ``platform:chat id`` (its topics share the chat's budget)."""
    return f"{origin.chat.platform}:{origin.chat.chat}"


def spec_of(override: Override) -> BudgetSpec | None:
    """The budget an override stands for (``None``: the admin turned the budget off)."""
    if override.tokens is None and override.usd_micros is None:
        return None
    return BudgetSpec(
        usd=None if override.usd_micros is None else override.usd_micros / 1_000_000,
        tokens=override.tokens,
        period=override.period,  # type: ignore[arg-type]
        window_hours=None if override.window_seconds is None else override.window_seconds / 3600,
    )


class BudgetGuard(BaseSpendGuard):
    """The :class:`~relaybot.BaseSpendGuard` of the budgets plugin. ``clock`` is for tests."""

    def __init__(self, *, clock: Callable[[], datetime] | None = None) -> None:
        #: what the guard uses of the running bot (set by :meth:`start`)
        self.bot: BotServices | None = None
        self.settings = BudgetsSettings()
        self._clock = clock or (lambda: datetime.now(UTC))

    def validate(self, config: Any) -> None:
        load_settings(config)

    async def start(self, bot: BotServices) -> None:
        self.bot = bot
        self.settings = load_settings(bot.config)

    @property
    def services(self) -> BotServices:
        """The running bot's services (the guard was started)."""
        if self.bot is None:
            raise RuntimeError("the budget guard is not started")
        return self.bot

    def now(self) -> datetime:
        return self._clock()

    async def status_lines_for(self, origin: RequestOrigin) -> list[str]:
        """What ``/usage`` shows: each budget that applies to ``origin``, used, left, reset."""
        from .commands import status_lines  # commands builds on this module

        return await status_lines(self, await self.applicable(origin, self.services.config.default_provider))

    # ── which budgets ───────────────────────────────────────────────────────────────────────

    async def applicable(self, origin: RequestOrigin | None, provider: str | None) -> list[Applicable]:
        """Every budget that applies to a call for ``origin`` to ``provider``."""
        s = self.settings
        found: list[Applicable] = []
        if origin is not None:
            user, chat = user_subject(origin), chat_subject(origin)
            overrides = await self.services.spending.budget_overrides([("user", user), ("chat", chat)])
            for scope, subject, default in (("user", user, s.user), ("chat", chat, s.chat)):
                override = overrides.get((scope, subject))
                spec = spec_of(override) if override is not None else default
                if spec is not None:
                    found.append(Applicable(scope, subject, spec, overridden=override is not None))
            platform = s.platforms.get(origin.chat.platform)
            if platform is not None:
                found.append(Applicable("platform", origin.chat.platform, platform))
        if s.global_ is not None:
            found.append(Applicable("global", "", s.global_))
        if provider is not None and provider in s.providers:
            found.append(Applicable("provider", provider, s.providers[provider]))
        return found

    def check(self, budget: Applicable, now: datetime) -> BudgetCheck:
        """The storage check of one budget at ``now``."""
        return BudgetCheck(
            key=budget.key,
            column=budget.column,
            value=budget.subject,
            since=window(budget.spec, now, self.settings.zone).since,
            token_limit=budget.spec.tokens,
            micros_limit=budget.spec.micros,
        )

    # ── prices and counts ───────────────────────────────────────────────────────────────────

    def price(self, provider: str, model: str) -> ModelPrice | None:
        bot = self.services
        return bot.prices.for_call(bot.provider_type(provider), model)

    def count_prompt(self, call: PlannedCall) -> int:
        """The prompt's tokens: the core's count when it made one, else counted here."""
        request = call.request
        if request is None:
            return self._counter(call.provider).count_text(call.prompt)
        if request.input_tokens is not None:
            return request.input_tokens
        counter = self._counter(call.provider)
        total = counter.count_text(request.system)
        for message in request.messages:
            total += counter.count_message(message)
        return total

    def _counter(self, provider: str) -> Any:
        return self.services.token_counter(provider)

    # ── the guard ───────────────────────────────────────────────────────────────────────────

    async def reserve(self, call: PlannedCall) -> Reservation:
        now = self.now()
        budgets = await self.applicable(call.origin, call.provider)
        prompt = self.count_prompt(call)
        worst_input = math.ceil(prompt * self.settings.estimate_margin)
        price = self.price(call.provider, call.model)
        if call.kind == "image":
            tokens = worst_input
            image = price.image_cost(call.image_size) if price is not None else None
            cost = None if image is None else to_micros(image + price.worst_case(worst_input, 0))  # type: ignore[union-attr]
        else:
            tokens = worst_input + call.max_output_tokens
            cost = None if price is None else to_micros(price.worst_case(worst_input, call.max_output_tokens))
        reservation = Reservation(call=call, input_tokens=prompt, tokens=tokens, cost_micros=cost)
        if not budgets:
            return reservation
        if cost is None:
            money = next((b for b in budgets if b.spec.usd is not None), None)
            if money is not None:
                raise self._unpriced(call, money, now)
        checks = [self.check(b, now) for b in budgets]
        result = await self.services.spending.reserve_spend(
            self._draft(call, tokens=tokens, cost=cost), checks, ttl=self.settings.reservation_ttl, now=now
        )
        if isinstance(result, Shortfall):
            raise self._refusal(call, budgets[checks.index(result.check)], result, reservation, now)
        reservation.handle = result
        return reservation

    async def settle(self, reservation: Reservation, outcome: CallOutcome) -> None:
        call = reservation.call
        try:
            usage = outcome.usage
            estimated = False
            if not outcome.answered and usage is None:
                usage = Usage(0, 0)  # refused before the model ran: nothing to pay
            elif usage is None:
                # the provider reported nothing: our count of the prompt and of what it sent
                output = (
                    self._counter(call.provider).count_message(
                        ChatMessage(Role.ASSISTANT, [TextPart(outcome.output_text)])
                    )
                    if outcome.output_text
                    else 0
                )
                usage = Usage(reservation.input_tokens, output, estimated=True)
                estimated = True
            cost = self._cost(call, usage, outcome.images)
            draft = self._draft(
                call,
                tokens=usage.input_tokens + usage.output_tokens,
                cost=cost,
                usage=usage,
                images=outcome.images,
                estimated=estimated,
            )
            if reservation.handle is None:
                if self.settings.configured and (outcome.answered or outcome.usage is not None):
                    await self.services.spending.record_spend(draft, now=self.now())
            else:
                await self.services.spending.settle_spend(reservation.handle, draft)
        except Exception:
            log.exception("could not settle the spend of a %s call to %s", call.kind, call.provider)

    # ── helpers ─────────────────────────────────────────────────────────────────────────────

    def _cost(self, call: PlannedCall, usage: Usage, images: int) -> int | None:
        price = self.price(call.provider, call.model)
        if price is None:
            return None
        if call.kind == "image" and images and (usage.input_tokens + usage.output_tokens) == 0:
            image = price.image_cost(call.image_size)
            return None if image is None else to_micros(image * images)
        return to_micros(price.cost(usage))

    def _draft(
        self,
        call: PlannedCall,
        *,
        tokens: int,
        cost: int | None,
        usage: Usage | None = None,
        images: int = 0,
        estimated: bool = False,
    ) -> SpendDraft:
        origin = call.origin
        return SpendDraft(
            platform=origin.chat.platform if origin else "",
            chat=chat_subject(origin) if origin else "",
            user_id=user_subject(origin) if origin else "",
            provider=call.provider,
            model=call.model,
            kind=call.kind,
            tokens=tokens,
            cost_micros=cost,
            input_tokens=usage.input_tokens if usage else 0,
            cached_input_tokens=usage.cached_input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            images=images,
            estimated=estimated,
        )

    def _refusal(
        self, call: PlannedCall, budget: Applicable, short: Shortfall, res: Reservation, now: datetime
    ) -> BudgetExceededError:
        spec = budget.spec
        win = window(spec, now, self.settings.zone)
        left = []
        if spec.tokens is not None and short.spent_tokens + res.tokens > spec.tokens:
            left.append(f"{max(0, spec.tokens - short.spent_tokens):,} of {spec.tokens:,} tokens")
        micros = spec.micros
        if micros is not None and (res.cost_micros is None or short.spent_micros + res.cost_micros > micros):
            left.append(f"{money(max(0, micros - short.spent_micros))} of {money(micros)}")
        resets = describe_reset(spec, win, now, self.settings.zone, short.oldest)
        log.info(
            "budget %s refused a %s call to %s/%s (worst case %s tokens, %s)",
            budget.key,
            call.kind,
            call.provider,
            call.model,
            res.tokens,
            "unpriced" if res.cost_micros is None else money(res.cost_micros),
        )
        return BudgetExceededError(budget.label(), " and ".join(left), resets, provider=call.provider)

    def _unpriced(self, call: PlannedCall, budget: Applicable, now: datetime) -> BudgetExceededError:
        log.error(
            "no price is known for model %r (provider %r), so %s cannot be kept: add [prices.%r]",
            call.model,
            call.provider,
            budget.key,
            call.model,
        )
        return BudgetExceededError(
            budget.label(),
            "unknown",
            "",
            provider=call.provider,
            reason=f"I can't check {budget.label()} for {call.model}: its price is unknown. "
            "An admin has to add it to the config.",
        )
