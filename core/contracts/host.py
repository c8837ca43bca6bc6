"""The typed boundary: what the running core offers the plugins inside it.

Connectors and plugins never hold the running app. They get one of two typed surfaces:

- :class:`BotServices` — what plugins use (command handlers through ``ctx.bot``, scheduled jobs
  through ``ctx.bot``, the lifecycle hooks, a spend guard): the config, the price table, the
  media store, providers and token counters, sending a text through the streaming scheduler,
  a chat's conversations, usage and spend records, the admin check.
- :class:`ConnectorHost` — what a connector is handed in :meth:`BaseConnector.start
  <relaybot.core.contracts.connector.BaseConnector.start>`: everything of :class:`BotServices` plus
  intake (:meth:`ConnectorHost.deliver`, with each chat's order kept by the core), the
  registered commands (for platform command menus), hook objects that live as long as the
  connector (:meth:`ConnectorHost.add_hooks`), event de-duplication that survives restarts
  (:meth:`ConnectorHost.claim_event`), regenerating an answer and cost estimates (for
  connectors with their own UI, like the web chat).

Both are abstract here (the contract); :mod:`relaybot.core.runtime.services` implements them on the
running bot, and the testing kit can implement them on fakes.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from relaybot.core.contracts.connector import OutgoingKind
from relaybot.core.contracts.models import ChatKey, IncomingMessage, RequestOrigin, Usage, User

if TYPE_CHECKING:
    from relaybot.core.cli.config import RelaybotConfig
    from relaybot.core.contracts.commands import Command
    from relaybot.core.contracts.hooktypes import ReplyRecord
    from relaybot.core.contracts.provider import BaseProvider, GeneratedImage, ImageRequest
    from relaybot.core.contracts.spending import BaseSpendGuard
    from relaybot.core.modelio.media import MediaStore
    from relaybot.core.modelio.pricing import PriceTable
    from relaybot.core.modelio.tokens import TokenCounter
    from relaybot.core.runtime.conversations import ChatConversations
    from relaybot.core.storage.spending import BudgetCheck, Override, Shortfall, SpendDraft
    from relaybot.core.streaming import ReplyStream

__all__ = [
    "BotServices",
    "ConnectorHost",
    "CostEstimate",
    "Handover",
    "ReplyCost",
    "SpendLedger",
    "UsageLedger",
]


@dataclass(frozen=True, slots=True)
class Handover:
    """What became of a message a connector delivered (:meth:`ConnectorHost.deliver`).

    ``accepted`` is true once the core has the message: stored (the moment it arrives, before
    anything can cancel it), or known to be a command, a denied message or a re-delivery. It is
    false when the connector's preparation gave no message (it told the user why itself) or the
    core stopped taking messages (shutdown). ``answered`` is done when the message has been
    fully handled (answered, refused, or nothing to do); it never raises.
    """

    accepted: bool
    answered: asyncio.Future[None]


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """What sending a text into a conversation would cost (:meth:`ConnectorHost.estimate`).

    ``context_tokens`` is what the provider would be sent (system prompt, the history that
    fits, the new text), ``estimated`` false only when counted with the model's own
    tokenizer. ``input_usd`` prices those tokens, ``max_usd`` adds a full
    ``max_output_tokens`` answer — what a budget reserves. Both are ``None`` when the model
    has no price.
    """

    context_tokens: int
    max_output_tokens: int
    model: str
    estimated: bool
    input_usd: float | None
    max_usd: float | None
    prices_as_of: str


@dataclass(frozen=True, slots=True)
class ReplyCost:
    """What one finished reply used and cost (:meth:`ConnectorHost.reply_cost`)."""

    model: str
    input_tokens: int
    output_tokens: int
    estimated: bool
    cost_usd: float | None


class UsageLedger(Protocol):
    """Stored token usage, as reports read it (``bot.usage``)."""

    async def usage_totals(self, *, user_id: str | None = None, since: datetime | None = None) -> Usage:
        """Tokens used (by ``user_id``, since ``since``), summed over every model."""

    async def usage_by_model(
        self, *, user_id: str | None = None, since: datetime | None = None
    ) -> dict[str, Usage]:
        """Tokens used per model (by ``user_id``, since ``since``)."""

    async def usage_rows(self, *, since: datetime) -> list[tuple[str, str, str, str, int, int, int]]:
        """Per (platform, chat, user, model): input, output and cached tokens since ``since``."""


class SpendLedger(Protocol):
    """Reserved and settled spend and admins' budget overrides (``bot.spending``).

    The storage half of a spend guard: reservations are atomic against every budget they
    name, also across processes sharing one database (see the budgets plugin).
    """

    async def reserve_spend(
        self,
        draft: SpendDraft,
        checks: Sequence[BudgetCheck],
        *,
        now: datetime,
        expires_at: datetime,
    ) -> tuple[int | None, Shortfall | None]:
        """Reserve ``draft`` if it fits every check: ``(record id, None)``, else ``(None, shortfall)``."""

    async def settle_spend(self, record_id: int, draft: SpendDraft) -> None:
        """Replace a reservation by what the call really used."""

    async def record_spend(self, draft: SpendDraft, *, now: datetime | None = None) -> int:
        """Record spend that was not reserved first; returns the record id."""

    async def spent(self, checks: Sequence[BudgetCheck], *, now: datetime) -> list[tuple[int, int]]:
        """Per check, ``(tokens, micro-dollars)`` spent and reserved in its period."""

    async def set_budget_override(self, override: Override) -> None:
        """Store an admin's budget for one user or chat (replaces an earlier one)."""

    async def delete_budget_override(self, scope: str, subject: str) -> bool:
        """Remove an admin's budget; True if there was one."""

    async def budget_overrides(self, subjects: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Override]:
        """The stored overrides of these ``(scope, subject)`` pairs."""


