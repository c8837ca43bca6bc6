"""Retries, fallbacks and pre-emptive rate limits around providers.

Provider plugins do one HTTP request per :meth:`~BaseProvider.stream` call and raise typed
errors (:mod:`relaybot.core.contracts.errors`). :class:`ResilientProvider` wraps a chain
``[primary, *fallbacks]`` and turns those errors into the behaviour a chatting user wants:

- **Retry** the same provider on 429 (:class:`ProviderRateLimitError`), 5xx/529/network
  (:class:`ProviderUnavailableError`), timeouts (:class:`ProviderTimeoutError`) and 408/409,
  with exponential backoff and full jitter, honouring the provider's ``retry_after``.
- **Only before text was shown.** Once a ``TextDelta`` reached the consumer, a failure is
  re-raised as is: the core keeps the partial answer, marks it *interrupted* and says so.
  Retrying then would show the user a second, different answer glued to the first.
- **Fall back** to the next provider of the chain when retries are used up, when the key is
  rejected (401/403) or the model is unknown (404), or at once when the provider asks for a
  wait above ``max_retry_after`` — a chat should not stall for minutes. One WARNING names both
  providers (never keys).
- **Propagate** :class:`ContextTooLongError` (the core trims harder and asks again),
  :class:`ProviderResponseError` (a broken answer is not fixed by asking another model the
  same thing) and anything that is not a :class:`ProviderError`.
- **Wait before sending** when a :class:`~relaybot.core.modelio.ratelimit.BaseRateLimiter` is given:
  every attempt first acquires one request and an estimate of its tokens (input estimated at
  ~4 characters per token plus ``max_output_tokens``) under the provider's name, so RPM/TPM
  limits from config are kept instead of provoking 429s; the estimate is corrected with the
  reported usage afterwards.

Images: :meth:`ResilientProvider.generate_image` draws through the same chain, retries and
rate limits (providers whose capabilities say ``image_generation``).
- **Reserve before sending, settle after** when a :class:`~relaybot.core.contracts.spending.BaseSpendGuard`
  is given (the budgets plugin): every attempt — retries and fallbacks included — first
  reserves its worst case; a call no budget has room for raises
  :class:`~relaybot.core.contracts.errors.BudgetExceededError` (never retried, never sent to a
  fallback), unless the provider has a ``downgrade_to`` that fits: then the cheaper model
  answers and :attr:`ResilientStream.notes` says so. The reservation is settled to the real
  cost when the attempt ends, however it ends. :meth:`ResilientProvider.guarded` does the
  same for calls that are not chat streams (``/imagine``).

Which provider answered: ``stream()`` returns a :class:`ResilientStream` whose
:attr:`~ResilientStream.answered_by` / :attr:`~ResilientStream.answered_model` name it once
it started answering; :attr:`ResilientProvider.last_provider` holds the same for the most
recent stream of the instance (a convenience for logs: concurrent chats overwrite it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from relaybot.core.cli.config import RateLimitConfig
from relaybot.core.contracts.errors import (
    BudgetExceededError,
    CapabilityError,
    ConfigError,
    ProviderAuthError,
    ProviderError,
    ProviderNotFoundError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from relaybot.core.contracts.models import (
    ImagePart,
    ProviderEvent,
    ProviderRequest,
    TextDelta,
    TextPart,
    Usage,
    VideoPart,
)
from relaybot.core.contracts.provider import BaseProvider, GeneratedImage, ImageRequest
from relaybot.core.contracts.redact import redact
from relaybot.core.contracts.spending import BaseSpendGuard, PlannedCall, Reservation, SpendRecord
from relaybot.core.modelio.ratelimit import BaseRateLimiter, LocalRateLimiter, RateLimit, RedisRateLimiter

__all__ = [
    "ResilientProvider",
    "ResilientStream",
    "RetryPolicy",
    "SpendRecord",
    "build_rate_limiter",
    "estimate_request_tokens",
    "resolve_downgrades",
    "resolve_fallbacks",
    "wrap_providers",
]

log = logging.getLogger("relaybot.resilience")

#: statuses worth another try on the same provider besides 429/5xx (as the official SDKs do)
RETRY_STATUSES = frozenset({408, 409})
#: a rough token cost of one image in the estimate (providers charge ~85–1600)
_IMAGE_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try one provider before giving up on it.

    ``max_attempts`` counts the first request too (3 = two retries). Backoff before retry
    ``n`` (1-based) is uniform in ``[0, min(max_delay, base_delay * 2**(n-1))]`` ("full
    jitter", so many chats hit by one outage do not retry in lockstep). A provider's
    ``retry_after`` replaces the backoff when it is at most ``max_retry_after``; a longer one
    moves on to the next fallback at once (or fails, when there is none). The same cap bounds
    the wait for the pre-emptive rate limiter.
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("delays must not be negative")

    def backoff(self, retry: int, *, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(0, retry - 1))
        return rng() * ceiling


def estimate_request_tokens(request: ProviderRequest, max_output_tokens: int | None) -> int:
    """A rough token cost of ``request`` for rate limiting: ~4 characters a token for the
    text, a flat amount per image, plus the output the request allows."""
    chars = len(request.system)
    images = 0
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                chars += len(part.text)
            elif isinstance(part, ImagePart):
                images += 1
            elif isinstance(part, VideoPart):
                images += 8  # about as many frames, or a short clip sent whole
    per_message = 4 * len(request.messages)  # role markers and separators
    output = request.max_output_tokens or max_output_tokens or 0
    return math.ceil(chars / 4) + per_message + images * _IMAGE_TOKENS + output


def _retryable(exc: ProviderError) -> bool:
    """Worth another request to the same provider."""
    return isinstance(exc, ProviderRateLimitError | ProviderUnavailableError | ProviderTimeoutError) or (
        exc.status in RETRY_STATUSES
    )


def _falls_back(exc: ProviderError) -> bool:
    """Another provider may well answer where this one failed."""
    return _retryable(exc) or isinstance(exc, ProviderAuthError | ProviderNotFoundError)


class _LimiterTimeout(ProviderRateLimitError):
    """Our own rate limiter would wait too long: move on without retrying this provider."""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _LimiterTimeout):
        return "configured rpm/tpm limit"
    status = getattr(exc, "status", None)
    return type(exc).__name__ + (f" HTTP {status}" if status else "")


class ResilientStream:
    """The async iterator :meth:`ResilientProvider.stream` returns.

    Iterate it like any provider stream; :meth:`aclose` (or cancelling the consuming task)
    stops it promptly — a pending backoff sleep or rate-limit wait is abandoned and the
    underlying provider stream is closed. :attr:`answered_by` is the config name of the
    provider that produced the answer (``None`` until one started answering) and
    :attr:`answered_model` its model.
    """

    def __init__(self, owner: ResilientProvider, request: ProviderRequest) -> None:
        self.answered_by: str | None = None
        self.answered_model: str | None = None
        #: one entry per failed attempt: ``(provider name, error)``, for logs and tests
        self.failures: list[tuple[str, ProviderError]] = []
        #: sentences for the user about how the answer was made (a budget downgrade …)
        self.notes: list[str] = []
        self._gen: AsyncGenerator[ProviderEvent, None] = owner._run(request, self)

    def __aiter__(self) -> ResilientStream:
        return self

    async def __anext__(self) -> ProviderEvent:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop: closes the provider stream and abandons any wait."""
        await self._gen.aclose()


