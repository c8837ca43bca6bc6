"""OpenAIProvider against the fake OpenAI server (real HTTP on loopback) and recorded streams."""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Iterable

import pytest

from relaybot.core.contracts.errors import (
    CapabilityError,
    ContextTooLongError,
    ProviderAuthError,
    ProviderNotFoundError,
    ProviderRateLimitError,
    ProviderResponseError,
    ProviderUnavailableError,
)
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
from relaybot.core.testing.fake_openai import FakeOpenAIServer
from relaybot.plugins.providers import openai as openai_plugin
from relaybot.plugins.providers.openai import OpenAIConfig, OpenAIProvider
from relaybot.testing import HTTPProviderContract

from .conftest import (
    collect,
    cut,
    fixture_bytes,
    hello,
    provider_maker,
    sse_transport,
)
from .conftest import failure as shared_failure
from .conftest import text_of as shared_text_of

KEY = "sk-test-9f8e7d6c5b4a39281706"
PLAIN = (
    "I'm unable to provide real-time weather updates. To get the current weather in San "
    "Francisco, I recommend checking a reliable weather website or a weather app."
)
REFUSAL = "I'm sorry, I can't assist with that request."
# fixture -> (kind of the text deltas, exact text or None (checked below), usage, finish)
EXPECTED: dict[str, tuple[str, str | None, tuple[int, int], str]] = {
    "openai-chat-plain.sse": ("text", PLAIN, (14, 30), "stop"),
    "openai-chat-long.sse": ("text", None, (19, 177), "stop"),
    "openai-chat-refusal.sse": ("refusal", REFUSAL, (79, 11), "refusal"),
}


def text_of(events: Iterable[ProviderEvent], kind: str = "text") -> str:
    return shared_text_of(events, kind)


def check_fixture(name: str, events: list[ProviderEvent]) -> None:
    kind, text, (prompt, completion), finish = EXPECTED[name]
    got = text_of(events, kind)
    if text is None:  # the long fixture: 608 characters of JSON (with a "°" in it)
        assert len(got) == 608 and "°" in got
        assert json.loads(got)
    else:
        assert got == text
    other = "refusal" if kind == "text" else "text"
    assert text_of(events, other) == ""
    usage = [e for e in events if isinstance(e, Usage)]
    assert usage == [Usage(prompt, completion)]
    assert events[-1].reason == finish  # type: ignore[union-attr]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer(api_key=KEY) as server:
        yield server


@pytest.fixture
async def make(fake: FakeOpenAIServer, http_client: str):
    def build(**config: object) -> OpenAIProvider:
        return OpenAIProvider("oa", OpenAIConfig(**config))  # type: ignore[arg-type]

    async with provider_maker(build, base_url=fake.base_url, api_key=KEY, http_client=http_client) as make:
        yield make


# ── recorded streams ────────────────────────────────────────────────────────────────────────


def split_plans(body: bytes) -> dict[str, list[int]]:
    """Byte offsets to cut a body at: regular, random, inside UTF-8 chars and `data:` prefixes."""
    plans = {"whole": [], "every-701": list(range(701, len(body), 701))}
    for seed in (1, 2):
        rng = random.Random(seed)
        plans[f"random-{seed}"] = sorted(rng.sample(range(1, len(body)), 25))
    multibyte = [i for i, b in enumerate(body) if b >= 0xC0]  # UTF-8 lead bytes
    data_prefixes = [m.start() + 3 for m in re.finditer(b"data:", body)][1:12]
    plans["utf8-and-data"] = sorted({i + 1 for i in multibyte} | set(data_prefixes))
    return plans


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recorded_stream_over_http_split_anywhere(fake: FakeOpenAIServer, make, name: str):
    body = fixture_bytes(name)
    provider = make()
    for plan, offsets in split_plans(body).items():
        # A small delay makes each piece arrive in its own socket read.
        fake.add_raw(body, split_at=offsets, chunk_delay=0.001 if offsets else 0)
        events = await collect(provider)
        try:
            check_fixture(name, events)
        except AssertionError as exc:
            raise AssertionError(f"split plan {plan!r}: {exc}") from exc


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recorded_stream_exact_chunk_boundaries(name: str):
    """Every cut reaches the parser exactly (a mock transport cannot coalesce reads)."""
    body = fixture_bytes(name)
    plans = [range(1, len(body)), range(3, len(body), 3), range(97, len(body), 97)]
    plans += [random.Random(seed).sample(range(1, len(body)), 200) for seed in range(6)]
    for i, b in enumerate(body):
        if b >= 0xC0:  # cut after each byte of a multi-byte character
            plans.append([i + 1, i + 2])
    for offsets in plans:
        provider = OpenAIProvider(
            "oa",
            OpenAIConfig(base_url="http://fake.invalid/v1"),
            transport=sse_transport(cut(body, offsets)),
        )
        check_fixture(name, await collect(provider))
        await provider.aclose()


