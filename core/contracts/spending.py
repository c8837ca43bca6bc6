"""The spend guard: reserve before every provider call, settle after it.

The resilience layer (:class:`~relaybot.core.modelio.resilience.ResilientProvider`) asks the running
:class:`BaseSpendGuard`, when a plugin registered one (``register_spend_guard``), before
**every** request it sends — the first attempt, each retry, each fallback, and image
generation through :meth:`ResilientProvider.guarded` — and tells it the outcome afterwards::

    reservation = await guard.reserve(call)      # may raise BudgetExceededError
    try:
        ... the request ...
    finally:
        await guard.settle(reservation, outcome)  # always, shielded from cancellation

Why reserve rather than check-then-charge: two concurrent calls that both *check* a budget
with room for one both pass and both spend (LiteLLM's proxy overshoots by its concurrency
that way). A reservation takes the call's worst case (prompt tokens plus its output limit at
the model's price) out of every budget that applies, atomically, before the call; settling
replaces it by the real cost. A guard's reservations must expire, so a crashed process never
holds budget for ever.

The built-in guard is the ``budgets`` plugin (:mod:`relaybot.plugins.budgets`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from relaybot.core.contracts.models import ProviderRequest, RequestOrigin, Usage

if TYPE_CHECKING:
    from relaybot.core.contracts.host import BotServices

__all__ = ["BaseSpendGuard", "CallOutcome", "PlannedCall", "Reservation", "SpendRecord"]


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """One provider request about to be sent.

    ``provider`` is the ``[providers.NAME]`` that will be asked and ``model`` the model it
    will use (a downgrade may pick another one). ``request`` is the chat request (``None`` for
    an image); ``max_output_tokens`` bounds the answer. ``origin`` says whom it is for (``None``
    for calls the core makes for itself). ``kind`` is ``"chat"`` or ``"image"``; for images,
    ``prompt`` and ``image_size`` describe the picture. ``attempt`` counts from 1 per provider.
    """

    provider: str
    model: str
    kind: Literal["chat", "image"]
    origin: RequestOrigin | None
    request: ProviderRequest | None = None
    max_output_tokens: int = 0
    prompt: str = ""
    image_size: str = ""
    attempt: int = 1


@dataclass(slots=True)
class Reservation:
    """What a guard holds for one call until it is settled.

    ``tokens`` and ``cost_micros`` are the worst case reserved (micro-dollars; ``None`` when the
    model has no price); ``input_tokens`` is the guard's count of the prompt, used to settle a
    call whose provider reported no usage. ``handle`` is the guard's own (a row id …).
    """

    call: PlannedCall
    input_tokens: int
    tokens: int
    cost_micros: int | None
    handle: Any = None


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How a call ended, for settling.

    ``usage`` is what the provider reported (``None``: nothing); ``output_text`` what it
    streamed (for estimating when ``usage`` is missing); ``answered`` is false when it failed
    before the model ran (a 429, a refused connection: nothing is charged then); ``images`` is
    how many images were generated.
    """

    usage: Usage | None = None
    output_text: str = ""
    answered: bool = True
    images: int = 0


@dataclass(slots=True)
class SpendRecord:
    """What one guarded call used, filled in while it runs (see
    :meth:`~relaybot.core.modelio.resilience.ResilientProvider.guarded`): the block sets ``usage`` and
    ``images``; ``answered`` turns false when the call failed before the model ran."""

    usage: Usage | None = None
    images: int = 0
    answered: bool = True
    text: list[str] = field(default_factory=list)

    def outcome(self) -> CallOutcome:
        """The :class:`CallOutcome` to settle with."""
        return CallOutcome(
            usage=self.usage, output_text="".join(self.text), answered=self.answered, images=self.images
        )


class BaseSpendGuard(abc.ABC):
    """Reserves the worst case of provider calls against budgets and settles them.

    Implementations must make :meth:`reserve` atomic across tasks *and processes* sharing
    the database, and must let reservations expire.
    """

    def validate(self, config: Any) -> None:  # noqa: B027 - optional
        """Check the guard's settings in ``config`` (raise ConfigError); ``relaybot check``."""

    async def start(self, bot: BotServices) -> None:  # noqa: B027 - optional
        """Called once when the bot starts, after storage is open and before any call; ``bot``
        is what the guard may use of the running bot (its ``spending`` ledger, prices, counters).

        Raising :class:`~relaybot.core.contracts.errors.ConfigError` stops start-up."""

    async def status_lines_for(self, origin: RequestOrigin) -> list[str]:
        """What ``/usage`` shows about the budgets that apply to ``origin`` (one line each);
        none by default."""
        return []

    async def aclose(self) -> None:  # noqa: B027 - optional
        """Called once at shutdown, after the last call."""

    @abc.abstractmethod
    async def reserve(self, call: PlannedCall) -> Reservation:
        """Reserve the worst case of ``call`` against every budget that applies, or raise.

        Contract: either every applicable budget had room and the reservation is held (until
        :meth:`settle` or its expiry), or nothing is held and
        :class:`~relaybot.core.contracts.errors.BudgetExceededError` is raised naming the budget that
        has no room, what is left and when it resets.
        """

    @abc.abstractmethod
    async def settle(self, reservation: Reservation, outcome: CallOutcome) -> None:
        """Replace ``reservation`` by the real cost of the call and release the rest.

        Called exactly once per successful :meth:`reserve`, also when the call failed or was
        cancelled (``outcome.answered`` false and no usage: nothing is charged). Estimates from
        the reservation's prompt count and ``outcome.output_text`` stand in for a missing
        ``usage`` and are recorded as estimated. Must not raise for a failed database: log.
        """