class ResilientProvider(BaseProvider):
    """A provider that retries, falls back along a chain, and keeps rate limits.

    ``name``, ``model`` and ``capabilities`` are the primary's, and every other attribute is
    looked up on the primary too (``count_tokens``, ``loaded``, ``config`` …), so the core can
    treat the wrapper as the provider itself. ``policies`` overrides ``policy`` per provider
    name (each ``[providers.*]`` table has its own ``max_retries``). ``limiter`` is consulted
    under each provider's ``name`` before every request. ``aclose`` closes the primary, and the
    fallbacks too unless ``close_fallbacks`` is false (the app shares fallbacks between chains
    and closes each provider once). ``guard`` reserves and settles every request (see the module
    docstring); ``downgrades`` maps a provider name to ``(provider, model)`` to try when a
    budget has no room (``model`` ``None``: that provider's own model).
    """

    def __init__(
        self,
        primary: BaseProvider,
        fallbacks: Sequence[BaseProvider] = (),
        *,
        policy: RetryPolicy | None = None,
        policies: Mapping[str, RetryPolicy] | None = None,
        limiter: BaseRateLimiter | None = None,
        close_fallbacks: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        guard: BaseSpendGuard | None = None,
        downgrades: Mapping[str, tuple[BaseProvider, str | None]] | None = None,
    ) -> None:
        self._primary = primary
        self._fallbacks = tuple(fallbacks)
        self.policy = policy or RetryPolicy()
        self._policies = dict(policies or {})
        self.limiter = limiter
        self._close_fallbacks = close_fallbacks
        self._sleep = sleep
        self.guard = guard
        self._downgrades = dict(downgrades or {})
        self.name = primary.name
        self.model = primary.model
        self.capabilities = primary.capabilities
        #: config name of the provider that answered the most recent stream (see module doc)
        self.last_provider: str | None = None

    def __getattr__(self, attr: str) -> Any:
        # Only called for attributes not found normally: delegate to the primary provider.
        if attr.startswith("__") or attr == "_primary":
            raise AttributeError(attr)
        return getattr(self._primary, attr)

    @property
    def primary(self) -> BaseProvider:
        """The provider asked first."""
        return self._primary

    @property
    def fallbacks(self) -> tuple[BaseProvider, ...]:
        """The providers asked, in order, when the primary cannot answer."""
        return self._fallbacks

    @property
    def chain(self) -> tuple[BaseProvider, ...]:
        """``(primary, *fallbacks)``."""
        return (self._primary, *self._fallbacks)

    def policy_for(self, provider: BaseProvider) -> RetryPolicy:
        """The retry policy used for ``provider``."""
        return self._policies.get(provider.name, self.policy)

    def stream(self, request: ProviderRequest) -> ResilientStream:
        """Stream the answer from the first provider of the chain that can give one.

        Same contract as :meth:`BaseProvider.stream`; the events are those of the provider
        that answered, unchanged. Raises the last provider's error when the chain is used up.
        """
        return ResilientStream(self, request)

    async def _run(
        self, request: ProviderRequest, stream: ResilientStream
    ) -> AsyncGenerator[ProviderEvent, None]:
        chain = self.chain
        for index, provider in enumerate(chain):
            policy = self.policy_for(provider)
            attempt = 0
            while True:
                attempt += 1
                shown = False
                try:
                    target, attempt_request, reservation = await self._reserve(
                        provider, request, stream, attempt
                    )
                    record = SpendRecord()
                    try:
                        await self._acquire(target, attempt_request, policy)
                        # aclosing: a consumer that stops early must close the HTTP stream now,
                        # not whenever the garbage collector finalises the generator
                        async with contextlib.aclosing(
                            self._attempt(target, attempt_request, stream, record)
                        ) as events:
                            async for event in events:
                                shown = True
                                yield event
                    except _LimiterTimeout:
                        record.answered = False  # never sent
                        raise
                    finally:
                        if reservation is not None:
                            await self._settle(reservation, record)
                    return
                except ProviderError as exc:
                    if shown:
                        raise  # text is on screen: the core marks the reply interrupted
                    stream.failures.append((provider.name, exc))
                    wait = self._after_failure(exc, provider, policy, attempt, chain[index + 1 : index + 2])
                    if wait is None:
                        break  # falling back to the next provider
                    await self._sleep(wait)

    async def generate_image(self, request: ImageRequest) -> GeneratedImage:
        """Draw a picture with the first provider of the chain that can, with the same retries,
        rate limits and fallbacks as :meth:`stream` (chain members without
        ``capabilities.image_generation`` are skipped). ``GeneratedImage.provider`` names the
        provider that drew it. Raises the last provider's error when the chain is used up,
        :class:`~relaybot.core.contracts.errors.CapabilityError` when no provider of the chain draws.
        """
        chain = [p for p in self.chain if p.capabilities.image_generation]
        if not chain:
            raise CapabilityError(f"{self.name}: no provider of this chain can generate images")
        for index, provider in enumerate(chain):
            policy = self.policy_for(provider)
            attempt = 0
            while True:
                attempt += 1
                try:
                    await self._acquire(provider, None, policy)
                    image = await provider.generate_image(request)
                    self.last_provider = provider.name
                    return replace(image, provider=provider.name)
                except ProviderError as exc:
                    wait = self._after_failure(exc, provider, policy, attempt, chain[index + 1 : index + 2])
                    if wait is None:
                        break
                    await self._sleep(wait)
        raise AssertionError("unreachable: the last provider's error is raised")  # pragma: no cover

    def _after_failure(
        self,
        exc: ProviderError,
        provider: BaseProvider,
        policy: RetryPolicy,
        attempt: int,
        following: Sequence[BaseProvider],
    ) -> float | None:
        """After a failed attempt: seconds to wait before retrying ``provider``, ``None`` to
        fall back to ``following[0]``; re-raises ``exc`` when neither applies."""
        wait = self._retry_wait(exc, policy, attempt)
        if wait is not None:
            log.info(
                "%s: %s, retry %d/%d in %.1fs",
                provider.name,
                _describe(exc),
                attempt,
                policy.max_attempts - 1,
                wait,
            )
            return wait
        if following and _falls_back(exc):
            nxt = following[0]
            log.warning(
                "provider %r failed (%s: %s); falling back to %r (model %r)",
                provider.name,
                _describe(exc),
                redact(str(exc)),
                nxt.name,
                nxt.model,
            )
            return None
        raise exc

    def _downgrade_path(self, provider: BaseProvider) -> list[tuple[BaseProvider, str | None]]:
        """``provider`` itself, then its ``downgrade_to`` chain (each step once)."""
        path: list[tuple[BaseProvider, str | None]] = [(provider, None)]
        seen = {(provider.name, provider.model)}
        current = provider
        while (step := self._downgrades.get(current.name)) is not None:
            target, model = step
            key = (target.name, model or target.model)
            if key in seen:
                break
            seen.add(key)
            path.append(step)
            if target is current:
                break  # a cheaper model of the same provider: its own downgrade_to is this one
            current = target
        return path

    async def _reserve(
        self, provider: BaseProvider, request: ProviderRequest, stream: ResilientStream, attempt: int
    ) -> tuple[BaseProvider, ProviderRequest, Reservation | None]:
        """Reserve the worst case of one attempt (downgrading when configured and needed).

        Returns the provider and request to send and the reservation (``None`` without a
        guard); raises the first BudgetExceededError when nothing on the path fits.
        """
        guard = self.guard
        if guard is None:
            return provider, request, None
        refused: BudgetExceededError | None = None
        for target, model in self._downgrade_path(provider):
            attempt_request = request if model is None else replace(request, model=model)
            call = PlannedCall(
                provider=target.name,
                model=model or target.model,
                kind="chat",
                origin=request.origin,
                request=attempt_request,
                max_output_tokens=request.max_output_tokens or target.capabilities.max_output_tokens,
                attempt=attempt,
            )
            try:
                reservation = await guard.reserve(call)
            except BudgetExceededError as exc:
                refused = refused or exc
                continue
            if refused is not None:
                note = (
                    f"💸 {refused.budget[:1].upper()}{refused.budget[1:]} has no room for "
                    f"{provider.model}, so the cheaper {call.model} answered instead."
                )
                if note not in stream.notes:
                    stream.notes.append(note)
                log.info(
                    "%s: budget downgrade %s -> %s (%s)", provider.name, provider.model, call.model, refused
                )
            return target, attempt_request, reservation
        assert refused is not None
        raise refused

    async def _settle(self, reservation: Reservation, record: SpendRecord) -> None:
        """Settle one reservation; shielded, so a cancelled reply still settles."""
        assert self.guard is not None
        try:
            await asyncio.shield(self.guard.settle(reservation, record.outcome()))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not settle a budget reservation (it expires on its own)")

    @contextlib.asynccontextmanager
    async def guarded(self, call: PlannedCall) -> AsyncIterator[SpendRecord]:
        """Reserve ``call`` (an image, or another request that is not a chat stream), run the
        block, settle with what the block put in the yielded :class:`SpendRecord`.

        Raises :class:`BudgetExceededError` before the block when no budget has room. A
        :class:`ProviderError` leaving the block with no usage recorded charges nothing (the
        provider refused before working).
        """
        record = SpendRecord()
        if self.guard is None:
            yield record
            return
        reservation = await self.guard.reserve(call)
        try:
            yield record
        except ProviderError:
            if record.usage is None and not record.images:
                record.answered = False
            raise
        finally:
            await self._settle(reservation, record)

    def _retry_wait(self, exc: ProviderError, policy: RetryPolicy, attempt: int) -> float | None:
        """Seconds to wait before asking the same provider again, or ``None`` to move on."""
        if not _retryable(exc) or attempt >= policy.max_attempts or isinstance(exc, _LimiterTimeout):
            return None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            if retry_after > policy.max_retry_after:
                return None  # the provider wants a long pause: better ask the next one now
            return float(retry_after)
        return policy.backoff(attempt)

    async def _acquire(
        self, provider: BaseProvider, request: ProviderRequest | None, policy: RetryPolicy
    ) -> None:
        """Wait for the provider's rate limit (bounded by ``max_retry_after``); ``request``
        ``None`` is one request without text tokens (an image)."""
        if self.limiter is None or self.limiter.limit(provider.name) is None:
            return
        max_output = provider.capabilities.max_output_tokens
        tokens = estimate_request_tokens(request, max_output) if request is not None else 0
        try:
            async with asyncio.timeout(policy.max_retry_after):
                await self.limiter.acquire(provider.name, tokens=tokens)
        except TimeoutError:
            raise _LimiterTimeout(
                f"{provider.name}: the configured rpm/tpm limit would make this request wait "
                f"more than {policy.max_retry_after:g}s",
                provider=provider.name,
            ) from None

    async def _attempt(
        self, provider: BaseProvider, request: ProviderRequest, stream: ResilientStream, record: SpendRecord
    ) -> AsyncGenerator[ProviderEvent, None]:
        """One request to ``provider``: yield its events, settle the rate-limit estimate, and
        note in ``record`` what it used (for the spend guard)."""
        limiter = self.limiter if self.limiter and self.limiter.limit(provider.name) else None
        reserved = estimate_request_tokens(request, provider.capabilities.max_output_tokens) if limiter else 0
        usage: Usage | None = None
        answered = False
        model = request.model or provider.model
        events = provider.stream(request)
        try:
            async for event in events:
                if not answered and isinstance(event, TextDelta):
                    answered = True
                    stream.answered_by, stream.answered_model = provider.name, model
                    self.last_provider = provider.name
                if isinstance(event, Usage):
                    usage = record.usage = event
                elif isinstance(event, TextDelta):
                    record.text.append(event.text)
                yield event
            if not answered:  # an empty answer is still this provider's answer
                stream.answered_by, stream.answered_model = provider.name, model
                self.last_provider = provider.name
        except ProviderError:
            if usage is None and not answered:
                record.answered = False  # refused before the model ran: nothing to charge
            if limiter is not None and usage is None and not answered:
                # refused before the model ran (429, 503 …): give the estimate back
                await _quietly(limiter.record(provider.name, -reserved))
            raise
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        if limiter is not None and usage is not None and not usage.estimated:
            await _quietly(limiter.record(provider.name, usage.input_tokens + usage.output_tokens - reserved))

    async def aclose(self) -> None:
        """Close the primary (and the fallbacks, see the class docstring)."""
        for provider in self.chain if self._close_fallbacks else (self._primary,):
            await provider.aclose()


