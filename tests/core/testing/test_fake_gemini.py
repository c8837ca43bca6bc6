"""The fake Gemini server speaks the streamGenerateContent wire format (checked with plain httpx)."""

from __future__ import annotations

import json

import httpx

from relaybot.core.testing.fake_gemini import FakeGeminiServer
from relaybot.testing import FakeGeminiServer as Exported

BODY = {"contents": [{"role": "user", "parts": [{"text": "ping"}]}]}
PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"


def frames(raw: bytes) -> list[dict]:
    """The SSE frames of a body; Gemini separates them with CRLF CRLF."""
    assert raw.endswith(b"\r\n\r\n")
    return [json.loads(block.removeprefix(b"data: ")) for block in raw.split(b"\r\n\r\n") if block]


def test_exported_from_the_kit():
    assert Exported is FakeGeminiServer


async def test_frames_finish_on_last_text_and_usage():
    async with FakeGeminiServer(api_key="AIza-k") as fake, httpx.AsyncClient() as client:
        fake.add_reply("Hello world", chunk_size_chars=["Hello", " world"], usage=(5, 2))
        response = await client.post(
            fake.url + PATH, params={"alt": "sse"}, json=BODY, headers={"x-goog-api-key": "AIza-k"}
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    got = frames(response.content)
    assert [f["candidates"][0]["content"]["parts"][0]["text"] for f in got] == ["Hello", " world"]
    assert "finishReason" not in got[0]["candidates"][0]
    assert got[-1]["candidates"][0]["finishReason"] == "STOP"
    assert got[-1]["usageMetadata"] == {
        "promptTokenCount": 5,
        "candidatesTokenCount": 2,
        "totalTokenCount": 7,
    }
    assert fake.requests[0].query == {"alt": "sse"}
    assert fake.requests[0].headers["x-goog-api-key"] == "AIza-k"


async def test_safety_block_error_frame_and_array_form():
    async with FakeGeminiServer() as fake, httpx.AsyncClient() as client:
        url = fake.url + PATH
        fake.add_reply("risky", finish_reason="SAFETY")
        fake.add_reply(block_reason="PROHIBITED_CONTENT")
        fake.add_reply("abcdef", chunk_size_chars=2, error_after_chars=3)
        safety = frames((await client.post(url, params={"alt": "sse"}, json=BODY)).content)
        blocked = frames((await client.post(url, params={"alt": "sse"}, json=BODY)).content)
        errored = frames((await client.post(url, params={"alt": "sse"}, json=BODY)).content)
        array = (await client.post(url, json=BODY)).json()  # no alt=sse: one JSON array
    final = safety[-1]["candidates"][0]
    assert final["finishReason"] == "SAFETY" and "content" not in final
    assert {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True} in final[
        "safetyRatings"
    ]
    assert blocked == [b for b in blocked if "candidates" not in b]
    assert blocked[0]["promptFeedback"]["blockReason"] == "PROHIBITED_CONTENT"
    assert [f["candidates"][0]["content"]["parts"][0]["text"] for f in errored[:-1]] == ["ab", "c"]
    assert errored[-1]["error"]["status"] == "UNAVAILABLE"
    assert isinstance(array, list) and array[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "".join(f["candidates"][0]["content"]["parts"][0]["text"] for f in array) == "You said: ping"


async def test_key_check_errors_and_validation():
    async with FakeGeminiServer(api_key="AIza-k") as fake, httpx.AsyncClient() as client:
        url = fake.url + PATH
        missing = await client.post(url, json=BODY)
        wrong = await client.post(url, json=BODY, headers={"x-goog-api-key": "AIza-nope"})
        by_query = await client.post(url, params={"key": "AIza-k"}, json=BODY)
        bad_role = await client.post(
            url,
            json={"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
            params={"key": "AIza-k"},
        )
        fake.add_error(429, "Quota exceeded.", retry_delay=37)
        limited = await client.post(url, json=BODY, headers={"x-goog-api-key": "AIza-k"})
    assert missing.status_code == 403 and missing.json()["error"]["status"] == "PERMISSION_DENIED"
    assert wrong.status_code == 400
    assert wrong.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    assert by_query.status_code == 200  # the real API accepts ?key= too
    assert fake.requests[2].query["key"] == "AIza-k"  # so a test can catch a leaky client
    assert bad_role.status_code == 400 and "valid role" in bad_role.json()["error"]["message"]
    error = limited.json()["error"]
    assert (limited.status_code, error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"} in error["details"]
