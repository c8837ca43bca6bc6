"""The web chat's HTTP API against a running relaybot (real SQLite, fake OpenAI server, httpx)."""

from __future__ import annotations

import io
import json

import pytest
from pydantic import ValidationError

from relaybot.connectors.web import WebConfig
from relaybot.core.contracts.errors import ConfigError
from relaybot.core.contracts.models import ReplyStatus


def png_bytes(size: tuple[int, int] = (40, 30), color: str = "red") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


async def send(bot, text: str, **extra) -> dict:
    res = await bot.call("POST", "/api/messages", json={"text": text, **extra})
    assert res.status_code == 202, res.text
    return res.json()


async def test_message_streams_as_events_and_is_stored(web, fake_openai, events_of, rebuild_texts) -> None:
    fake_openai.add_reply("Hello there, **friend**. How are you today?", chunk_size_chars=3)
    log = await events_of(web)
    sent = await send(web, "hi")
    events = await log.wait_for(lambda ev: any(e.event == "done" for e in ev))
    names = [e.event for e in events]
    assert names.index("thinking") < names.index("delta") < names.index("done")
    assert list(rebuild_texts(events).values()) == ["Hello there, **friend**. How are you today?"]
    # every event is numbered, in order, and tagged with the conversation
    seqs = [int(e.id.rsplit("-", 1)[1]) for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for e in events:
        assert json.loads(e.data)["conversation_id"] == sent["conversation_id"]
    done = json.loads(log.named("done")[-1].data)
    stored = await web.stored()
    assert [(m.role.value, m.text, m.status) for m in stored] == [
        ("user", "hi", ReplyStatus.COMPLETE),
        ("assistant", "Hello there, **friend**. How are you today?", ReplyStatus.COMPLETE),
    ]
    assert done["reply_id"] == stored[1].id


async def test_history_paging_and_conversation_api(web) -> None:
    for i in range(5):
        await send(web, f"message {i}")
        await wait_stored(web, 2 * (i + 1))
    convs = (await web.call("GET", "/api/conversations")).json()
    assert len(convs["conversations"]) == 1
    cid = convs["active_id"]
    page = (await web.call("GET", f"/api/conversations/{cid}/messages?limit=4")).json()
    assert [m["text"] for m in page["messages"]] == [
        "message 3",
        "You said: message 3",
        "message 4",
        "You said: message 4",
    ]
    assert page["has_more"] is True
    older = (
        await web.call(
            "GET", f"/api/conversations/{cid}/messages?limit=50&before={page['messages'][0]['id']}"
        )
    ).json()
    assert len(older["messages"]) == 6 and older["has_more"] is False
    assert older["messages"][0]["text"] == "message 0"

    created = await web.call("POST", "/api/conversations", json={"title": "Cooking"})
    assert created.status_code == 201
    new_id = created.json()["id"]
    listing = (await web.call("GET", "/api/conversations")).json()
    assert listing["active_id"] == new_id and len(listing["conversations"]) == 2
    assert (
        await web.call("PATCH", f"/api/conversations/{cid}", json={"title": "Old stuff"})
    ).status_code == 200
    assert (await web.call("POST", f"/api/conversations/{cid}/switch")).json()["active"] is True
    titles = {
        c["id"]: c["title"] for c in (await web.call("GET", "/api/conversations")).json()["conversations"]
    }
    assert titles == {cid: "Old stuff", new_id: "Cooking"}

    md = await web.call("GET", f"/api/conversations/{cid}/export?format=md")
    assert md.headers["content-disposition"] == 'attachment; filename="Old-stuff.md"'
    assert md.text.startswith("# Old stuff") and "message 4" in md.text
    js = await web.call("GET", f"/api/conversations/{cid}/export?format=json")
    assert [m["role"] for m in js.json()["messages"]][:2] == ["user", "assistant"]

    assert (await web.call("DELETE", f"/api/conversations/{new_id}")).status_code == 200
    assert [c["id"] for c in (await web.call("GET", "/api/conversations")).json()["conversations"]] == [cid]


async def wait_stored(bot, count: int, client: str | None = None) -> list:
    import asyncio

    async with asyncio.timeout(15):
        while True:
            stored = await bot.stored(client)
            if len(stored) >= count and all(m.status != ReplyStatus.STREAMING for m in stored):
                return stored
            await asyncio.sleep(0.02)


async def test_each_browser_sees_only_its_own_conversations(web) -> None:
    await send(web, "secret plans")
    await wait_stored(web, 2)
    cid = (await web.call("GET", "/api/conversations")).json()["active_id"]
    other = "b" * 32
    assert (await web.call("GET", "/api/conversations", client=other)).json()["conversations"] == []
    for method, path in [
        ("GET", f"/api/conversations/{cid}/messages"),
        ("POST", f"/api/conversations/{cid}/switch"),
        ("DELETE", f"/api/conversations/{cid}"),
        ("GET", f"/api/conversations/{cid}/export"),
    ]:
        res = await web.call(method, path, client=other)
        assert res.status_code == 404, (method, path)
    res = await web.call("POST", "/api/messages", client=other, json={"text": "x", "conversation_id": cid})
    assert res.status_code == 404
    assert len(await web.stored()) == 2  # nothing was added or deleted


async def test_client_id_is_validated(web) -> None:
    for bad in ["", "short", "x" * 65, "../../etc/passwd-aaaaaaaa", "a b c d e f g h i j"]:
        res = await web.http.get(web.url + "/api/conversations", headers={"X-Relaybot-Client": bad})
        assert res.status_code == 400 and "client id" in res.json()["error"]


async def test_malformed_json_is_a_clear_400(web) -> None:
    for body in [b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"']:
        res = await web.call(
            "POST", "/api/messages", content=body, headers={"Content-Type": "application/json"}
        )
        assert res.status_code == 400
        assert res.headers["content-type"].startswith("application/json")
        assert "JSON" in res.json()["error"]
    res = await web.call("POST", "/api/messages", json={"text": 5})
    assert res.status_code == 400 and "text" in res.json()["error"]
    res = await web.call("POST", "/api/messages", json={"text": "  "})
    assert res.status_code == 400 and "empty" in res.json()["error"]
    assert await web.stored() == []


async def test_oversized_requests_are_refused(make_web) -> None:
    bot = await make_web(web={"max_upload_mb": 1})
    big = png_bytes() + b"\0" * (1024 * 1024 + 100 * 1024)
    res = await bot.call("POST", "/api/uploads", files={"file": ("big.png", big, "image/png")})
    assert res.status_code == 413 and "too large" in res.json()["error"]

    async def chunked():  # no Content-Length: counted while it arrives
        for _ in range(40):
            yield b"x" * 65536

    res = await bot.call(
        "POST", "/api/messages", content=chunked(), headers={"Content-Type": "application/json"}
    )
    assert res.status_code == 413
    res = await bot.call("POST", "/api/messages", json={"text": "y" * 100_001})
    assert res.status_code == 413 and "too long" in res.json()["error"]


async def test_non_image_renamed_png_is_refused(web) -> None:
    res = await web.call(
        "POST", "/api/uploads", files={"file": ("cat.png", b"MZ\x90\x00 not a picture", "image/png")}
    )
    assert res.status_code == 415
    assert "not an image" in res.json()["error"]
    res = await web.call(
        "POST", "/api/uploads", content=b"raw", headers={"Content-Type": "application/octet-stream"}
    )
    assert res.status_code == 400


async def test_image_upload_is_attached_and_served(web, fake_openai) -> None:
    data = png_bytes()
    res = await web.call("POST", "/api/uploads", files={"file": ("photo.png", data, "image/png")})
    assert res.status_code == 201, res.text
    ref = res.json()
    assert ref["uri"].startswith("media:") and (ref["width"], ref["height"]) == (40, 30)
    await send(web, "what is this?", attachments=[ref["uri"]])
    stored = await wait_stored(web, 2)
    cid = (await web.call("GET", "/api/conversations")).json()["active_id"]
    history = (await web.call("GET", f"/api/conversations/{cid}/messages")).json()["messages"]
    assert history[0]["images"] == [{"url": ref["url"], "width": 40, "height": 30}]
    image = await web.call("GET", ref["url"])
    assert image.content == data and image.headers["content-type"] == "image/png"
    content = fake_openai.requests[-1].json["messages"][-1]["content"]
    assert any(part.get("type") == "image_url" for part in content)
    assert stored[0].text == "what is this?"
    # an upload of another browser cannot be attached
    res = await web.call(
        "POST", "/api/messages", client="c" * 32, json={"text": "x", "attachments": [ref["uri"]]}
    )
    assert res.status_code == 400 and "attach" in res.json()["error"]


async def test_video_upload_is_attached_sampled_and_served(web, fake_openai) -> None:
    pytest.importorskip("av")
    from relaybot.core.testing.video import make_video

    data = make_video(seconds=2)
    res = await web.call("POST", "/api/uploads", files={"file": ("clip.mp4", data, "video/mp4")})
    assert res.status_code == 201, res.text
    ref = res.json()
    assert (ref["kind"], ref["mime_type"], ref["duration"]) == ("video", "video/mp4", 2.0)
    await send(web, "what happens?", attachments=[ref["uri"]])
    await wait_stored(web, 2)
    content = fake_openai.requests[-1].json["messages"][-1]["content"]
    assert sum(part.get("type") == "image_url" for part in content) == 8
    cid = (await web.call("GET", "/api/conversations")).json()["active_id"]
    history = (await web.call("GET", f"/api/conversations/{cid}/messages")).json()["messages"]
    assert history[0]["images"] == [
        {"url": ref["url"], "width": 160, "height": 120, "kind": "video", "duration": 2.0}
    ]
    served = await web.call("GET", ref["url"])
    assert served.content == data and served.headers["content-type"] == "video/mp4"


async def test_bad_video_upload_is_refused_with_the_reason(web) -> None:
    pytest.importorskip("av")
    res = await web.call(
        "POST", "/api/uploads", files={"file": ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" * 50, "video/mp4")}
    )
    assert res.status_code == 415 and "not a video I can read" in res.json()["error"]


async def test_script_tags_are_stored_verbatim_and_served_as_json(web) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await send(web, evil)
    stored = await wait_stored(web, 2)
    assert stored[0].text == evil
    cid = (await web.call("GET", "/api/conversations")).json()["active_id"]
    res = await web.call("GET", f"/api/conversations/{cid}/messages")
    # JSON (never HTML), nosniff, and a CSP that forbids inline scripts even if text slipped through
    assert res.headers["content-type"] == "application/json"
    assert res.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in res.headers["content-security-policy"]
    assert res.json()["messages"][0]["text"] == evil


async def test_static_files_and_no_traversal(web) -> None:
    page = await web.http.get(web.url + "/")
    assert page.status_code == 200 and "<title>relaybot</title>" in page.text
    assert (await web.http.get(web.url + "/static/app.js")).status_code == 200
    assert (await web.http.get(web.url + "/sw.js")).headers["content-type"].startswith("text/javascript")
    for path in [
        "/static/../api.py",
        "/static/%2e%2e/api.py",
        "/static/..%2fconfig.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static//etc/passwd",
        "/media/..%2f..%2fetc%2fpasswd",
        "/media/" + "0" * 64,
    ]:
        res = await web.http.get(web.url + path)
        assert res.status_code == 404, path
        assert "import" not in res.text and "root:" not in res.text


async def test_token_is_required_on_every_api_and_stream_request(make_web) -> None:
    bot = await make_web(web={"token": "s3cret-token", "host": "127.0.0.1"})
    client = {"X-Relaybot-Client": bot.client}
    for method, path in [
        ("GET", "/api/conversations"),
        ("POST", "/api/messages"),
        ("GET", "/api/events"),
        ("POST", "/api/uploads"),
        ("POST", "/api/stop"),
        ("GET", "/media/" + "a" * 64),
    ]:
        res = await bot.http.request(method, bot.url + path, headers=client)
        assert res.status_code == 401, path
        res = await bot.http.request(
            method, bot.url + path, headers={**client, "Authorization": "Bearer nope"}
        )
        assert res.status_code == 401, path
        assert "s3cret" not in res.text
    assert (await bot.call("GET", "/api/conversations")).status_code == 200
    ok = await bot.http.get(bot.url + f"/api/conversations?client={bot.client}&token=s3cret-token")
    assert ok.status_code == 200
    # the page itself and its info are public: they hold no conversation data
    assert (await bot.http.get(bot.url + "/api/info")).json()["token_required"] is True


def test_exposed_host_needs_a_token() -> None:
    with pytest.raises(ValidationError, match="token is required"):
        WebConfig(host="0.0.0.0")
    with pytest.raises(ValidationError, match="token is required"):
        WebConfig(host="192.168.1.10", token="")
    assert WebConfig(host="0.0.0.0", token="abc").token is not None
    assert WebConfig(host="::1").token is None and WebConfig(host="localhost").token is None


def test_exposed_host_without_token_is_a_config_error() -> None:
    from relaybot.core.cli.config import parse_config
    from relaybot.core.runtime.app import Relaybot

    config = parse_config(
        {
            "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}},
            "connectors": {"web": {"host": "0.0.0.0"}},
        },
        "relaybot.toml",
    )
    app = Relaybot(config)
    with pytest.raises(ConfigError) as info:
        app.build_connector("web")
    message = str(info.value)
    assert "relaybot.toml" in message and "connectors.web" in message and "token is required" in message


async def test_a_vanished_conversation_is_a_clear_404_not_a_500(web) -> None:
    """E.g. deleted in another tab: sending to it answers with a JSON error the page can show."""
    created = await web.call("POST", "/api/conversations", json={"title": "gone soon"})
    conv_id = created.json()["id"]
    assert (await web.call("DELETE", f"/api/conversations/{conv_id}")).status_code == 200
    response = await web.call("POST", "/api/messages", json={"text": "hi", "conversation_id": conv_id})
    assert response.status_code == 404
    assert response.json()["error"]


async def test_estimate_before_sending_and_cost_after_the_reply(web, fake_openai, events_of) -> None:
    empty = (await web.call("POST", "/api/estimate", json={"text": ""})).json()
    typed = (await web.call("POST", "/api/estimate", json={"text": "word " * 200})).json()
    assert typed["context_tokens"] >= empty["context_tokens"] + 200
    assert typed["model"] == "gpt-4o-mini" and typed["priced"] is True and typed["prices_as_of"]
    # shipped gpt-4o-mini price: $0.15 / M input, $0.60 / M output
    assert typed["input_usd"] == pytest.approx(typed["context_tokens"] * 0.15 / 1e6)
    assert typed["max_usd"] == pytest.approx(
        typed["input_usd"] + typed["max_output_tokens"] * 0.60 / 1e6
    )
    fake_openai.add_reply("A short answer.", usage=(1200, 300))
    log = await events_of(web)
    sent = await send(web, "hi")
    events = await log.wait_for(lambda ev: any(e.event == "cost" for e in ev))
    cost = json.loads(log.named("cost")[-1].data)
    done = json.loads(log.named("done")[-1].data)
    assert cost["message_id"] == done["message_id"] and cost["conversation_id"] == sent["conversation_id"]
    assert (cost["input_tokens"], cost["output_tokens"], cost["estimated"]) == (1200, 300, False)
    assert cost["cost_usd"] == pytest.approx((1200 * 0.15 + 300 * 0.60) / 1e6)
    assert [e.event for e in events].index("done") < [e.event for e in events].index("cost")
    # the conversation now holds the exchange: its estimate grew
    body = {"conversation_id": sent["conversation_id"]}
    after = (await web.call("POST", "/api/estimate", json=body)).json()
    assert after["context_tokens"] > empty["context_tokens"]


async def test_estimate_rejects_bad_input_and_other_peoples_conversations(web) -> None:
    assert (await web.call("POST", "/api/estimate", json={"text": 5})).status_code == 400
    sent = await send(web, "mine")
    body = {"conversation_id": sent["conversation_id"]}
    other = await web.call("POST", "/api/estimate", json=body, client="x" * 32)
    assert other.status_code == 404
