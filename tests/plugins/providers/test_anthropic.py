"""AnthropicProvider against the fake Anthropic server (real HTTP on loopback) and recorded streams."""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
from collections.abc import AsyncIterator, Iterable

import httpx
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
from relaybot.core.testing.fake_anthropic import FakeAnthropicServer
from relaybot.plugins.providers import anthropic as anthropic_plugin
from relaybot.plugins.providers.anthropic import AnthropicConfig, AnthropicProvider
from relaybot.testing import HTTPProviderContract

from .conftest import (
    collect,
    cut,
    failure,
    fixture_bytes,
    hello,
    provider_maker,
    sse_transport,
    text_of,
)

KEY = "sk-ant-test-5e4d3c2b1a09f8e7d6c5"
# fixture -> (text, usage, finish reason, words the finish message must contain)
EXPECTED: dict[str, tuple[str, tuple[int, int], str, tuple[str, ...]]] = {
    "anthropic-basic.sse": ("Hello there!", (11, 6), "stop", ()),
    "anthropic-refusal.sse": ("", (20, 0), "refusal", ("refused", "This request was refused due to policy.")),
}


def check_fixture(name: str, events: list[ProviderEvent]) -> None:
    text, (prompt, completion), reason, words = EXPECTED[name]
    assert text_of(events) == text
    assert [e for e in events if isinstance(e, Usage)] == [Usage(prompt, completion)]
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == reason
    for word in words:
        assert word in finish.message  # the user is told the request was refused, and why


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropicServer]:
    async with FakeAnthropicServer(api_key=KEY) as server:
        yield server


@pytest.fixture
async def make(fake: FakeAnthropicServer, http_client: str):
    def build(**config: object) -> AnthropicProvider:
        return AnthropicProvider("claude", AnthropicConfig(**config))  # type: ignore[arg-type]

    async with provider_maker(build, base_url=fake.base_url, api_key=KEY, http_client=http_client) as make:
        yield make


# ── recorded streams ────────────────────────────────────────────────────────────────────────


def split_plans(body: bytes) -> dict[str, list[int]]:
    """Byte offsets to cut a body at: regular, random, and inside `event:`/`data:` prefixes."""
    plans = {"whole": [], "every-97": list(range(97, len(body), 97))}
    for seed in (1, 2):
        plans[f"random-{seed}"] = sorted(random.Random(seed).sample(range(1, len(body)), 25))
    prefixes = [m.start() + 3 for m in re.finditer(rb"data:|event:|\n\n", body)]
    plans["prefixes"] = sorted(set(prefixes))
    return plans


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recorded_stream_over_http_split_anywhere(fake: FakeAnthropicServer, make, name: str):
    body = fixture_bytes(name)
    provider = make()
    for plan, offsets in split_plans(body).items():
        # A small delay makes each piece arrive in its own socket read.
        fake.add_raw(body, split_at=offsets, chunk_delay=0.001 if offsets else 0)
        try:
            check_fixture(name, await collect(provider))
        except AssertionError as exc:
            raise AssertionError(f"split plan {plan!r}: {exc}") from exc
    assert fake.disconnects == 0


