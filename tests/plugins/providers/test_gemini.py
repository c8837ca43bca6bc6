"""GeminiProvider against the fake Gemini server (real HTTP on loopback) and hand-built frames."""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import AsyncIterator, Iterable
from typing import Any

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
    ProviderRequest,
    Role,
    TextDelta,
    TextPart,
    Usage,
)
from relaybot.core.testing.fake_gemini import FakeGeminiServer
from relaybot.plugins.providers import gemini as gemini_plugin
from relaybot.plugins.providers.gemini import GeminiConfig, GeminiProvider
from relaybot.testing import HTTPProviderContract

from .conftest import (
    collect,
    failure,
    hello,
    provider_maker,
    sse_transport,
    text_of,
)

KEY = "AIzaSyTest-0123456789abcdefGHIJ"


def sse(*frames: dict[str, Any], sep: bytes = b"\r\n\r\n") -> bytes:
    return b"".join(b"data: " + json.dumps(f).encode() + sep for f in frames)


def candidate(text: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    cand: dict[str, Any] = {"index": 0, **extra}
    if text is not None:
        cand["content"] = {"role": "model", "parts": [{"text": text}]}
    if finish is not None:
        cand["finishReason"] = finish
    return {"candidates": [cand]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeGeminiServer]:
    async with FakeGeminiServer(api_key=KEY) as server:
        yield server


@pytest.fixture
async def make(fake: FakeGeminiServer, http_client: str):
    def build(**config: object) -> GeminiProvider:
        return GeminiProvider("gem", GeminiConfig(**config))  # type: ignore[arg-type]

    async with provider_maker(build, base_url=fake.base_url, api_key=KEY, http_client=http_client) as make:
        yield make


# ── stream parsing ──────────────────────────────────────────────────────────────────────────


async def test_text_over_several_frames_with_usage(fake: FakeGeminiServer, make):
    # paced, so that each chunk is its own network read (one read = one merged delta)
    fake.add_reply("Héllo wörld, ünïcode 👋 ok", chunk_size_chars=3, usage=(12, 7), tokens_per_second=200)
    events = await collect(make())
    assert text_of(events) == "Héllo wörld, ünïcode 👋 ok"
    assert len([e for e in events if isinstance(e, TextDelta)]) > 3  # streamed, not one blob
    assert events[-2:] == [Usage(12, 7), Finish("stop", "")]
    assert fake.disconnects == 0


def mock_provider(pieces: list[bytes], **config: Any) -> GeminiProvider:
    return GeminiProvider(
        "gem",
        GeminiConfig(base_url="http://fake.invalid", api_key=KEY, **config),
        transport=sse_transport(pieces),
    )


async def test_frames_split_at_every_byte_and_multiple_parts():
    """Several parts per frame, CRLF or LF separators, cuts anywhere (also inside UTF-8)."""
    usage = {"promptTokenCount": 8, "candidatesTokenCount": 5, "totalTokenCount": 13}
    two_parts = {"index": 0, "content": {"role": "model", "parts": [{"text": "Grüß "}, {"text": "dich, "}]}}
    frames = (
        {"candidates": [two_parts], "usageMetadata": {"promptTokenCount": 8}},
        {**candidate("Welt! 🌍"), "usageMetadata": {"promptTokenCount": 8}},
        {**candidate("", "STOP"), "usageMetadata": usage},
    )
    for sep in (b"\r\n\r\n", b"\n\n"):
        body = sse(*frames, sep=sep)
        plans: list[Iterable[int]] = [range(1, len(body)), range(7, len(body), 7)]
        plans += [random.Random(seed).sample(range(1, len(body)), 40) for seed in range(4)]
        for offsets in plans:
            bounds = [0, *sorted(set(offsets)), len(body)]
            provider = mock_provider([body[a:b] for a, b in itertools.pairwise(bounds)])
            events = await collect(provider)
            await provider.aclose()
            assert text_of(events) == "Grüß dich, Welt! 🌍"
            assert events[-2:] == [Usage(8, 5), Finish("stop", "")]


async def test_thought_parts_are_not_reply_text(fake: FakeGeminiServer, make):
    fake.add_reply("The answer.", thoughts="**Thinking** about the question", usage=(4, 3))
    assert text_of(await collect(make())) == "The answer."


async def test_thinking_tokens_count_as_output():
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 30}
    provider = mock_provider([sse({**candidate("ok", "STOP"), "usageMetadata": usage})])
    events = await collect(provider)
    await provider.aclose()
    assert events[-2] == Usage(10, 34)


