"""Retries, fallbacks and rate limits around the real providers, against the fake servers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from relaybot import ReplyStatus
from relaybot.core.cli.config import parse_config
from relaybot.core.contracts.errors import (
    ConfigError,
    ContextTooLongError,
    ProviderAuthError,
    ProviderNotFoundError,
    ProviderRateLimitError,
    ProviderUnavailableError,
)
from relaybot.core.contracts.models import ChatMessage, Finish, ProviderRequest, Role, TextDelta, Usage
from relaybot.core.modelio.ratelimit import LocalRateLimiter, RateLimit
from relaybot.core.modelio.resilience import ResilientProvider, RetryPolicy, estimate_request_tokens
from relaybot.core.runtime.app import Relaybot
from relaybot.plugins.providers.anthropic import AnthropicConfig, AnthropicProvider
from relaybot.plugins.providers.gemini import GeminiConfig, GeminiProvider
from relaybot.plugins.providers.openai import OpenAIConfig, OpenAIProvider
from relaybot.testing import FakeAnthropicServer, FakeGeminiServer, FakeOpenAIServer

OPENAI_KEY = "sk-openai-secret-1234"
ANTHROPIC_KEY = "sk-ant-secret-5678"
FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)


def request(text: str = "hi") -> ProviderRequest:
    return ProviderRequest(
        system="Be brief.", messages=[ChatMessage.text(Role.USER, text)], max_output_tokens=50
    )


class Sleeps:
    """A sleep that really sleeps but remembers how long it was asked to."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        await asyncio.sleep(seconds)