def mock_provider(pieces: list[bytes], seen: list[httpx.Request] | None = None) -> AnthropicProvider:
    return AnthropicProvider(
        "claude",
        AnthropicConfig(base_url="http://fake.invalid", api_key=KEY),
        transport=sse_transport(pieces, seen),
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_recorded_stream_exact_chunk_boundaries(name: str):
    """Every cut reaches the parser exactly (a mock transport cannot coalesce reads)."""
    body = fixture_bytes(name)
    plans: list[Iterable[int]] = [range(1, len(body)), range(3, len(body), 3), range(61, len(body), 61)]
    plans += [random.Random(seed).sample(range(1, len(body)), 60) for seed in range(6)]
    for offsets in plans:
        provider = mock_provider(cut(body, offsets))
        check_fixture(name, await collect(provider))
        await provider.aclose()


async def test_recording_without_final_newline_is_complete():
    """The basic recording ends in `data: {"type":"message_stop"}` with no blank line after it.

    SSE parsers drop such an unterminated event, so the answer must already count as whole
    after `message_delta` carried the stop reason; the same body with the blank line works too.
    """
    body = fixture_bytes("anthropic-basic.sse")
    assert not body.endswith(b"\n\n")
    for variant in (body, body + b"\n\n"):
        provider = mock_provider([variant])
        check_fixture("anthropic-basic.sse", await collect(provider))
        await provider.aclose()


# ── stream events ───────────────────────────────────────────────────────────────────────────


async def test_streams_scripted_reply_with_usage_and_finish(fake: FakeAnthropicServer, make):
    # paced, so that each chunk is its own network read (one read = one merged delta)
    fake.add_reply(
        "Héllo wörld, ünïcode 👋 ok", chunk_size_chars=3, usage=(12, 7), ping_every=2, tokens_per_second=200
    )
    events = await collect(make())
    assert text_of(events) == "Héllo wörld, ünïcode 👋 ok"
    assert len([e for e in events if isinstance(e, TextDelta)]) > 3  # streamed, not one blob
    assert events[-2:] == [Usage(12, 7), Finish("stop", "")]


async def test_usage_is_cumulative_not_summed(fake: FakeAnthropicServer, make):
    # message_start says output_tokens 1, message_delta says 40 (the total): 40, not 41.
    fake.add_reply("x" * 160, usage=(30, 40))
    usage = [e for e in await collect(make()) if isinstance(e, Usage)]
    assert usage == [Usage(30, 40)]


async def test_later_message_delta_totals_replace_earlier_ones():
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}}
    text = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}}
    partial = {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 3}}
    final_usage = {"output_tokens": 5, "input_tokens": 10, "cache_read_input_tokens": 90}
    final = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": final_usage}
    events = [
        ("message_start", start),
        ("content_block_delta", text),
        ("message_delta", partial),
        ("message_delta", final),
        ("message_stop", {"type": "message_stop"}),
    ]
    body = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events).encode()
    provider = mock_provider([body])
    events_out = await collect(provider)
    await provider.aclose()
    # cached prompt tokens are part of the prompt the model read
    # … and the cache reads among them are billed at the cached-input price
    assert events_out[-2:] == [Usage(100, 5, cached_input_tokens=90), Finish("stop", "")]


