"""The provider contract kit: a pytest suite a provider author points at their provider.

Every provider relaybot loads must keep the same stream contract, because the core's reply loop
relies on it: text arrives as :class:`~relaybot.core.contracts.models.TextDelta` events, at most
one :class:`~relaybot.core.contracts.models.Usage`, exactly one
:class:`~relaybot.core.contracts.models.Finish` and it is
last; closing the stream early (``aclose()``, or cancelling the task that reads it — what
``/stop`` and shutdown do) releases the model or HTTP stream, and the provider keeps working
afterwards. HTTP providers also turn the server's failures into the errors the resilience layer
acts on (429 → :class:`~relaybot.core.contracts.errors.ProviderRateLimitError`, 5xx and a cut-off stream →
:class:`~relaybot.core.contracts.errors.ProviderUnavailableError`, a bad key →
:class:`~relaybot.core.contracts.errors.ProviderAuthError`, silence → ``ProviderTimeoutError``).

Use it by subclassing in a test module (the class name must start with ``Test``)::

    from relaybot.testing import HTTPProviderContract

    class TestMyProviderContract(HTTPProviderContract):
        @pytest.fixture
        async def contract_fake(self):              # a fake server of your API (see below)
            async with MyFakeServer(api_key="sk-test") as fake:
                yield fake

        @pytest.fixture
        async def contract_make(self, contract_fake):  # make(**config) -> your provider
            made = []
            def make(**config):
                config.setdefault("base_url", contract_fake.base_url)
                config.setdefault("api_key", "sk-test")
                made.append(provider := MyProvider("mine", MyConfig(**config)))
                return provider
            yield make
            for provider in made:
                await provider.aclose()

For a provider without an HTTP API (a local model), subclass :class:`ProviderContract` and give
a ``contract_provider`` fixture returning a ready provider; the stream checks then ask the model
:attr:`ProviderContract.long_prompt` instead of scripting a fake.

The fake for :class:`HTTPProviderContract` follows relaybot's fakes
(:class:`~relaybot.testing.FakeOpenAIServer`, ``FakeAnthropicServer``, ``FakeGeminiServer``):
``add_reply(text, *, first_token_delay, tokens_per_second, chunk_size_chars, drop_after_chars)``,
``add_error(status, message, *, retry_after)``, ``wait_for_disconnects(count)``, and it refuses
other API keys than the one it was started with. ``contract_make`` accepts ``api_key`` and
``chunk_timeout`` (the settings every provider config has).

The async tests need pytest-asyncio: ``asyncio_mode = "auto"``, or ``pytestmark =
pytest.mark.asyncio`` in the subclass (with ``loop_scope=`` matching your provider fixture's).
Override a test method in the subclass to adapt it; the helpers :func:`collect`,
:func:`text_of` and :func:`failure` are public for your own tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from relaybot.core.contracts.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimitError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from relaybot.core.contracts.models import (
    ChatMessage,
    Finish,
    ProviderEvent,
    ProviderRequest,
    Role,
    TextDelta,
    Usage,
)
from relaybot.core.contracts.provider import BaseProvider

__all__ = ["HTTPProviderContract", "ProviderContract", "collect", "failure", "text_of"]

#: generous: the checks wait for events, never for time, but a loaded machine is slow
WAIT = 15.0


def request(text: str = "hi", *, max_output_tokens: int | None = None) -> ProviderRequest:
    """A one-message request (system prompt "Be brief.")."""
    return ProviderRequest(
        "Be brief.", [ChatMessage.text(Role.USER, text)], max_output_tokens=max_output_tokens
    )


async def collect(provider: BaseProvider, req: ProviderRequest | None = None) -> list[ProviderEvent]:
    """All events of one stream, checking the stream contract on the way.

    Exactly one :class:`Finish`, and last; at most one :class:`Usage`, before it; no empty
    :class:`TextDelta`.
    """
    events = [e async for e in provider.stream(req or request())]
    assert events, "the stream ended without any event (a Finish is always last)"
    assert isinstance(events[-1], Finish), f"the last event is {events[-1]!r}, not a Finish"
    assert sum(isinstance(e, Finish) for e in events) == 1, "more than one Finish"
    assert sum(isinstance(e, Usage) for e in events) <= 1, "more than one Usage"
    assert all(e.text for e in events if isinstance(e, TextDelta)), "an empty TextDelta"
    return events


def text_of(events: Iterable[ProviderEvent], kind: str | None = None) -> str:
    """The text of the deltas (only those of ``kind`` when given)."""
    return "".join(e.text for e in events if isinstance(e, TextDelta) and (kind is None or e.kind == kind))


async def failure(
    provider: BaseProvider, req: ProviderRequest | None = None, *, kind: str | None = None
) -> tuple[str, ProviderError]:
    """Run a stream that must fail; return (text delivered before the error, the error)."""
    got: list[ProviderEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in provider.stream(req or request()):
            got.append(event)
    return text_of(got, kind), info.value


class ProviderContract:
    """Checks every provider must pass. Subclass it and provide the ``contract_provider`` fixture.

    With a ``contract_fake`` (an HTTP fake, see the module docstring) the long answers are
    scripted on it; without one (the default ``None``) they are asked of the model itself.
    """

    #: what a real model is asked when no fake scripts the answer: something long, so a stream
    #: can be stopped in the middle
    long_prompt = "Count from one to two hundred in words, separated by commas."
    #: output tokens allowed for :attr:`long_prompt` (enough for several deltas)
    long_max_tokens = 64

    @pytest.fixture
    def contract_fake(self) -> Any:
        """The fake server the provider talks to, or None (a local model)."""
        return None

    def long_request(self, fake: Any) -> ProviderRequest:
        """A request whose answer streams for a while (scripted on ``fake`` when there is one)."""
        if fake is not None:
            fake.add_reply("word " * 200, chunk_size_chars=5, tokens_per_second=20)
            return request("tell me a long story")
        return request(self.long_prompt, max_output_tokens=self.long_max_tokens)

    def short_request(self, fake: Any, text: str) -> ProviderRequest:
        """A request answered with ``text`` by ``fake`` (or whatever a real model says)."""
        if fake is not None:
            fake.add_reply(text, chunk_size_chars=3)
        return request("Say hello.", max_output_tokens=self.long_max_tokens)

    async def check_still_working(self, provider: BaseProvider, fake: Any) -> None:
        """The next stream after an early close is complete."""
        events = await collect(provider, self.short_request(fake, "again"))
        if fake is not None:
            assert text_of(events) == "again"
        else:
            assert text_of(events).strip(), "no answer after a stream was closed early"

    async def test_stream_is_deltas_then_one_finish(
        self, contract_provider: BaseProvider, contract_fake: Any
    ):
        text = "Hello there — a scripted answer, in pieces. ✓"
        events = await collect(contract_provider, self.short_request(contract_fake, text))
        usage = [i for i, e in enumerate(events) if isinstance(e, Usage)]
        assert not usage or usage[0] < len(events) - 1
        if contract_fake is not None:
            assert text_of(events) == text  # every piece, in order, nothing added
        else:
            assert text_of(events).strip(), "the model answered no text"

    async def test_aclose_mid_stream_releases_it_and_the_provider_keeps_working(
        self, contract_provider: BaseProvider, contract_fake: Any
    ):
        stream = contract_provider.stream(self.long_request(contract_fake))
        first = await asyncio.wait_for(anext(stream), WAIT)
        assert isinstance(first, TextDelta) and first.text
        await stream.aclose()  # type: ignore[attr-defined]
        if contract_fake is not None:
            async with asyncio.timeout(WAIT):
                await contract_fake.wait_for_disconnects(1)
        await self.check_still_working(contract_provider, contract_fake)

    async def test_cancelling_the_reader_releases_the_stream_and_the_provider_keeps_working(
        self, contract_provider: BaseProvider, contract_fake: Any
    ):
        first = asyncio.Event()
        req = self.long_request(contract_fake)

        async def consume() -> None:
            async with contextlib.aclosing(contract_provider.stream(req)) as stream:  # type: ignore[type-var]
                async for _ in stream:
                    first.set()

        task = asyncio.create_task(consume())
        async with asyncio.timeout(WAIT):
            await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if contract_fake is not None:
            async with asyncio.timeout(WAIT):
                await contract_fake.wait_for_disconnects(1)
        await self.check_still_working(contract_provider, contract_fake)


class HTTPProviderContract(ProviderContract):
    """:class:`ProviderContract` plus the HTTP failure checks, against a fake server.

    Provide ``contract_fake`` (the fake, started) and ``contract_make`` (``make(**config)``
    building a provider aimed at the fake, closed after the test); ``contract_provider`` is
    ``contract_make()``.
    """

    @pytest.fixture
    def contract_provider(self, contract_make: Callable[..., BaseProvider]) -> BaseProvider:
        return contract_make()

    @pytest.mark.parametrize("stall", ["first_byte", "between_chunks"])
    async def test_silence_longer_than_chunk_timeout_is_a_timeout(
        self, contract_fake: Any, contract_make: Callable[..., BaseProvider], stall: str
    ):
        if stall == "first_byte":
            contract_fake.add_reply("late", first_token_delay=3)
        else:
            contract_fake.add_reply("one two three", chunk_size_chars=4, tokens_per_second=0.3)
        text, err = await failure(contract_make(chunk_timeout=0.3))
        assert type(err) is ProviderTimeoutError
        assert "0.3s" in str(err)  # the message names the setting's value
        assert text == ("" if stall == "first_byte" else "one ")

    async def test_a_stream_cut_off_midway_is_unavailable_after_the_text_so_far(
        self, contract_fake: Any, contract_provider: BaseProvider
    ):
        contract_fake.add_reply("Hello there, this answer never ends", chunk_size_chars=3, drop_after_chars=9)
        text, err = await failure(contract_provider)
        assert text == "Hello the"  # delivered before the error, nothing invented
        assert type(err) is ProviderUnavailableError

    async def test_429_is_a_rate_limit_carrying_retry_after(
        self, contract_fake: Any, contract_provider: BaseProvider
    ):
        contract_fake.add_error(429, "Too many requests, slow down", retry_after=7)
        _, err = await failure(contract_provider)
        assert isinstance(err, ProviderRateLimitError)
        assert err.retry_after == 7

    @pytest.mark.parametrize("status", [500, 503])
    async def test_server_errors_are_unavailable(
        self, contract_fake: Any, contract_provider: BaseProvider, status: int
    ):
        contract_fake.add_error(status, "The server had an error")
        _, err = await failure(contract_provider)
        assert isinstance(err, ProviderUnavailableError)

    async def test_a_wrong_key_is_an_auth_error_that_never_shows_the_key(
        self, contract_make: Callable[..., BaseProvider]
    ):
        wrong = "sk-wrong-contract-kit-0000000000"
        _, err = await failure(contract_make(api_key=wrong))
        assert type(err) is ProviderAuthError
        assert wrong not in str(err) and wrong not in repr(err.args)