@pytest.mark.parametrize(
    ("finish_reason", "reason", "words"),
    [
        ("MAX_TOKENS", "length", ("length limit",)),
        ("SAFETY", "content_filter", ("SAFETY", "dangerous content", "content filter")),
        ("RECITATION", "content_filter", ("RECITATION", "copyrighted")),
        ("BLOCKLIST", "content_filter", ("BLOCKLIST",)),
        ("PROHIBITED_CONTENT", "content_filter", ("PROHIBITED_CONTENT",)),
        ("SPII", "content_filter", ("SPII", "personal information")),
        ("MALFORMED_FUNCTION_CALL", "other", ("MALFORMED_FUNCTION_CALL",)),
        ("OTHER", "other", ("OTHER",)),
    ],
)
async def test_finish_reasons_are_explained(fake, make, finish_reason: str, reason: str, words):
    fake.add_reply("Here is a partial", finish_reason=finish_reason)
    events = await collect(make())
    assert text_of(events) == "Here is a partial"  # what arrived is kept
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == reason
    for word in words:
        assert word in finish.message  # the user is told why the reply ended early


async def test_prompt_blocked_is_content_filter_with_explanation(fake: FakeGeminiServer, make):
    fake.add_reply(block_reason="SAFETY", safety_category="HARM_CATEGORY_HARASSMENT", usage=(9, 0))
    events = await collect(make())
    assert text_of(events) == ""
    assert events[0] == Usage(9, 0)
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "content_filter"
    assert "blocked this request" in finish.message
    assert "SAFETY" in finish.message and "harassment" in finish.message
    other = {"promptFeedback": {"blockReason": "OTHER", "blockReasonMessage": "Not allowed here."}}
    provider = mock_provider([sse(other)])
    finish = (await collect(provider))[-1]
    await provider.aclose()
    assert finish == Finish(
        "content_filter", "Gemini blocked this request and did not answer (OTHER). Not allowed here."
    )