async def _quietly(correction: Awaitable[None]) -> None:
    """Run a limiter correction; a failing limiter (Redis down) must not fail a reply."""
    try:
        await correction
    except Exception:
        log.warning("could not update the rate limiter", exc_info=True)


# ── wiring from config (used by relaybot.core.runtime.app) ──────────────────────────────────────────


def resolve_fallbacks(settings: Mapping[str, Any], source: str = "<config>") -> dict[str, list[str]]:
    """Each provider's fallback names from its ``fallbacks`` key, checked against the others.

    Chains are not transitive (A → B and B → A is fine: A's chain is ``[A, B]``, B's
    ``[B, A]``). Raises :class:`ConfigError` naming ``providers.NAME.fallbacks`` for an unknown
    name, the provider itself, or a name listed twice.
    """
    chains: dict[str, list[str]] = {}
    for name, cfg in settings.items():
        names = list(getattr(cfg, "fallbacks", None) or [])
        key = f"providers.{name}.fallbacks"
        for fallback in names:
            if fallback == name:
                raise ConfigError(f"{name!r} cannot be its own fallback; remove it", path=source, key=key)
            if fallback not in settings:
                known = ", ".join(sorted(settings))
                raise ConfigError(
                    f"{fallback!r} names no [providers.{fallback}] table (configured: {known}); "
                    f"fix the name or add the table",
                    path=source,
                    key=key,
                )
        if len(set(names)) != len(names):
            raise ConfigError("a provider is listed twice; list each once", path=source, key=key)
        chains[name] = names
    return chains