async def test_ping_thinking_and_unknown_events_are_ignored(fake: FakeAnthropicServer, make):
    fake.add_reply("The answer.", thinking="Let me think about this carefully.", ping_every=1)
    assert text_of(await collect(make())) == "The answer."
    body = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":3}}}\n\n'
        b'event: ping\ndata: {"type": "ping"}\n\n'
        b'event: brand_new_event\ndata: {"type":"brand_new_event","whatever":[1,2]}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"input_json_delta","partial_json":"{\\"a\\": 1"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        b'"delta":{"type":"text_delta","text":"Visible"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
        b'"delta":{"type":"future_delta","text":"not text"}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
        b'"usage":{"output_tokens":2}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    fake.add_raw(body)
    events = await collect(make())
    assert text_of(events) == "Visible"
    assert events[-2:] == [Usage(3, 2), Finish("stop", "")]


@pytest.mark.parametrize(
    ("stop_reason", "reason", "words"),
    [
        ("max_tokens", "length", "length limit"),
        ("stop_sequence", "stop", ""),
        ("tool_use", "other", "tool_use"),
        ("pause_turn", "other", "pause_turn"),
        ("model_context_window_exceeded", "length", "context window"),
        ("something_new", "other", "something_new"),
    ],
)
async def test_stop_reasons_are_normalised(fake, make, stop_reason: str, reason: str, words: str):
    fake.add_reply("partial", stop_reason=stop_reason)
    finish = (await collect(make()))[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == reason
    if reason == "stop":
        assert finish.message == ""
    else:
        assert words in finish.message  # the user is told why the reply ended early


async def test_refusal_without_details_still_says_refused(fake: FakeAnthropicServer, make):
    fake.add_reply("", stop_reason="refusal")
    finish = (await collect(make()))[-1]
    assert finish == Finish("refusal", "The model refused this request.")


async def test_non_streaming_json_answer_is_accepted(fake: FakeAnthropicServer, make):
    doc = {
        "type": "message",
        "content": [{"type": "text", "text": "Whole"}],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 3, "output_tokens": 1},
    }
    fake.add_raw(json.dumps(doc).encode(), content_type="application/json")
    events = await collect(make())
    assert events[:2] == [TextDelta("Whole"), Usage(3, 1)]
    assert isinstance(events[2], Finish) and events[2].reason == "length"


# ── request shape ───────────────────────────────────────────────────────────────────────────


async def test_request_body_and_headers(fake: FakeAnthropicServer, make):
    provider = make(
        model="claude-opus-4-1",
        options={"temperature": 0.2, "top_k": 5},
        extra_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"},
    )
    image = ImageRef("data:image/png;base64,iVBORw0KGgo=", mime_type="image/png")
    request = ProviderRequest(
        "You are terse.",
        [
            ChatMessage.text(Role.USER, "first"),
            ChatMessage.text(Role.ASSISTANT, "answer"),
            ChatMessage(Role.USER, [TextPart("what is this?"), ImagePart(image)]),
        ],
        options={"temperature": 0.9, "stream": False, "stop_sequences": ["END"]},
    )
    await collect(provider, request)
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.json["model"] == "claude-opus-4-1"
    assert sent.json["stream"] is True  # options cannot turn streaming off
    assert sent.json["system"] == "You are terse."
    assert sent.json["max_tokens"] == 1024  # always set: the API requires it
    assert (sent.json["temperature"], sent.json["top_k"], sent.json["stop_sequences"]) == (0.9, 5, ["END"])
    assert sent.json["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
            ],
        },
    ]
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "fine-grained-tool-streaming-2025-05-14"
    assert "authorization" not in sent.headers


async def test_max_tokens_from_request_then_config(fake: FakeAnthropicServer, make):
    await collect(make(max_output_tokens=77))
    await collect(make(max_output_tokens=77), hello(max_output_tokens=321))
    await collect(make(), hello(options={"max_tokens": 5}))
    assert [r.json["max_tokens"] for r in fake.requests] == [77, 321, 5]


async def test_roles_alternate_and_start_with_user(fake: FakeAnthropicServer, make):
    """The strict fake rejects what the real API rejects; the provider reshapes the context."""
    request = ProviderRequest(
        "Base prompt.",
        [
            ChatMessage.text(Role.ASSISTANT, "an answer whose question was trimmed away"),
            ChatMessage.text(Role.ASSISTANT, "and another one"),
            ChatMessage.text(Role.USER, "one"),
            ChatMessage.text(Role.SYSTEM, "Extra instructions."),
            ChatMessage.text(Role.USER, "two"),
            ChatMessage.text(Role.USER, "   "),  # blank: the API rejects empty text blocks
            ChatMessage.text(Role.ASSISTANT, "reply"),
            ChatMessage.text(Role.USER, "three"),
            ChatMessage.text(Role.ASSISTANT, "Prefill "),
        ],
    )
    assert text_of(await collect(make(), request)) == "You said: three"
    sent = fake.requests[-1].json
    assert sent["system"] == "Base prompt.\n\nExtra instructions."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "Prefill"},  # trailing whitespace is rejected in a prefill
    ]
    roles = [m["role"] for m in sent["messages"]]
    assert roles[0] == "user" and all(a != b for a, b in itertools.pairwise(roles))