async def test_text_of_one_network_read_goes_up_as_one_delta():
    """A bot that lags behind gets several events per read; their text is merged, so every
    layer above runs once per read, not once per token (nothing else changes)."""
    body = fixture_bytes("openai-chat-plain.sse")
    per_event = [piece + b"\n\n" for piece in body.split(b"\n\n") if piece.strip()]
    results = {}
    for plan, pieces in {"one read": [body], "one read per event": per_event}.items():
        provider = OpenAIProvider(
            "oa", OpenAIConfig(base_url="http://fake.invalid/v1"), transport=sse_transport(pieces)
        )
        events = await collect(provider)
        await provider.aclose()
        check_fixture("openai-chat-plain.sse", events)  # same text, usage and finish
        results[plan] = [e for e in events if isinstance(e, TextDelta)]
    assert len(results["one read"]) == 1 and results["one read"][0].text == PLAIN
    assert len(results["one read per event"]) > 10


# ── normal replies from the fake ────────────────────────────────────────────────────────────


async def test_streams_scripted_reply_with_usage_and_finish(fake: FakeOpenAIServer, make):
    # paced, so that each chunk is its own network read (one read = one merged delta)
    fake.add_reply("Héllo wörld, ünïcode 👋 ok", chunk_size_chars=3, usage=(12, 7), tokens_per_second=200)
    events = await collect(make())
    assert text_of(events) == "Héllo wörld, ünïcode 👋 ok"
    assert len([e for e in events if isinstance(e, TextDelta)]) > 3  # streamed, not one blob
    assert events[-2:] == [Usage(12, 7), Finish("stop", "")]
    assert fake.disconnects == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [("length", "length"), ("content_filter", "content_filter"), ("tool_calls", "other")],
)
async def test_finish_reasons_are_normalised(fake: FakeOpenAIServer, make, raw: str, reason: str):
    fake.add_reply("partial", finish_reason=raw)
    finish = (await collect(make()))[-1]
    assert finish.reason == reason
    assert finish.message  # the user is told why the reply ended early


async def test_non_streaming_json_answer_is_accepted(fake: FakeOpenAIServer, make):
    doc = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Whole"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    fake.add_raw(json.dumps(doc).encode(), content_type="application/json")
    events = await collect(make())
    assert events == [TextDelta("Whole"), Usage(3, 1), Finish("stop", "")]


# ── request shape ───────────────────────────────────────────────────────────────────────────


async def test_request_body_shape(fake: FakeOpenAIServer, make):
    provider = make(
        model="gpt-4o",
        options={"temperature": 0.2, "top_p": 0.5},
        organization="org-1",
        extra_headers={"X-Title": "relaybot tests"},
    )
    image = ImageRef("data:image/png;base64,iVBORw0KGgo=", mime_type="image/png")
    request = ProviderRequest(
        "You are terse.",
        [
            ChatMessage.text(Role.USER, "first"),
            ChatMessage.text(Role.ASSISTANT, "answer"),
            ChatMessage(Role.USER, [TextPart("what is this?"), ImagePart(image)]),
        ],
        max_output_tokens=321,
        options={"temperature": 0.9, "seed": 7, "stream": False},
    )
    await collect(provider, request)
    sent = fake.requests[-1]
    assert sent.json["model"] == "gpt-4o"
    assert sent.json["stream"] is True  # options cannot turn streaming off
    assert sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["max_tokens"] == 321
    assert (sent.json["temperature"], sent.json["top_p"], sent.json["seed"]) == (0.9, 0.5, 7)
    assert sent.json["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": image.uri, "detail": "auto"}},
            ],
        },
    ]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["openai-organization"] == "org-1"
    assert sent.headers["x-title"] == "relaybot tests"


