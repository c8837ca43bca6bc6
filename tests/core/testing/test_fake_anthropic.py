"""The fake Anthropic server speaks the Messages API wire format (checked with plain httpx)."""

from __future__ import annotations

import json

import httpx
from httpx_sse import aconnect_sse

from relaybot.core.testing.fake_anthropic import FakeAnthropicServer
from relaybot.testing import FakeAnthropicServer as Exported

HEADERS = {"x-api-key": "sk-ant-k", "anthropic-version": "2023-06-01"}
BODY = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "ping"}],
    "stream": True,
}


async def events(client: httpx.AsyncClient, url: str, body: dict, headers=HEADERS) -> list[tuple[str, dict]]:
    async with aconnect_sse(client, "POST", url + "/v1/messages", json=body, headers=headers) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(sse.event, json.loads(sse.data)) async for sse in source.aiter_sse()]


def test_exported_from_the_kit():
    assert Exported is FakeAnthropicServer


async def test_event_sequence_and_cumulative_usage():
    async with FakeAnthropicServer(api_key="sk-ant-k") as fake, httpx.AsyncClient() as client:
        fake.add_reply("Hello world", chunk_size_chars=["Hello", " world"], usage=(5, 2), ping_every=1)
        got = await events(client, fake.base_url, BODY)
    names = [name for name, _ in got]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "ping",
        "content_block_delta",
        "ping",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in got)  # `event:` matches the data's type
    start = got[0][1]["message"]
    assert start["usage"]["input_tokens"] == 5 and start["usage"]["output_tokens"] == 1
    assert [d["delta"]["text"] for n, d in got if n == "content_block_delta"] == ["Hello", " world"]
    assert got[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert got[-2][1]["usage"] == {"output_tokens": 2}  # the total, not an increment
    assert fake.requests[0].headers["x-api-key"] == "sk-ant-k"


async def test_mid_stream_error_and_drop():
    async with FakeAnthropicServer() as fake, httpx.AsyncClient() as client:
        fake.add_reply("abcdefgh", chunk_size_chars=2, error_after_chars=3)
        fake.add_reply("abcdefgh", chunk_size_chars=2, drop_after_chars=5)
        errored = await events(client, fake.base_url, BODY)
        dropped = await events(client, fake.base_url, BODY)
    texts = [d["delta"]["text"] for n, d in errored if n == "content_block_delta"]
    assert texts == ["ab", "c"]
    assert errored[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    assert "".join(d["delta"]["text"] for n, d in dropped if n == "content_block_delta") == "abcde"
    assert "message_delta" not in [n for n, _ in dropped]


async def test_key_check_and_strict_validation():
    async with FakeAnthropicServer(api_key="sk-ant-k") as fake, httpx.AsyncClient() as client:
        url = fake.base_url + "/v1/messages"
        no_key = await client.post(url, json=BODY, headers={"anthropic-version": "2023-06-01"})
        wrong = await client.post(url, json=BODY, headers={**HEADERS, "x-api-key": "sk-ant-nope"})
        no_version = await client.post(url, json=BODY, headers={"x-api-key": "sk-ant-k"})
        no_max = await client.post(url, json={**BODY, "max_tokens": None}, headers=HEADERS)
        twice = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
        repeated = await client.post(url, json={**BODY, "messages": twice}, headers=HEADERS)
        first = [{"role": "assistant", "content": "a"}]
        assistant_first = await client.post(url, json={**BODY, "messages": first}, headers=HEADERS)
        fake.add_error(529, "Overloaded")
        overloaded = await client.post(url, json=BODY, headers=HEADERS)
    assert (no_key.status_code, wrong.status_code) == (401, 401)
    assert wrong.json()["error"]["type"] == "authentication_error"
    assert "sk-ant-nope" not in wrong.text
    for response, words in [
        (no_version, "anthropic-version"),
        (no_max, "max_tokens"),
        (repeated, "alternate"),
        (assistant_first, "first message"),
    ]:
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert words in response.json()["error"]["message"]
    assert overloaded.status_code == 529
    assert overloaded.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert overloaded.headers["request-id"].startswith("req_")


async def test_default_reply_and_non_streaming():
    async with FakeAnthropicServer() as fake, httpx.AsyncClient() as client:
        got = await events(client, fake.base_url, BODY)
        fake.add_reply("Whole", usage=(3, 1), stop_reason="max_tokens")
        whole = await client.post(
            fake.base_url + "/v1/messages", json={**BODY, "stream": False}, headers=HEADERS
        )
    assert "".join(d["delta"]["text"] for n, d in got if n == "content_block_delta") == "You said: ping"
    doc = whole.json()
    assert doc["content"] == [{"type": "text", "text": "Whole"}]
    assert (doc["stop_reason"], doc["usage"]) == ("max_tokens", {"input_tokens": 3, "output_tokens": 1})