async def test_only_assistant_messages_fail_before_any_request(fake: FakeAnthropicServer, make):
    request = ProviderRequest("", [ChatMessage.text(Role.ASSISTANT, "hello?")])
    with pytest.raises(CapabilityError):
        await collect(make(), request)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("uri", "model", "vision"),
    [
        ("https://example.com/cat.png", "claude-sonnet-4-5", None),
        ("data:image/png,not-base64", "claude-sonnet-4-5", None),
        ("data:image/bmp;base64,Qk0=", "claude-sonnet-4-5", None),
        ("data:image/png;base64," + "A" * 7_000_000, "claude-sonnet-4-5", None),
        ("data:image/png;base64,AA==", "claude-2.1", None),
        ("data:image/png;base64,AA==", "claude-sonnet-4-5", False),
    ],
)
async def test_unsendable_images_fail_before_any_request(fake, make, uri: str, model: str, vision):
    provider = make(model=model, vision=vision)
    request = ProviderRequest("", [ChatMessage(Role.USER, [TextPart("look"), ImagePart(ImageRef(uri))])])
    with pytest.raises(CapabilityError):
        await collect(provider, request)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("model", "vision"),
    [
        ("claude-sonnet-4-5", True),
        ("claude-opus-4-1-20250805", True),
        ("claude-3-5-haiku-latest", True),
        ("claude-3-opus-20240229", True),
        ("anthropic/claude-haiku-4-5", True),
        ("claude-2.1", False),
        ("claude-instant-1.2", False),
    ],
)
def test_capabilities_from_model_name(model: str, vision: bool):
    caps = AnthropicProvider("c", AnthropicConfig(model=model)).capabilities
    assert (caps.vision, caps.context_window, caps.tokenizer, caps.max_output_tokens) == (
        vision,
        200_000,
        None,
        1024,
    )
    caps = AnthropicProvider("c", AnthropicConfig(model=model, context_window=999, vision=True)).capabilities
    assert (caps.context_window, caps.vision) == (999, True)


async def test_base_url_with_v1_suffix_is_tolerated(fake: FakeAnthropicServer, make):
    fake.add_reply("ok")
    assert text_of(await collect(make(base_url=fake.base_url + "/v1/"))) == "ok"
    assert fake.requests[-1].path == "/v1/messages"


def test_registers_provider_type():
    registered: list = []
    anthropic_plugin.register_providers(registered.append)
    [ptype] = registered
    assert (ptype.type, ptype.config_model) == ("anthropic", AnthropicConfig)
    assert isinstance(ptype.factory("x", AnthropicConfig()), AnthropicProvider)


# ── errors ──────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, ProviderAuthError),
        (403, ProviderAuthError),
        (404, ProviderNotFoundError),
        (400, ProviderResponseError),
        (500, ProviderUnavailableError),
        (529, ProviderUnavailableError),
    ],
)
async def test_http_errors_map_to_error_tree(fake, make, status: int, error):
    fake.add_error(status, f"Server says {status}")
    _, err = await failure(make())
    assert type(err) is error
    assert err.status == status
    assert err.provider == "claude"
    assert f"Server says {status}" in str(err)
    assert f"{fake.base_url}/v1/messages" in str(err)
    assert "[request id req_" in str(err)  # what support asks for


async def test_overloaded_529_says_overloaded(fake: FakeAnthropicServer, make):
    fake.add_error(529, "Overloaded")
    _, err = await failure(make())
    assert isinstance(err, ProviderUnavailableError)
    assert "Overloaded" in str(err) and "overloaded_error" in str(err)
    assert "unavailable" in err.user_message


async def test_prompt_too_long_is_context_error(fake: FakeAnthropicServer, make):
    fake.add_error(400, "prompt is too long: 215343 tokens > 200000 maximum")
    _, err = await failure(make())
    assert type(err) is ContextTooLongError
    assert "215343 tokens > 200000 maximum" in str(err)
    assert "/new" in err.user_message


async def test_rate_limit_carries_retry_after(fake: FakeAnthropicServer, make):
    fake.add_error(429, "Number of request tokens has exceeded your per-minute rate limit", retry_after=13)
    _, err = await failure(make())
    assert isinstance(err, ProviderRateLimitError)
    assert err.retry_after == 13