def test_official_api_gets_max_completion_tokens():
    provider = OpenAIProvider("oa", OpenAIConfig(model="o3-mini", max_output_tokens=99))
    body = provider.build_body(hello())
    assert body["max_completion_tokens"] == 99
    assert "max_tokens" not in body


@pytest.mark.parametrize(
    ("uri", "vision"),
    [("https://example.com/cat.png", True), ("data:image/png;base64,AA==", False)],
)
async def test_unsendable_images_fail_before_any_request(fake, make, uri: str, vision: bool):
    provider = make(model="my-local-model", vision=vision)
    request = ProviderRequest("", [ChatMessage(Role.USER, [ImagePart(ImageRef(uri))])])
    with pytest.raises(CapabilityError):
        await collect(provider, request)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("model", "window", "tokenizer", "vision"),
    [
        ("gpt-4o-mini", 128_000, "o200k_base", True),
        ("openai/gpt-4.1-nano", 1_047_576, "o200k_base", True),
        ("o1-mini", 128_000, "o200k_base", False),
        ("gpt-4-0613", 8_192, "cl100k_base", False),
        ("gpt-3.5-turbo", 16_385, "cl100k_base", False),
        ("llama3.2:3b", 8_192, None, False),
        ("qwen2.5-vl-7b", 8_192, None, True),
    ],
)
def test_capabilities_from_model_name(model: str, window: int, tokenizer, vision: bool):
    caps = OpenAIProvider("oa", OpenAIConfig(model=model)).capabilities
    assert (caps.context_window, caps.tokenizer, caps.vision) == (window, tokenizer, vision)
    caps = OpenAIProvider("oa", OpenAIConfig(model=model, context_window=999, vision=True)).capabilities
    assert (caps.context_window, caps.vision) == (999, True)


def test_registers_provider_type():
    registered: list = []
    openai_plugin.register_providers(registered.append)
    [ptype] = registered
    assert (ptype.type, ptype.config_model) == ("openai", OpenAIConfig)
    assert isinstance(ptype.factory("x", OpenAIConfig()), OpenAIProvider)


# ── errors ──────────────────────────────────────────────────────────────────────────────────


async def failure(provider: OpenAIProvider, request: ProviderRequest | None = None):
    """Run a stream that must fail; return (text delivered before the error, the error)."""
    return await shared_failure(provider, request, kind="text")


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (401, None, ProviderAuthError),
        (403, None, ProviderAuthError),
        (404, "model_not_found", ProviderNotFoundError),
        (400, "context_length_exceeded", ContextTooLongError),
        (400, None, ProviderResponseError),
        (500, None, ProviderUnavailableError),
        (529, None, ProviderUnavailableError),
    ],
)
async def test_http_errors_map_to_error_tree(fake, make, status: int, code, error):
    fake.add_error(status, f"Server says {status}", code=code)
    _, err = await failure(make())
    assert type(err) is error
    assert err.status == status
    assert err.provider == "oa"
    assert f"Server says {status}" in str(err)
    assert "oa" in str(err) and f"{fake.base_url}/chat/completions" in str(err)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({}, None),
    ],
)
async def test_rate_limit_carries_retry_after(fake, make, headers: dict[str, str], expected):
    fake.add_reply(status=429, headers=headers)
    _, err = await failure(make())
    assert isinstance(err, ProviderRateLimitError)
    assert err.retry_after == expected