def rate_limits(settings: Mapping[str, Any]) -> dict[str, RateLimit]:
    """The ``rpm``/``tpm`` limits configured per provider name (unlimited ones left out)."""
    limits: dict[str, RateLimit] = {}
    for name, cfg in settings.items():
        limit = RateLimit(rpm=getattr(cfg, "rpm", None), tpm=getattr(cfg, "tpm", None))
        if not limit.unlimited:
            limits[name] = limit
    return limits


def build_rate_limiter(config: RateLimitConfig, settings: Mapping[str, Any]) -> BaseRateLimiter | None:
    """The limiter for ``[ratelimit]`` with every provider's limits, or ``None`` when no provider
    has ``rpm``/``tpm`` set (then nothing waits and nothing connects to Redis)."""
    limits = rate_limits(settings)
    if not limits:
        return None
    if config.backend == "redis":
        return RedisRateLimiter(limits, url=config.redis_url, prefix=config.key_prefix)
    return LocalRateLimiter(limits)


def policy_from_config(cfg: Any) -> RetryPolicy:
    """The :class:`RetryPolicy` of one ``[providers.NAME]`` table."""
    max_wait = float(getattr(cfg, "retry_max_wait", 60.0))
    return RetryPolicy(
        max_attempts=int(getattr(cfg, "max_retries", 2)) + 1,
        max_delay=min(RetryPolicy().max_delay, max_wait),
        max_retry_after=max_wait,
    )