async def test_usage_metadata_last_totals_win():
    frames = (
        {**candidate("a"), "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}},
        {**candidate("b"), "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1}},
        {**candidate("c", "STOP"), "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3}},
    )
    provider = mock_provider([sse(*frames)])
    events = await collect(provider)
    await provider.aclose()
    # one mock body = one read: the three text deltas arrive merged
    assert events == [TextDelta("abc"), Usage(5, 3), Finish("stop", "")]


async def test_trailing_usage_frame_after_finish_is_read(fake: FakeGeminiServer, make):
    fake.add_raw(
        sse(candidate("Done", "STOP"), {"usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1}})
    )
    assert (await collect(make()))[-2:] == [Usage(2, 1), Finish("stop", "")]


async def test_json_array_without_sse_is_accepted(fake: FakeGeminiServer, make):
    """A proxy that drops ``alt=sse`` gets the whole stream as one JSON array."""
    doc = [candidate("Whole "), {**candidate("answer", "STOP"), "usageMetadata": {"promptTokenCount": 3}}]
    fake.add_raw(json.dumps(doc).encode(), content_type="application/json; charset=UTF-8")
    events = await collect(make())
    assert events == [TextDelta("Whole "), TextDelta("answer"), Usage(3, 0), Finish("stop", "")]


# ── request shape ───────────────────────────────────────────────────────────────────────────


async def test_request_url_body_and_key_header(fake: FakeGeminiServer, make):
    provider = make(
        model="gemini-2.5-pro",
        max_output_tokens=500,
        options={"temperature": 0.2, "safetySettings": [{"category": "X", "threshold": "BLOCK_NONE"}]},
    )
    image = ImageRef("data:image/png;base64,iVBORw0KGgo=", mime_type="image/png")
    request = ProviderRequest(
        "You are terse.",
        [
            ChatMessage.text(Role.USER, "first"),
            ChatMessage.text(Role.ASSISTANT, "answer"),
            ChatMessage(Role.USER, [TextPart("what is this?"), ImagePart(image)]),
        ],
        options={"temperature": 0.9, "generationConfig": {"topK": 3}, "contents": "ignored"},
    )
    await collect(provider, request)
    sent = fake.requests[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-pro:streamGenerateContent"
    assert sent.query == {"alt": "sse"}  # the key is never in the URL
    assert sent.headers["x-goog-api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.json == {
        "contents": [
            {"role": "user", "parts": [{"text": "first"}]},
            {"role": "model", "parts": [{"text": "answer"}]},
            {
                "role": "user",
                "parts": [
                    {"text": "what is this?"},
                    {"inline_data": {"mime_type": "image/png", "data": "iVBORw0KGgo="}},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "generationConfig": {"temperature": 0.9, "topK": 3, "maxOutputTokens": 500},
        "safetySettings": [{"category": "X", "threshold": "BLOCK_NONE"}],
    }


async def test_roles_map_and_consecutive_turns_merge(fake: FakeGeminiServer, make):
    request = ProviderRequest(
        "",
        [
            ChatMessage.text(Role.USER, "one"),
            ChatMessage.text(Role.USER, "two"),
            ChatMessage.text(Role.SYSTEM, "Be kind."),
            ChatMessage.text(Role.ASSISTANT, "reply"),
            ChatMessage.text(Role.ASSISTANT, ""),  # empty text is rejected by the API
            ChatMessage.text(Role.USER, "three"),
        ],
        max_output_tokens=64,
    )
    assert text_of(await collect(make(), request)) == "You said: three"
    sent = fake.requests[-1].json
    assert sent["systemInstruction"] == {"parts": [{"text": "Be kind."}]}
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
        {"role": "model", "parts": [{"text": "reply"}]},
        {"role": "user", "parts": [{"text": "three"}]},
    ]
    assert sent["generationConfig"] == {"maxOutputTokens": 64}


async def test_request_model_overrides_config_model(fake: FakeGeminiServer, make):
    await collect(make(), hello(model="models/gemini-2.0-flash"))
    assert fake.requests[-1].path == "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    assert "generationConfig" not in fake.requests[-1].json  # nothing to set: Gemini's defaults


@pytest.mark.parametrize(
    ("uri", "vision"),
    [
        ("https://example.com/cat.png", True),
        ("data:image/png,raw", True),
        ("data:image/png;base64,AA==", False),
    ],
)
async def test_unsendable_images_fail_before_any_request(fake, make, uri: str, vision: bool):
    provider = make(vision=vision)
    request = ProviderRequest("", [ChatMessage(Role.USER, [ImagePart(ImageRef(uri))])])
    with pytest.raises(CapabilityError):
        await collect(provider, request)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("model", "window", "max_output"),
    [
        ("gemini-2.5-flash", 1_048_576, 65_536),
        ("models/gemini-2.0-flash-lite", 1_048_576, 8_192),
        ("gemini-1.5-flash-002", 1_048_576, 8_192),
        ("gemini-1.5-pro", 2_097_152, 8_192),
        ("some-future-model", 1_048_576, 8_192),
    ],
)
def test_capabilities_from_model_name(model: str, window: int, max_output: int):
    caps = GeminiProvider("g", GeminiConfig(model=model)).capabilities
    assert (caps.vision, caps.context_window, caps.max_output_tokens, caps.tokenizer) == (
        True,
        window,
        max_output,
        None,
    )
    caps = GeminiProvider("g", GeminiConfig(model=model, context_window=999, vision=False)).capabilities
    assert (caps.context_window, caps.vision) == (999, False)


def test_registers_provider_type():
    registered: list = []
    gemini_plugin.register_providers(registered.append)
    [ptype] = registered
    assert (ptype.type, ptype.config_model) == ("gemini", GeminiConfig)
    assert isinstance(ptype.factory("x", GeminiConfig()), GeminiProvider)


# ── errors ──────────────────────────────────────────────────────────────────────────────────


async def test_resource_exhausted_carries_retry_delay(fake: FakeGeminiServer, make):
    fake.add_error(429, "You exceeded your current quota.", retry_delay=37)
    _, err = await failure(make())
    assert type(err) is ProviderRateLimitError
    assert err.retry_after == 37
    assert err.status == 429
    assert "RESOURCE_EXHAUSTED" in str(err) and "retry after 37s" in str(err)
    fake.add_error(429, "Quota.")  # no RetryInfo, no header: unknown
    _, err = await failure(make())
    assert isinstance(err, ProviderRateLimitError) and err.retry_after is None


@pytest.mark.parametrize(
    ("status", "reason", "error"),
    [
        (400, None, ProviderResponseError),
        (400, "API_KEY_INVALID", ProviderAuthError),
        (403, None, ProviderAuthError),
        (404, None, ProviderNotFoundError),
        (500, None, ProviderUnavailableError),
        (503, None, ProviderUnavailableError),
    ],
)
async def test_http_errors_map_to_error_tree(fake, make, status: int, reason, error):
    fake.add_error(status, f"Server says {status}", reason=reason)
    _, err = await failure(make())
    assert type(err) is error
    assert err.status == status
    assert err.provider == "gem"
    assert f"Server says {status}" in str(err)
    assert "models/gemini-2.5-flash:streamGenerateContent" in str(err)


async def test_input_too_long_is_context_error(fake: FakeGeminiServer, make):
    fake.add_error(
        400, "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    )
    _, err = await failure(make())
    assert type(err) is ContextTooLongError


async def test_error_body_wrapped_in_a_list(fake: FakeGeminiServer, make):
    body = [{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]
    fake.add_raw(json.dumps(body).encode(), status=503, content_type="application/json")
    _, err = await failure(make())
    assert type(err) is ProviderUnavailableError
    assert "The model is overloaded. (UNAVAILABLE)" in str(err)


async def test_error_frame_mid_stream(fake: FakeGeminiServer, make):
    fake.add_reply("Hello there, friend", error_after_chars=7, error_status=503)
    text, err = await failure(make())
    assert text == "Hello t"
    assert type(err) is ProviderUnavailableError
    assert "overloaded" in str(err)
    fake.add_raw(
        sse(candidate("x"), {"error": {"code": 400, "message": "Bad part", "status": "INVALID_ARGUMENT"}})
    )
    text, err = await failure(make())
    assert (text, type(err)) == ("x", ProviderResponseError)


async def test_invalid_json_frame_is_response_error(fake: FakeGeminiServer, make):
    fake.add_raw(sse(candidate("Fine")) + b'data: {"candidates": [{"content": \r\n\r\n')
    text, err = await failure(make())
    assert text == "Fine"
    assert type(err) is ProviderResponseError
    assert "frame 2 is not valid JSON" in str(err)
    assert err.__cause__ is None


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"hello world\nthis is not sse at all\n\n", "text/event-stream", "no GenerateContentResponse"),
        (b"<html>502 Bad Gateway</html>", "text/html", "expected an event stream"),
        (b"data: [1, 2]\r\n\r\n", "text/event-stream", "not a JSON object"),
    ],
)
async def test_malformed_bodies_are_response_errors(fake, make, body, content_type, words):
    fake.add_raw(body, content_type=content_type)
    _, err = await failure(make())
    assert type(err) is ProviderResponseError
    assert words in str(err)


async def test_cut_off_stream_is_unavailable(fake: FakeGeminiServer, make):
    fake.add_reply("Hello there, this answer never ends", drop_after_chars=9)
    text, err = await failure(make())
    assert text == "Hello the"
    assert type(err) is ProviderUnavailableError
    assert "stream cut off" in str(err) and "no finishReason" in str(err)


# ── the provider contract kit (chunk timeouts, closing and cancelling streams, HTTP errors) ──


class TestGeminiContract(HTTPProviderContract):
    """relaybot.testing's provider contract, over both HTTP transports."""

    @pytest.fixture
    def contract_fake(self, fake: FakeGeminiServer) -> FakeGeminiServer:
        return fake

    @pytest.fixture
    def contract_make(self, make):  # type: ignore[no-untyped-def]
        return make


# ── secrets ─────────────────────────────────────────────────────────────────────────────────


async def test_api_key_never_in_url_errors_or_logs(fake: FakeGeminiServer, make, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make()
    await collect(provider)
    fake.add_error(400, f"API key not valid: {KEY}")  # a server (or proxy) echoing the key
    fake.add_raw(sse({"error": {"code": 500, "message": f"internal {KEY}", "status": "INTERNAL"}}))
    fake.add_raw(f"data: {{not json {KEY}\r\n\r\n".encode())
    errors = [(await failure(provider))[1] for _ in range(3)]
    assert [type(e) for e in errors] == [ProviderAuthError, ProviderUnavailableError, ProviderResponseError]
    for err in errors:
        assert KEY not in str(err) and KEY not in repr(err.args)
    assert KEY not in caplog.text
    assert KEY not in repr(provider.config)
    assert all("key" not in r.query and KEY not in r.path for r in fake.requests)


async def test_wrong_key_gets_auth_error(fake: FakeGeminiServer, make):
    _, err = await failure(make(api_key="AIza-wrong-0000000000"))
    assert type(err) is ProviderAuthError
    assert err.status == 400  # Gemini's answer to a bad key
    assert "API key not valid" in str(err)
    assert "AIza-wrong-0000000000" not in str(err)
    _, err = await failure(make(api_key=None))
    assert type(err) is ProviderAuthError and err.status == 403