async def test_rate_limit_retry_after_http_date(fake, make):
    fake.add_reply(status=429, headers={"retry-after": email.utils.formatdate(time.time() + 30)})
    _, err = await failure(make())
    assert isinstance(err, ProviderRateLimitError)
    assert err.retry_after is not None and 20 < err.retry_after <= 31


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"hello world\nthis is not sse at all\n\n", "text/event-stream", "no Chat Completions"),
        (b"<html>502 Bad Gateway</html>", "text/html", "expected an event stream"),
        (
            b'data: {"choices": [{"delta": {"content": "x"\n\n',
            "text/event-stream",
            "not valid JSON",
        ),
        (b"data: [1, 2]\n\n", "text/event-stream", "not a JSON object"),
    ],
)
async def test_malformed_bodies_are_response_errors(fake, make, body, content_type, words):
    fake.add_raw(body, content_type=content_type)
    _, err = await failure(make())
    assert type(err) is ProviderResponseError
    assert words in str(err)
    assert err.__cause__ is None  # no JSONDecodeError leaking through


async def test_error_event_mid_stream(fake: FakeOpenAIServer, make):
    ok = {"choices": [{"index": 0, "delta": {"content": "Part"}, "finish_reason": None}]}
    bad = {
        "error": {
            "message": "The server had an error processing your request.",
            "type": "server_error",
        }
    }
    fake.add_raw(f"data: {json.dumps(ok)}\n\ndata: {json.dumps(bad)}\n\n".encode())
    text, err = await failure(make())
    assert text == "Part"
    assert type(err) is ProviderResponseError
    assert "The server had an error processing your request." in str(err)


async def test_dropped_stream_is_unavailable(fake: FakeOpenAIServer, make):
    fake.add_reply("Hello there, this answer never ends", drop_after_chars=9)
    text, err = await failure(make())
    assert text == "Hello the"
    assert type(err) is ProviderUnavailableError
    assert "cut off" in str(err)


async def test_truncated_recording_is_unavailable(fake: FakeOpenAIServer, make):
    body = fixture_bytes("openai-chat-plain.sse")
    fake.add_raw(body[: len(body) // 2])
    text, err = await failure(make())
    assert PLAIN.startswith(text) and text
    assert type(err) is ProviderUnavailableError


async def test_connect_refused_is_unavailable(http_client: str):
    with socket.socket() as sock:  # a port that nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAIProvider(
        "oa",
        OpenAIConfig(base_url=f"http://127.0.0.1:{port}/v1", http_client=http_client),  # type: ignore[arg-type]
    )
    _, err = await failure(provider)
    await provider.aclose()
    assert type(err) is ProviderUnavailableError
    assert f"127.0.0.1:{port}" in str(err) and "cannot connect" in str(err)


# ── the provider contract kit (chunk timeouts, closing and cancelling streams, HTTP errors) ──


class TestOpenAIContract(HTTPProviderContract):
    """relaybot.testing's provider contract, over both HTTP transports."""

    @pytest.fixture
    def contract_fake(self, fake: FakeOpenAIServer) -> FakeOpenAIServer:
        return fake

    @pytest.fixture
    def contract_make(self, make):  # type: ignore[no-untyped-def]
        return make


# ── secrets ─────────────────────────────────────────────────────────────────────────────────


async def test_api_key_never_in_errors_or_logs(fake: FakeOpenAIServer, make, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make()
    fake.add_reply("fine")
    await collect(provider)
    fake.add_error(401, f"Incorrect API key provided: {KEY}.")  # a server echoing the key
    fake.add_raw(f'data: {{"error": {{"message": "bad key {KEY}"}}}}\n\n'.encode())
    fake.add_raw(f"data: {{not json {KEY}\n\n".encode())
    errors = [(await failure(provider))[1] for _ in range(3)]
    assert [type(e) for e in errors] == [
        ProviderAuthError,
        ProviderResponseError,
        ProviderResponseError,
    ]
    for err in errors:
        assert KEY not in str(err) and KEY not in repr(err.args)
    assert KEY not in caplog.text
    assert KEY not in repr(provider.config)


async def test_wrong_key_gets_auth_error(fake: FakeOpenAIServer, make):
    _, err = await failure(make(api_key="sk-wrong-0000000000"))
    assert type(err) is ProviderAuthError
    assert "Incorrect API key" in str(err)
    assert "sk-wrong-0000000000" not in str(err)
