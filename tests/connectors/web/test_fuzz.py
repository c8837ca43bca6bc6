"""Random requests at every web route (issue 11.2): no 5xx, no lost message, a usable stream.

Hypothesis generates the requests; each runs against the real bot (Starlette, SQLite, the fake
OpenAI server) in the test's event loop. The number of examples is bounded so that CI runs it
in well under a minute.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaybot import clean_text

from .test_api import png_bytes

EXAMPLES = 200

ROUTES = [
    ("GET", "/"),
    ("GET", "/sw.js"),
    ("GET", "/manifest.webmanifest"),
    ("GET", "/static/{cid}"),
    ("GET", "/api/info"),
    ("GET", "/api/events"),
    ("GET", "/api/conversations"),
    ("POST", "/api/conversations"),
    ("PATCH", "/api/conversations/{cid}"),
    ("DELETE", "/api/conversations/{cid}"),
    ("POST", "/api/conversations/{cid}/switch"),
    ("GET", "/api/conversations/{cid}/messages"),
    ("GET", "/api/conversations/{cid}/export"),
    ("POST", "/api/messages"),
    ("POST", "/api/stop"),
    ("POST", "/api/regenerate"),
    ("POST", "/api/uploads"),
    ("GET", "/media/{sha}"),
]

# text as a browser or script could send it: any code point, lone surrogates and NUL included
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
ids = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.just(99999999999999999999999),
    st.sampled_from(["", "1.5", "abc", "0x10", " 7", "१२"]),
)
json_scalar = st.one_of(st.none(), st.booleans(), ids.filter(lambda v: isinstance(v, int)), st.floats(
    allow_nan=False, allow_infinity=False), any_text)  # fmt: skip
json_value = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
# bodies shaped like the API's, with random values (reaching the deeper checks)
api_body = st.fixed_dictionaries(
    {},
    optional={
        "text": st.one_of(any_text, json_value),
        "title": st.one_of(any_text, json_value),
        "conversation_id": st.one_of(ids, json_value),
        "attachments": st.one_of(st.lists(any_text, max_size=3), json_value),
        "client_message_id": st.one_of(any_text, st.text("abcdef0123456789-", min_size=8, max_size=64)),
    },
)
# a message the API should accept (most of the time): any text, perhaps with odd extras
message_body = st.fixed_dictionaries(
    {"text": st.text(st.characters(codec=None, exclude_categories=()), min_size=1, max_size=40)},
    optional={
        "client_message_id": st.one_of(any_text, st.text("abcdef0123456789-", min_size=8, max_size=64)),
        "attachments": st.just([]),
        "conversation_id": st.none(),
    },
)
query = st.dictionaries(
    st.sampled_from(["before", "limit", "format", "client", "token", "last_event_id", "x"]),
    st.one_of(any_text, ids.map(str)),
    max_size=4,
)


@dataclass
class Fuzzed:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # JSON-able value, bytes, or None
    content_type: str | None


requests = st.builds(
    Fuzzed,
    method=st.just(""),
    # sending messages weighs more: "no lost accepted message" needs some accepted ones
    path=st.sampled_from([*range(len(ROUTES)), *[ROUTES.index(("POST", "/api/messages"))] * 6]).map(str),
    query=query,
    body=st.one_of(message_body, st.none(), api_body, message_body, json_value, st.binary(max_size=64)),
    content_type=st.sampled_from(
        ["application/json", None, "application/json; charset=utf-8", "text/plain", "multipart/form-data"]
    ),
).flatmap(lambda r: st.tuples(st.just(r), st.one_of(ids, any_text), st.text("0123456789abcdef", max_size=70)))


async def test_random_requests_never_fail_the_server(web, events_of, fake_openai) -> None:
    fake_openai.default = lambda body: "ok"  # short replies keep each example quick
    loop = asyncio.get_running_loop()
    #: (client_message_id, cleaned text, conversation id) of the messages answered 202
    accepted: list[tuple[str, str, int]] = []
    taken_in = [0]  # every 202, also those whose conversation was deleted later
    failures: list[str] = []

    async def one(fuzzed: Fuzzed, cid: Any, sha: str) -> None:
        method, template = ROUTES[int(fuzzed.path)]
        path = template.format(cid=quote(str(cid), safe="", errors="surrogatepass"), sha=sha)
        headers: dict[str, str] = {}
        content: bytes | None = None
        files = None
        if fuzzed.body is not None and method != "GET":
            if template == "/api/uploads" and isinstance(fuzzed.body, bytes):
                files = {"file": ("x.png", fuzzed.body or png_bytes(), "image/png")}
            else:
                raw = fuzzed.body
                content = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
                if fuzzed.content_type:
                    headers["Content-Type"] = fuzzed.content_type
        url = path + ("?" + urlencode(fuzzed.query, errors="surrogatepass") if fuzzed.query else "")
        if template == "/api/events":
            async with web.http.stream("GET", web.url + url, headers=web.headers()) as res:
                if res.status_code == 200:
                    await anext(res.aiter_bytes())  # the stream opens; the tab goes away
                status, body = res.status_code, b"" if res.status_code == 200 else await res.aread()
        else:
            res = await web.call(method, url, content=content, files=files, headers=headers)
            status, body = res.status_code, res.content
        if status >= 500:
            failures.append(f"{method} {url} -> {status}: {body[:200]!r}")
        if status >= 400 and path.startswith("/api/"):
            assert "error" in json.loads(body), (method, url, body)
        if template == "/api/messages" and status == 202:
            answer = json.loads(body)
            taken_in[0] += 1
            accepted.append(
                (
                    answer["client_message_id"],
                    clean_text(fuzzed.body.get("text", "")),
                    answer["conversation_id"],
                )
            )
        if method == "DELETE" and status == 200:
            # messages are stored the moment they are accepted: deleting their conversation
            # deletes them, as the user asked
            gone = json.loads(body)["deleted"]
            accepted[:] = [a for a in accepted if a[2] != gone]

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests)
    def check(case: tuple[Fuzzed, Any, str]) -> None:
        asyncio.run_coroutine_threadsafe(one(*case), loop).result(timeout=60)

    # Hypothesis drives a synchronous function: run it in a thread while the bot serves here
    await asyncio.to_thread(check)
    assert failures == []

    # no accepted message is lost: each one is stored, under its id, with its cleaned text
    chat = web.connector.chat_of(web.client)
    async with asyncio.timeout(30):
        while True:
            found = [await web.app.store.find_by_platform_id(chat, f"u-{cmid}") for cmid, _, _ in accepted]
            if all(m is not None for m in found):
                break
            await asyncio.sleep(0.05)
    assert [m.text for m in found] == [text for _, text, _ in accepted]
    assert taken_in[0] >= 3  # the generator reached the message path, not only the refusals

    # and the event stream still works end to end
    log = await events_of(web)
    res = await web.call("POST", "/api/messages", json={"text": "still there?"})
    assert res.status_code == 202
    # (an answer to a fuzzed message may still end first: wait for this one's text too)
    def answered(ev: list[Any]) -> bool:
        return any(e.event == "delta" and "ok" in e.data for e in ev) and any(e.event == "done" for e in ev)

    events = await log.wait_for(answered)
    assert [e for e in events if e.event == "done"]