@pytest.mark.parametrize(
    ("error_type", "error"),
    [
        ("overloaded_error", ProviderUnavailableError),
        ("api_error", ProviderUnavailableError),
        ("rate_limit_error", ProviderRateLimitError),
        ("invalid_request_error", ProviderResponseError),
    ],
)
async def test_error_event_mid_stream(fake: FakeAnthropicServer, make, error_type: str, error):
    fake.add_reply("Hello there, friend", error_after_chars=7, error_type=error_type, error_message="Boom")
    text, err = await failure(make())
    assert text == "Hello t"  # what arrived before the error was delivered
    assert type(err) is error
    assert "Boom" in str(err) and error_type in str(err)


async def test_dropped_stream_is_unavailable(fake: FakeAnthropicServer, make):
    fake.add_reply("Hello there, this answer never ends", drop_after_chars=9)
    text, err = await failure(make())
    assert text == "Hello the"
    assert type(err) is ProviderUnavailableError
    assert "cut off" in str(err)


async def test_truncated_recording_is_unavailable(fake: FakeAnthropicServer, make):
    body = fixture_bytes("anthropic-basic.sse")
    fake.add_raw(body[: body.index(b"event: message_delta")])
    text, err = await failure(make())
    assert text == "Hello there!"
    assert type(err) is ProviderUnavailableError


@pytest.mark.parametrize(
    ("body", "content_type", "words"),
    [
        (b"hello world\nthis is not sse at all\n\n", "text/event-stream", "no Messages API events"),
        (b"<html>502 Bad Gateway</html>", "text/html", "expected an event stream"),
        (
            b'event: message_start\ndata: {"type": "message_start", \n\n',
            "text/event-stream",
            "not valid JSON",
        ),
        (b"event: ping\ndata: [1, 2]\n\n", "text/event-stream", "not a JSON object"),
    ],
)
async def test_malformed_bodies_are_response_errors(fake, make, body, content_type, words):
    fake.add_raw(body, content_type=content_type)
    _, err = await failure(make())
    assert type(err) is ProviderResponseError
    assert words in str(err)
    assert err.__cause__ is None  # no JSONDecodeError leaking through


# ── the provider contract kit (chunk timeouts, closing and cancelling streams, HTTP errors) ──


class TestAnthropicContract(HTTPProviderContract):
    """relaybot.testing's provider contract, over both HTTP transports."""

    @pytest.fixture
    def contract_fake(self, fake: FakeAnthropicServer) -> FakeAnthropicServer:
        return fake

    @pytest.fixture
    def contract_make(self, make):  # type: ignore[no-untyped-def]
        return make


# ── secrets ─────────────────────────────────────────────────────────────────────────────────


async def test_api_key_never_in_errors_or_logs(fake: FakeAnthropicServer, make, caplog):
    caplog.set_level(logging.DEBUG)
    provider = make()
    await collect(provider)
    fake.add_error(401, f"invalid x-api-key {KEY}")  # a server (or proxy) echoing the key
    fake.add_raw(
        f'event: error\ndata: {{"type":"error","error":{{"type":"x","message":"{KEY}"}}}}\n\n'.encode()
    )
    fake.add_raw(f"event: message_start\ndata: {{not json {KEY}\n\n".encode())
    errors = [(await failure(provider))[1] for _ in range(3)]
    assert [type(e) for e in errors] == [ProviderAuthError, ProviderResponseError, ProviderResponseError]
    for err in errors:
        assert KEY not in str(err) and KEY not in repr(err.args)
    assert KEY not in caplog.text
    assert KEY not in repr(provider.config)


async def test_wrong_key_gets_auth_error(fake: FakeAnthropicServer, make):
    _, err = await failure(make(api_key="sk-ant-wrong-000000000"))
    assert type(err) is ProviderAuthError
    assert err.status == 401
    assert "invalid x-api-key" in str(err)
    assert "sk-ant-wrong-000000000" not in str(err)
