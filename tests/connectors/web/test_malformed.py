"""Malformed input to the web chat (issue 11.2): never a lost message, a broken stream or a 500.

The probe's findings, each as a request: a lone surrogate in a message was accepted (202) and
never stored, and broke the tab's event stream on every reconnect; out-of-range ids and deeply
nested JSON gave a plain-text 500 with a traceback in the log.
"""

from __future__ import annotations

import json
import logging

import pytest

from .test_api import wait_stored

HUGE = 99999999999999999999999


def raw_json(text: str) -> bytes:
    """A JSON body exactly as a browser's JSON.stringify writes a lone surrogate: escaped."""
    return b'{"text": "' + text.encode() + b'"}'


async def test_lone_surrogate_is_stored_replaced_and_the_stream_survives(web, events_of) -> None:
    log = await events_of(web)
    res = await web.call(
        "POST", "/api/messages", content=raw_json("hello \\ud83d there"),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert res.status_code == 202
    stored = await wait_stored(web, 2)
    assert [m.text for m in stored] == ["hello \ufffd there", "You said: hello \ufffd there"]
    events = await log.wait_for(lambda ev: any(e.event == "done" for e in ev))
    assert json.loads(next(e for e in events if e.event == "user").data)["text"] == "hello \ufffd there"
    # a tab reconnecting (from the start, and from the last id) gets a working stream
    again = await events_of(web, last_event_id=events[0].id)
    await again.wait_for(lambda ev: any(e.event == "done" for e in ev))
    fresh = await events_of(web)
    res = await web.call("POST", "/api/messages", json={"text": "next"})
    assert res.status_code == 202
    await fresh.wait_for(lambda ev: sum(e.event == "done" for e in ev) >= 1)
    assert [m.text for m in await wait_stored(web, 4)][2:] == ["next", "You said: next"]


async def test_nul_in_text_and_titles_is_removed(web) -> None:
    created = await web.call(
        "POST", "/api/conversations", content=json.dumps({"title": "a\x00b \ud83d"}),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert created.status_code == 201 and created.json()["title"] == "ab \ufffd"
    res = await web.call("POST", "/api/messages", json={"text": "x\x00y"})
    assert res.status_code == 202
    assert [m.text for m in await wait_stored(web, 2)] == ["xy", "You said: xy"]


async def test_out_of_range_ids_are_json_404s(web, caplog: pytest.LogCaptureFixture) -> None:
    res = await web.call("POST", "/api/messages", json={"text": "hi", "conversation_id": HUGE})
    assert res.status_code == 404 and res.json()["error"] == "no such conversation"
    res = await web.call("POST", "/api/regenerate", json={"conversation_id": -HUGE})
    assert res.status_code == 404
    await web.call("POST", "/api/messages", json={"text": "hi"})
    await wait_stored(web, 2)
    cid = (await web.call("GET", "/api/conversations")).json()["active_id"]
    res = await web.call("GET", f"/api/conversations/{cid}/messages?before={HUGE}")
    assert res.status_code == 404 and "no such message" in res.json()["error"]
    for method, path in [
        ("GET", f"/api/conversations/{HUGE}/messages"),
        ("GET", f"/api/conversations/{HUGE}/export"),
        ("POST", f"/api/conversations/{HUGE}/switch"),
        ("DELETE", f"/api/conversations/{HUGE}"),
        ("PATCH", f"/api/conversations/{HUGE}"),
    ]:
        res = await web.call(method, path, json={"title": "x"} if method == "PATCH" else None)
        assert res.status_code == 404, path
        assert res.json()["error"] == "no such conversation"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}")])
async def test_deeply_nested_json_is_a_json_400(web, opener: str, closer: str) -> None:
    body = (opener * 100_000 + "1" + closer * 100_000).encode()
    for path in ("/api/messages", "/api/conversations", "/api/regenerate"):
        res = await web.call("POST", path, content=body, headers={"Content-Type": "application/json"})
        assert res.status_code == 400, path
        assert res.headers["content-type"].startswith("application/json")
        assert "nested too deeply" in res.json()["error"]