async def collect(stream) -> tuple[str, list]:
    events = [event async for event in stream]
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropicServer]:
    async with FakeAnthropicServer(api_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture
async def openai(openai_fake) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider("gpt", OpenAIConfig(base_url=openai_fake.base_url, api_key=OPENAI_KEY))
    yield provider
    await provider.aclose()


@pytest.fixture
async def claude(anthropic_fake) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(
        "claude", AnthropicConfig(base_url=anthropic_fake.base_url, api_key=ANTHROPIC_KEY)
    )
    yield provider
    await provider.aclose()


# ── retries on the same provider ────────────────────────────────────────────────────────────


async def test_429_with_retry_after_then_success_gives_one_reply(openai_fake, openai) -> None:
    openai_fake.add_error(429, "Rate limit reached", retry_after=0.2)
    openai_fake.add_reply("Hello there, friend.", usage=(9, 5))
    sleeps = Sleeps()
    stream = ResilientProvider(openai, sleep=sleeps).stream(request())
    text, events = await collect(stream)
    assert text == "Hello there, friend."  # no duplicate text from the failed attempt
    assert [type(e) for e in events][-2:] == [Usage, Finish]
    assert sum(isinstance(e, Usage) for e in events) == 1
    assert sleeps.calls == [0.2]  # the provider's retry-after, not our own backoff
    assert len(openai_fake.requests) == 2
    assert stream.answered_by == "gpt" and isinstance(stream.failures[0][1], ProviderRateLimitError)


async def test_retry_after_ms_header_is_honoured(openai_fake, openai) -> None:
    openai_fake.add_reply(status=429, headers={"retry-after-ms": "150"})
    openai_fake.add_reply("ok")
    sleeps = Sleeps()
    text, _ = await collect(ResilientProvider(openai, sleep=sleeps).stream(request()))
    assert text == "ok" and sleeps.calls == [0.15]


async def test_500_twice_then_success(openai_fake, openai) -> None:
    openai_fake.add_error(500, "The server had an error")
    openai_fake.add_error(502, "Bad gateway")
    openai_fake.add_reply("Third time lucky.")
    sleeps = Sleeps()
    text, _ = await collect(ResilientProvider(openai, policy=FAST, sleep=sleeps).stream(request()))
    assert text == "Third time lucky."
    assert len(openai_fake.requests) == 3
    assert len(sleeps.calls) == 2 and all(0 <= s <= 0.05 for s in sleeps.calls)


async def test_gives_up_after_max_attempts(openai_fake, openai) -> None:
    for _ in range(3):
        openai_fake.add_error(503, "down")
    openai_fake.add_reply("never reached")
    with pytest.raises(ProviderUnavailableError):
        await collect(ResilientProvider(openai, policy=FAST).stream(request()))
    assert len(openai_fake.requests) == 3 and openai_fake.pending == 1


async def test_anthropic_529_overloaded_is_retried(anthropic_fake, claude) -> None:
    anthropic_fake.add_error(529, "Overloaded")
    anthropic_fake.add_reply("Claude is back.", usage=(12, 4))
    text, events = await collect(ResilientProvider(claude, policy=FAST).stream(request()))
    assert text == "Claude is back."
    assert len(anthropic_fake.requests) == 2
    assert Usage(12, 4) in events


async def test_gemini_retry_delay_is_honoured() -> None:
    async with FakeGeminiServer(api_key="AIza-test-key") as fake:
        fake.add_error(429, "Quota exceeded", retry_delay=0.1)
        fake.add_reply("Gemini answers.")
        provider = GeminiProvider("gemini", GeminiConfig(base_url=fake.base_url, api_key="AIza-test-key"))
        sleeps = Sleeps()
        try:
            text, _ = await collect(ResilientProvider(provider, sleep=sleeps).stream(request()))
        finally:
            await provider.aclose()
    assert text == "Gemini answers." and sleeps.calls == [0.1]


async def test_no_retry_once_text_was_shown(anthropic_fake, claude) -> None:
    anthropic_fake.add_reply("Hello there, friend", error_after_chars=8)  # then overloaded_error
    shown: list[str] = []
    with pytest.raises(ProviderUnavailableError):
        async for event in ResilientProvider(claude, policy=FAST).stream(request()):
            if isinstance(event, TextDelta):
                shown.append(event.text)
    assert "".join(shown) == "Hello th"
    assert len(anthropic_fake.requests) == 1  # not asked again: the user already saw text


async def test_cut_off_stream_is_not_retried_and_not_sent_to_fallback(openai_fake, openai, claude) -> None:
    openai_fake.add_reply("The first part and then nothing", drop_after_chars=10)
    with pytest.raises(ProviderUnavailableError):
        await collect(ResilientProvider(openai, [claude], policy=FAST).stream(request()))
    assert len(openai_fake.requests) == 1


async def test_not_found_is_not_retried(openai_fake, openai) -> None:
    openai_fake.add_error(404, "The model does not exist")
    with pytest.raises(ProviderNotFoundError):
        await collect(ResilientProvider(openai, policy=FAST).stream(request()))
    assert len(openai_fake.requests) == 1


async def test_context_too_long_propagates_without_fallback(
    openai_fake, anthropic_fake, openai, claude
) -> None:
    openai_fake.add_error(400, "maximum context length is 8192 tokens", code="context_length_exceeded")
    with pytest.raises(ContextTooLongError):
        await collect(ResilientProvider(openai, [claude], policy=FAST).stream(request()))
    assert len(openai_fake.requests) == 1 and anthropic_fake.requests == []


async def test_409_is_retried(openai_fake, openai) -> None:
    openai_fake.add_error(409, "conflict")
    openai_fake.add_reply("fine")
    text, _ = await collect(ResilientProvider(openai, policy=FAST).stream(request()))
    assert text == "fine" and len(openai_fake.requests) == 2


def test_backoff_doubles_with_full_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3.0)
    assert [policy.backoff(n, rng=lambda: 1.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.backoff(4, rng=lambda: 0.0) == 0.0  # full jitter: anywhere from zero


# ── fallbacks ───────────────────────────────────────────────────────────────────────────────


async def test_fallback_from_rejected_key_to_anthropic(openai_fake, anthropic_fake, claude, caplog) -> None:
    wrong = OpenAIProvider("gpt", OpenAIConfig(base_url=openai_fake.base_url, api_key="sk-wrong-key-0000"))
    anthropic_fake.add_reply("Claude answers instead.")
    resilient = ResilientProvider(wrong, [claude], policy=FAST)
    try:
        with caplog.at_level(logging.WARNING, logger="relaybot.resilience"):
            stream = resilient.stream(request("who are you?"))
            text, _ = await collect(stream)
    finally:
        await wrong.aclose()
    assert text == "Claude answers instead."
    assert len(openai_fake.requests) == 1  # a wrong key is not retried
    assert [(name, type(exc)) for name, exc in stream.failures] == [("gpt", ProviderAuthError)]
    assert stream.answered_by == "claude" and stream.answered_model == claude.model
    assert resilient.last_provider == "claude"
    assert resilient.name == "gpt" and resilient.model == wrong.model  # the primary's identity
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    line = warnings[0].getMessage()
    assert "'gpt'" in line and "'claude'" in line and "ProviderAuthError" in line
    assert "sk-wrong-key-0000" not in caplog.text and OPENAI_KEY not in caplog.text


async def test_fallback_after_503_retries(openai_fake, anthropic_fake, openai, claude) -> None:
    openai_fake.add_error(503, "down")
    openai_fake.add_error(503, "still down")
    anthropic_fake.add_reply("Backup here.")
    policy = RetryPolicy(max_attempts=2, base_delay=0.01)
    text, _ = await collect(ResilientProvider(openai, [claude], policy=policy).stream(request()))
    assert text == "Backup here."
    assert len(openai_fake.requests) == 2 and len(anthropic_fake.requests) == 1


async def test_long_retry_after_skips_to_fallback_at_once(
    openai_fake, anthropic_fake, openai, claude
) -> None:
    openai_fake.add_error(429, "Try again in two minutes", retry_after=120)
    anthropic_fake.add_reply("No waiting.")
    sleeps = Sleeps()
    text, _ = await collect(
        ResilientProvider(openai, [claude], policy=RetryPolicy(max_retry_after=60), sleep=sleeps).stream(
            request()
        )
    )
    assert text == "No waiting." and sleeps.calls == [] and len(openai_fake.requests) == 1


async def test_long_retry_after_without_fallback_fails_fast(openai_fake, openai) -> None:
    openai_fake.add_error(429, "Try again in two minutes", retry_after=120)
    sleeps = Sleeps()
    with pytest.raises(ProviderRateLimitError) as info:
        await collect(ResilientProvider(openai, sleep=sleeps).stream(request()))
    assert info.value.retry_after == 120 and sleeps.calls == []


async def test_whole_chain_failing_raises_the_last_error(openai_fake, anthropic_fake, openai, claude) -> None:
    openai_fake.add_error(401, "bad key")
    anthropic_fake.add_error(404, "no such model")
    with pytest.raises(ProviderNotFoundError):
        await collect(ResilientProvider(openai, [claude], policy=FAST).stream(request()))


# ── cancellation ────────────────────────────────────────────────────────────────────────────


async def test_cancel_during_backoff_ends_promptly(openai_fake, openai) -> None:
    openai_fake.add_error(429, "slow down", retry_after=30)
    asked = asyncio.Event()
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        asked.set()
        await real_sleep(seconds)

    consumer = asyncio.create_task(collect(ResilientProvider(openai, sleep=sleep).stream(request())))
    async with asyncio.timeout(10):
        await asked.wait()
    consumer.cancel()
    async with asyncio.timeout(5):  # generous: "promptly" means not after the 30 s backoff
        with pytest.raises(asyncio.CancelledError):
            await consumer
    assert len(openai_fake.requests) == 1


async def test_aclose_mid_stream_closes_the_provider_connection(openai_fake, openai) -> None:
    openai_fake.add_reply("word " * 200, tokens_per_second=50, chunk_size_chars=5)
    stream = ResilientProvider(openai).stream(request())
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()
    async with asyncio.timeout(5):
        await openai_fake.wait_for_disconnects(1)


# ── rate limits through the provider ───────────────────────────────────────────────────────


async def test_rate_limiter_counts_requests_and_corrects_tokens(openai_fake, openai) -> None:
    limiter = LocalRateLimiter({"gpt": RateLimit(rpm=10, tpm=100_000)})
    openai_fake.add_reply("Counted.", usage=(40, 2))
    req = request("count me")
    text, _ = await collect(ResilientProvider(openai, limiter=limiter).stream(req))
    assert text == "Counted."
    usage = await limiter.usage("gpt")
    # the estimate reserved before the request was replaced by the reported 40 + 2 tokens
    assert estimate_request_tokens(req, None) != 42
    assert (usage.requests, usage.tokens) == (1, 42)


async def test_failed_attempt_gives_its_token_estimate_back(openai_fake, openai) -> None:
    limiter = LocalRateLimiter({"gpt": RateLimit(rpm=10, tpm=100_000)})
    openai_fake.add_error(429, "slow", retry_after=0)
    openai_fake.add_reply("ok", usage=(10, 1))
    await collect(ResilientProvider(openai, limiter=limiter).stream(request()))
    usage = await limiter.usage("gpt")
    assert (usage.requests, usage.tokens) == (2, 11)  # both requests count, one reply's tokens


async def test_rate_limit_wait_beyond_the_cap_uses_the_fallback(
    openai_fake, anthropic_fake, openai, claude
) -> None:
    limiter = LocalRateLimiter({"gpt": RateLimit(rpm=1)})
    resilient = ResilientProvider(openai, [claude], policy=RetryPolicy(max_retry_after=0.2), limiter=limiter)
    openai_fake.add_reply("first from gpt")
    anthropic_fake.add_reply("second from claude")
    assert (await collect(resilient.stream(request())))[0] == "first from gpt"
    stream = resilient.stream(request())
    assert (await collect(stream))[0] == "second from claude"  # gpt's next slot is a minute away
    assert len(openai_fake.requests) == 1 and stream.answered_by == "claude"


# ── config wiring and the whole bot ────────────────────────────────────────────────────────


def test_unknown_fallback_is_a_config_error() -> None:
    config = parse_config(
        {"providers": {"main": {"type": "openai", "api_key": "sk-x", "fallbacks": ["backup"]}}}, "bot.toml"
    )
    with pytest.raises(ConfigError) as info:
        Relaybot(config).plan()
    message = str(info.value)
    assert "bot.toml" in message and "providers.main.fallbacks" in message and "'backup'" in message


def test_self_fallback_is_a_config_error() -> None:
    config = parse_config({"providers": {"main": {"type": "openai", "fallbacks": ["main"]}}}, "bot.toml")
    with pytest.raises(ConfigError, match=r"providers\.main\.fallbacks"):
        Relaybot(config).plan()


async def test_bot_user_gets_one_complete_answer_after_a_429(
    make_bot, fake_openai, recording_connector
) -> None:
    fake_openai.add_error(429, "Rate limit reached for requests", retry_after=0.2)
    fake_openai.add_reply("The complete answer, exactly once.")
    bot = await make_bot()
    answer = await bot.say("hi")
    assert answer == "The complete answer, exactly once."
    assert len(recording_connector.messages(bot.chat())) == 1
    conversation = await bot.app.store.active_conversation(bot.chat())
    path = (await bot.app.store.path(conversation.leaf_id)).messages
    assert path[-1].status == ReplyStatus.COMPLETE and path[-1].text == answer
    assert len(fake_openai.requests) == 2


async def test_bot_falls_back_to_a_configured_provider(make_bot, fake_openai, anthropic_fake) -> None:
    fake_openai.add_error(503, "down")
    anthropic_fake.add_reply("Answered by the backup.")
    bot = await make_bot(
        config={
            "providers": {
                "fake": {"max_retries": 0, "fallbacks": ["backup"], "rpm": 100},
                "backup": {
                    "type": "anthropic",
                    "base_url": anthropic_fake.base_url,
                    "api_key": ANTHROPIC_KEY,
                },
            }
        }
    )
    assert await bot.say("hi") == "Answered by the backup."
    wrapped = bot.app.providers["fake"]
    assert isinstance(wrapped, ResilientProvider) and wrapped.last_provider == "backup"
    assert bot.app.token_counter("fake") is not None  # counters still find the primary
    assert (await bot.app.rate_limiter.usage("fake")).requests == 1
