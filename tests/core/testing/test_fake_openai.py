"""The fake OpenAI server speaks the wire format a real OpenAI client expects (checked with plain httpx)."""

from __future__ import annotations

import json

import httpx
import pytest
from httpx_sse import aconnect_sse

from relaybot.core.testing.fake_openai import FakeOpenAIServer

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ping"}], "stream": True}


async def frames(client: httpx.AsyncClient, url: str, body: dict, **kw) -> list[str]:
    async with aconnect_sse(client, "POST", url + "/chat/completions", json=body, **kw) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [sse.data async for sse in source.aiter_sse()]


def text_from(data: list[str]) -> str:
    chunks = [json.loads(d) for d in data if d != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_stream_shape_with_usage_and_done():
    async with FakeOpenAIServer() as fake, httpx.AsyncClient() as client:
        fake.add_reply("Hello world", chunk_size_chars=["Hello", " world"], usage=(5, 2))
        data = await frames(client, fake.base_url, {**BODY, "stream_options": {"include_usage": True}})
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["model"] == "gpt-4o-mini" and isinstance(c["created"], int) for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["Hello", " world"]
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


async def test_default_reply_echoes_and_no_usage_unless_asked():
    async with FakeOpenAIServer() as fake, httpx.AsyncClient() as client:
        data = await frames(client, fake.base_url, BODY)
        fake.default = lambda request_json: "custom"
        custom = await frames(client, fake.base_url, BODY)
    chunks = [json.loads(d) for d in data[:-1]]
    assert text_from(data) == "You said: ping"
    assert all(c["choices"] for c in chunks)  # no usage chunk without include_usage
    assert text_from(custom) == "custom"
    assert [r.json["messages"][0]["content"] for r in fake.requests] == ["ping", "ping"]


async def test_non_streaming_completion():
    async with FakeOpenAIServer() as fake, httpx.AsyncClient() as client:
        fake.add_reply("Whole answer", usage=(3, 2))
        response = await client.post(fake.base_url + "/chat/completions", json={**BODY, "stream": False})
    doc = response.json()
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"] == {"role": "assistant", "content": "Whole answer", "refusal": None}
    assert doc["usage"]["total_tokens"] == 5


async def test_api_key_check_and_request_recording():
    async with FakeOpenAIServer(api_key="sk-right-123456") as fake, httpx.AsyncClient() as client:
        url = fake.base_url + "/chat/completions"
        missing = await client.post(url, json=BODY)
        wrong = await client.post(url, json=BODY, headers={"Authorization": "Bearer sk-wrong-987654"})
        fake.add_reply("ok")
        ok = await frames(client, fake.base_url, BODY, headers={"Authorization": "Bearer sk-right-123456"})
    assert missing.status_code == wrong.status_code == 401
    assert "didn't provide an API key" in missing.json()["error"]["message"]
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-987654" not in wrong.text  # echoed only masked, like OpenAI
    assert text_from(ok) == "ok"
    assert fake.pending == 0
    assert len(fake.requests) == 3
    assert fake.requests[1].headers["authorization"] == "Bearer sk-wrong-987654"


async def test_errors_and_raw_replay():
    body = b'data: {"choices": []}\n\n' * 3 + "data: é\n\n".encode()
    async with FakeOpenAIServer() as fake, httpx.AsyncClient() as client:
        url = fake.base_url + "/chat/completions"
        fake.add_error(429, "Slow down", retry_after=3, code="rate_limit_exceeded")
        fake.add_raw(body, split_at=[1, 5, 30, len(body) - 2], chunk_delay=0.001)
        limited = await client.post(url, json=BODY)
        async with client.stream("POST", url, json=BODY) as response:
            replayed = b"".join([piece async for piece in response.aiter_raw()])
    assert limited.status_code == 429 and limited.headers["retry-after"] == "3"
    assert limited.json()["error"]["message"] == "Slow down"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert replayed == body


async def test_drop_after_chars_and_refusal():
    async with FakeOpenAIServer() as fake, httpx.AsyncClient() as client:
        fake.add_reply("abcdefghij", drop_after_chars=6)
        fake.add_reply("No.", refusal=True)
        dropped = await frames(client, fake.base_url, BODY)
        refused = await frames(client, fake.base_url, BODY)
    assert "[DONE]" not in dropped
    assert text_from(dropped) == "abcdef"
    deltas = [json.loads(d)["choices"][0]["delta"] for d in refused[:-1] if json.loads(d)["choices"]]
    assert "".join(d.get("refusal") or "" for d in deltas) == "No."
    assert not any(d.get("content") for d in deltas)


def test_chunk_list_must_match_text():
    fake = FakeOpenAIServer()
    with pytest.raises(ValueError):
        fake.add_reply("abc", chunk_size_chars=["a", "b"])