class BotServices(abc.ABC):
    """What a plugin may use of the running bot (``ctx.bot`` in commands and jobs).

    Everything here is safe to call from any task of the bot's event loop. Nothing here
    blocks the loop: the async methods do their I/O off it or on the database's own worker.
    """

    @property
    @abc.abstractmethod
    def config(self) -> RelaybotConfig:
        """The validated configuration (read it, never change it)."""

    @property
    @abc.abstractmethod
    def prices(self) -> PriceTable:
        """Model prices: the shipped table with the config's corrections."""

    @property
    @abc.abstractmethod
    def media(self) -> MediaStore:
        """Images and videos by content hash (``media:<sha256>`` references)."""

    @property
    @abc.abstractmethod
    def usage(self) -> UsageLedger:
        """Stored token usage."""

    @property
    @abc.abstractmethod
    def spending(self) -> SpendLedger:
        """Reserved and settled spend, budget overrides."""

    @property
    @abc.abstractmethod
    def spend_guard(self) -> BaseSpendGuard | None:
        """The registered spend guard (budgets), or ``None``."""

    @property
    @abc.abstractmethod
    def plugin_settings(self) -> Mapping[str, Any]:
        """Validated ``[plugins.NAME]`` settings by table name (read them with ``SETTINGS.of(bot)``)."""

    @abc.abstractmethod
    def provider(self, name: str | None = None) -> BaseProvider:
        """The running provider ``[providers.NAME]`` (the default one when ``None``), with the
        core's retries, rate limits, fallbacks and spend guard around it."""

    @abc.abstractmethod
    def provider_type(self, name: str) -> str:
        """The ``type`` of provider ``name`` (``openai``, ``llama_cpp`` …)."""

    @abc.abstractmethod
    def token_counter(self, provider: str) -> TokenCounter:
        """A token counter suited to provider ``provider``'s model (cached)."""

    @abc.abstractmethod
    async def generate_image(
        self, provider: str, request: ImageRequest, *, origin: RequestOrigin | None
    ) -> GeneratedImage:
        """Draw an image through the resilience layer (retries, ``rpm`` limits, fallbacks) with
        its cost reserved and settled by the spend guard. Raises ProviderError subclasses
        (BudgetExceededError when a budget refuses it)."""

    @abc.abstractmethod
    def is_admin(self, message: IncomingMessage) -> bool:
        """True if the sender is an admin (flag from the connector or ``[bot] admins``)."""

    @abc.abstractmethod
    def admin_chats(self) -> tuple[ChatKey, ...]:
        """The private chats of ``[bot] admins`` (``platform:user`` entries)."""

    @abc.abstractmethod
    def conversations(self, chat: ChatKey, message: IncomingMessage | None = None) -> ChatConversations:
        """The conversations of ``chat`` (``message``: the one being handled, for ``stop``)."""

    @abc.abstractmethod
    async def send(
        self,
        chat: ChatKey,
        text: str,
        *,
        private: bool = True,
        reply_to: str | None = None,
        kind: OutgoingKind = "notice",
    ) -> list[str]:
        """Send a complete text into ``chat`` through its streaming scheduler (paced, split at
        the platform's limit, 429s waited out); returns the platform message ids. Raises
        :class:`~relaybot.core.contracts.errors.CapabilityError` when no connector of that platform runs."""

    @abc.abstractmethod
    def open_stream(
        self,
        chat: ChatKey,
        *,
        private: bool = True,
        reply_to: str | None = None,
        kind: OutgoingKind = "command",
        feedback: bool = False,
    ) -> ReplyStream:
        """A scheduler stream into ``chat`` for output built up over time (a progress notice
        that becomes an image, a long command answer). ``feedback`` shows the typing indicator
        at once. Follow :class:`~relaybot.core.streaming.ReplyStream`'s contract."""


    @abc.abstractmethod
    async def delete_old_conversations(self, cutoff: datetime, *, media: bool = True) -> tuple[int, int]:
        """Delete conversations unchanged since ``cutoff`` and, with ``media``, the media files
        no remaining message refers to that are older than ``cutoff``; returns
        ``(conversations, files)`` deleted (the retention job)."""


