"""No cross-site use of the web chat (issue 11.1): DNS rebinding, foreign pages, forged bodies.

The probe: with no token (the default on loopback) any page the user visits could POST
``text/plain`` to ``/api/messages?client=…`` with a foreign ``Origin`` and ``Host`` and have the
bot answer on the owner's API key. Each request below is what such a page's browser sends.
"""

from __future__ import annotations

import json

import pytest

from .test_api import send, wait_stored

PROBE = {"text": "spend the owner's tokens"}


async def test_foreign_host_name_is_refused_dns_rebinding(web, fake_openai) -> None:
    """A rebinding page's requests name its own domain in ``Host``: nothing is answered."""
    await send(web, "mine")
    await wait_stored(web, 2)
    requests_before = len(fake_openai.requests)
    for method, path, kw in [
        ("GET", "/api/conversations", {}),
        ("GET", "/api/events", {}),
        ("POST", "/api/messages", {"json": PROBE}),
        ("GET", "/", {}),
    ]:
        res = await web.call(method, path, headers={"Host": "evil.example:8080"}, **kw)
        assert res.status_code == 403, path
        assert "allowed_hosts" in res.json()["error"]
        assert "mine" not in res.text
    assert len(fake_openai.requests) == requests_before
    # loopback names and IP literals are answered
    for host in ("localhost:1234", "127.0.0.1", "[::1]:8080", "app.localhost"):
        res = await web.call("GET", "/api/conversations", headers={"Host": host})
        assert res.status_code == 200, host


async def test_allowed_hosts_adds_a_reverse_proxys_name(make_web) -> None:
    bot = await make_web(web={"allowed_hosts": ["chat.example.org"]})
    ok = await bot.call(
        "POST",
        "/api/conversations",
        json={"title": "via proxy"},
        headers={"Host": "chat.example.org", "Origin": "https://chat.example.org"},
    )
    assert ok.status_code == 201
    refused = await bot.call("GET", "/api/conversations", headers={"Host": "other.example.org"})
    assert refused.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "http://127.0.0.1:1"},  # another port of this machine is another site
        {"Origin": "null"},  # sandboxed frame or file:// page
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_cross_site_state_changing_requests_are_refused(web, fake_openai, headers) -> None:
    res = await web.call("POST", "/api/messages", json=PROBE, headers=headers)
    assert res.status_code == 403
    assert "site" in res.json()["error"]
    for path in ("/api/conversations", "/api/stop", "/api/regenerate"):
        assert (await web.call("POST", path, json={}, headers=headers)).status_code == 403
    assert await web.stored() == []
    assert fake_openai.requests == []


async def test_the_probes_text_plain_post_with_query_client_is_refused(web, fake_openai) -> None:
    """Exactly the probe's request, minus the foreign Origin (old browsers, or a form)."""
    res = await web.http.post(
        web.url + f"/api/messages?client={web.client}",
        content=json.dumps(PROBE),
        headers={"Content-Type": "text/plain"},
    )
    assert res.status_code == 400 and "X-Relaybot-Client" in res.json()["error"]
    # with the header but a simple-request content type: refused too
    res = await web.call(
        "POST", "/api/messages", content=json.dumps(PROBE), headers={"Content-Type": "text/plain"}
    )
    assert res.status_code == 415 and "application/json" in res.json()["error"]
    assert await web.stored() == []
    assert fake_openai.requests == []


async def test_same_origin_requests_still_work(web, events_of) -> None:
    """What the page sends (Origin = itself, Sec-Fetch-Site: same-origin) is accepted."""
    origin = web.url
    log = await events_of(web)
    res = await web.call(
        "POST",
        "/api/messages",
        json={"text": "from the page"},
        headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"},
    )
    assert res.status_code == 202
    await log.wait_for(lambda ev: any(e.event == "done" for e in ev))
    assert [m.text for m in await web.stored()] == ["from the page", "You said: from the page"]
    # reads keep ?client= (EventSource and downloads cannot set headers)
    listing = await web.http.get(web.url + f"/api/conversations?client={web.client}")
    assert listing.status_code == 200 and len(listing.json()["conversations"]) == 1