def resolve_downgrades(
    providers: Mapping[str, BaseProvider], settings: Mapping[str, Any], source: str = "<config>"
) -> dict[str, tuple[BaseProvider, str | None]]:
    """Each provider's ``downgrade_to``: another ``[providers.NAME]`` (its own model), or else a
    model name of the same provider. Raises :class:`ConfigError` when it names the provider's
    own model."""
    downgrades: dict[str, tuple[BaseProvider, str | None]] = {}
    for name, cfg in settings.items():
        target = str(getattr(cfg, "downgrade_to", "") or "")
        if not target or name not in providers:
            continue
        if target == name or target == providers[name].model:
            raise ConfigError(
                "names this provider's own model; name a cheaper model or another [providers.*] table",
                path=source,
                key=f"providers.{name}.downgrade_to",
            )
        if target in providers:
            downgrades[name] = (providers[target], None)
        else:
            downgrades[name] = (providers[name], target)
    return downgrades


def wrap_providers(
    providers: Mapping[str, BaseProvider],
    settings: Mapping[str, Any],
    *,
    limiter: BaseRateLimiter | None = None,
    source: str = "<config>",
    guard: BaseSpendGuard | None = None,
) -> dict[str, ResilientProvider]:
    """Wrap every built provider in a :class:`ResilientProvider` with its configured chain.

    The chain members are the *unwrapped* providers, shared between chains; each wrapper
    closes only its own primary, so every provider is closed once. ``guard`` (the spend guard)
    is consulted before every request of every wrapper.
    """
    chains = resolve_fallbacks(settings, source)
    downgrades = resolve_downgrades(providers, settings, source)
    policies = {name: policy_from_config(cfg) for name, cfg in settings.items()}
    return {
        name: ResilientProvider(
            provider,
            [providers[f] for f in chains.get(name, [])],
            policy=policies.get(name),
            policies=policies,
            limiter=limiter,
            close_fallbacks=False,
            guard=guard,
            downgrades=downgrades,
        )
        for name, provider in providers.items()
    }