class ConnectorHost(BotServices):
    """What a connector is handed when it starts: :class:`BotServices` plus intake.

    One host per connector: hook objects added with :meth:`add_hooks` are removed when the
    connector is closed, and :meth:`claim_event` keys are kept per connector.
    """

    @property
    @abc.abstractmethod
    def connector_name(self) -> str:
        """The ``[connectors.NAME]`` of the connector this host serves (its ChatKeys' platform)."""

    @property
    @abc.abstractmethod
    def commands(self) -> Sequence[Command]:
        """The registered chat commands, sorted by name (for platform command menus)."""

    @abc.abstractmethod
    def command(self, name: str) -> Command | None:
        """The registered command ``name`` (no slash, lower case), or ``None``."""

    @abc.abstractmethod
    def deliver(
        self, chat: ChatKey, message: IncomingMessage | Awaitable[IncomingMessage | None]
    ) -> asyncio.Future[Handover]:
        """Hand a message in; each chat's messages reach the core in the order of these calls.

        Call it synchronously when the platform event arrives, in the order the platform sent
        them. ``message`` is the message, or an awaitable that prepares it (a download); the
        awaitable starts at once (downloads of one chat run concurrently) but its message is
        handed over only after every earlier message of ``chat``. A preparation that returns
        ``None`` (it told the user why) or raises (logged) hands nothing over and lets the next
        message of the chat go.

        The returned future is done once the message is accepted (stored, or known as a command,
        a denial, a re-delivery): await it before acknowledging the message to the platform when
        the platform re-delivers what is not acknowledged. It never raises; see
        :class:`Handover`. Other chats never wait for this one.
        """

    @abc.abstractmethod
    async def claim_event(self, key: str) -> bool:
        """True the first time this connector claims ``key`` (a platform event id), False after.

        Claims are stored in the database, so a re-delivered event is recognised after a
        restart and by another process sharing the database. Keys older than a day may be
        forgotten (platforms re-deliver within minutes).
        """

    @abc.abstractmethod
    def add_hooks(self, plugin: object, name: str = "") -> None:
        """Register ``plugin`` (an object with ``@hookimpl`` methods, e.g. an ``after_reply``
        for this connector's chats or a ``check_access`` with the platform's allow-lists) until
        the connector is closed. ``name`` defaults to one derived from the connector's."""

    @abc.abstractmethod
    async def regenerate(self, chat: ChatKey, user: User, *, private: bool = True) -> Handover:
        """Answer the last user message of the active conversation again, as a new branch."""

    @abc.abstractmethod
    async def estimate(self, chat: ChatKey, text: str, *, conversation_id: int | None = None) -> CostEstimate:
        """What sending ``text`` into the conversation (default: the active one) would cost with
        the default provider. Raises ``NotFoundError`` for a conversation of another chat."""

    @abc.abstractmethod
    def reply_cost(self, reply: ReplyRecord) -> ReplyCost | None:
        """What a finished reply used and cost (``None`` when it used nothing)."""
