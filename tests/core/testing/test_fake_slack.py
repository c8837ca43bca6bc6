"""The fake Slack Web API, driven by slack_sdk's AsyncWebClient for real over loopback HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from relaybot.core.testing.fake_slack import FakeSlackServer, RateLimits
from relaybot.testing import FakeSlackServer as ExportedFakeSlackServer

ALICE = "U0ALICE"


class ManualClock:
    """A clock tests advance by hand, so rate-limit and lifetime results never depend on speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def slack(clock: ManualClock) -> AsyncIterator[FakeSlackServer]:
    async with FakeSlackServer(clock=clock) as server:
        server.add_user(ALICE, "alice")
        yield server


@pytest.fixture
async def client(slack: FakeSlackServer) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)


async def error_of(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SlackApiError) as info:
        await call
    assert info.value.response["ok"] is False
    return str(info.value.response["error"])


def mention_ts(slack: FakeSlackServer, text: str = "hi") -> str:
    return slack.mention(slack.general, ALICE, text).event["ts"]


def test_relaybot_testing_exports_the_fake() -> None:
    assert ExportedFakeSlackServer is FakeSlackServer


# -- auth and errors -------------------------------------------------------------------------


async def test_auth_test_names_the_bot_and_bad_tokens_get_slacks_errors(slack: FakeSlackServer) -> None:
    good = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    me = await good.auth_test()
    assert (me["user_id"], me["bot_id"], me["team_id"]) == ("U0FAKEBOT", "B0FAKEBOT", "T0FAKETEAM")
    assert await error_of(AsyncWebClient(base_url=slack.api_url).auth_test()) == "not_authed"
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url)
    assert await error_of(wrong.auth_test()) == "invalid_auth"
    app_level = AsyncWebClient(token=slack.app_token, base_url=slack.api_url)
    assert (
        await error_of(app_level.chat_postMessage(channel=slack.general, text="x"))
        == "not_allowed_token_type"
    )
    assert await error_of(good.apps_connections_open(app_token=slack.bot_token)) == "not_allowed_token_type"
    assert await error_of(good.api_call("chat.nonsense")) == "unknown_method"
    slack.revoke(slack.bot_token)
    assert await error_of(good.auth_test()) == "token_revoked"
    assert [r.error for r in slack.calls("auth.test")] == [
        None,
        "not_authed",
        "invalid_auth",
        "token_revoked",
    ]


# slack_sdk warns about a missing `text` even with markdown_text, which excludes `text`
@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
async def test_channel_errors(slack: FakeSlackServer, client: AsyncWebClient, clock: ManualClock) -> None:
    # failed calls use up rate-limit budget too (as on Slack): space the posts to #general
    assert await error_of(client.chat_postMessage(channel="C0NOPE", text="x")) == "channel_not_found"
    outside = slack.add_channel("random", is_member=False).id
    assert await error_of(client.chat_postMessage(channel=outside, text="x")) == "not_in_channel"
    secret = slack.add_channel("secret", kind="group", is_member=False).id
    assert await error_of(client.chat_postMessage(channel=secret, text="x")) == "channel_not_found"
    old = slack.add_channel("old").id
    slack.archive(old)
    assert await error_of(client.chat_postMessage(channel=old, text="x")) == "is_archived"
    assert await error_of(client.chat_postMessage(channel=slack.general, text="")) == "no_text"
    clock.advance(3)
    long_markdown = client.chat_postMessage(channel=slack.general, markdown_text="a" * 12_001)
    assert await error_of(long_markdown) == "msg_too_long"
    big_block = [{"type": "markdown", "text": "b" * 12_001}]
    too_big = client.chat_postMessage(channel=slack.general, text="b", blocks=big_block)
    assert await error_of(too_big) == "invalid_blocks"
    clock.advance(3)
    both = client.chat_postMessage(channel=slack.general, text="x", markdown_text="y")
    assert await error_of(both) == "markdown_text_conflict"
    assert slack.messages(slack.general) == []  # nothing failed half-way


async def test_post_update_delete_and_what_a_reader_sees(
    slack: FakeSlackServer, client: AsyncWebClient
) -> None:
    parent = mention_ts(slack, "question")
    posted = await client.chat_postMessage(channel=slack.general, thread_ts=parent, text="draft")
    ts = posted["ts"]
    blocks = [{"type": "markdown", "text": "**Final** answer"}]
    await client.chat_update(channel=slack.general, ts=ts, text="Final answer", blocks=blocks)
    message = slack.message(slack.general, ts)
    assert message is not None and message.visible == "**Final** answer" and message.edit_count == 1
    assert [h[1:] for h in message.history] == [
        ("chat.postMessage", "draft"),
        ("chat.update", "**Final** answer"),
    ]
    assert slack.thread_text(slack.general, parent) == "**Final** answer"
    replies = await client.conversations_replies(channel=slack.general, ts=parent)
    assert [m["ts"] for m in replies["messages"]] == [parent, ts]
    assert replies["messages"][0]["user"] == ALICE and replies["messages"][1]["bot_id"] == "B0FAKEBOT"
    user_message = client.chat_update(channel=slack.general, ts=parent, text="hijack")
    assert await error_of(user_message) == "cant_update_message"
    await client.chat_delete(channel=slack.general, ts=ts)
    assert slack.replies(slack.general, parent) == []
    assert await error_of(client.chat_update(channel=slack.general, ts=ts, text="x")) == "message_not_found"


async def test_conversations_users_and_ephemeral(slack: FakeSlackServer, client: AsyncWebClient) -> None:
    info = await client.conversations_info(channel=slack.general)
    assert info["channel"]["name"] == "general" and info["channel"]["is_member"] is True
    dm = slack.dm_channel(ALICE)
    assert (await client.conversations_info(channel=dm))["channel"]["user"] == ALICE
    assert (await client.users_info(user=ALICE))["user"]["name"] == "alice"
    assert await error_of(client.users_info(user="U0NOBODY")) == "user_not_found"
    await client.chat_postEphemeral(channel=slack.general, user=ALICE, text="Sorry, not for you")
    assert [(e["user"], e["text"]) for e in slack.ephemeral_messages] == [(ALICE, "Sorry, not for you")]


async def test_assistant_thread_methods(slack: FakeSlackServer, client: AsyncWebClient) -> None:
    dm = slack.dm_channel(ALICE)
    thread = slack.start_assistant_thread(ALICE).event["assistant_thread"]["thread_ts"]
    await client.assistant_threads_setStatus(channel_id=dm, thread_ts=thread, status="is thinking…",
                                             loading_messages=["Reading", "Thinking"])  # fmt: skip
    prompts = [{"title": f"P{i}", "message": f"prompt {i}"} for i in range(4)]
    await client.assistant_threads_setSuggestedPrompts(channel_id=dm, thread_ts=thread, prompts=prompts)
    await client.assistant_threads_setTitle(channel_id=dm, thread_ts=thread, title="Trip planning")
    assert [c["method"] for c in slack.assistant_calls()] == ["setStatus", "setSuggestedPrompts", "setTitle"]
    assert slack.assistant_calls("setStatus")[0]["loading_messages"] == ["Reading", "Thinking"]
    five = [*prompts, {"title": "P5", "message": "prompt 5"}]
    too_many = client.assistant_threads_setSuggestedPrompts(channel_id=dm, thread_ts=thread, prompts=five)
    assert await error_of(too_many) == "invalid_arguments"


async def test_fail_next_scripts_one_failure(slack: FakeSlackServer, client: AsyncWebClient) -> None:
    slack.fail_next("chat.postMessage", "fatal_error")
    assert await error_of(client.chat_postMessage(channel=slack.general, text="x")) == "fatal_error"
    await client.chat_postMessage(channel=slack.general, text="x")
    assert [r.error for r in slack.calls("chat.postMessage")] == ["fatal_error", None]


# -- streaming --------------------------------------------------------------------------------


async def test_chat_stream_from_slack_sdk_shows_the_text_once(
    slack: FakeSlackServer, client: AsyncWebClient
) -> None:
    parent = mention_ts(slack)
    stream = await client.chat_stream(channel=slack.general, thread_ts=parent, recipient_user_id=ALICE,
                                      recipient_team_id=slack.workspace.team_id, buffer_size=10)  # fmt: skip
    pieces = ["Hello ", "**world**", ", this is ", "a streamed ", "reply", "."]
    for piece in pieces:
        await stream.append(markdown_text=piece)
    assert stream.ts is not None
    conflict = client.chat_update(channel=slack.general, ts=stream.ts, text="too early")
    assert await error_of(conflict) == "streaming_state_conflict"
    await stream.stop()
    assert slack.thread_text(slack.general, parent) == "".join(pieces)
    assert len(slack.replies(slack.general, parent)) == 1
    methods = [r.method for r in slack.timeline if r.method.startswith("chat.") and r.ok]
    assert methods[0] == "chat.startStream" and methods[-1] == "chat.stopStream"
    assert "chat.appendStream" in methods
    message = slack.message(slack.general, stream.ts)
    assert message is not None and message.stream is not None and message.stream.state == "stopped"
    assert "".join(message.stream.appends) == "".join(pieces)
    # once stopped, the SDK maintainers' fallback works: chat.update on the same ts
    await client.chat_update(channel=slack.general, ts=stream.ts, markdown_text="Edited")
    assert slack.thread_text(slack.general, parent) == "Edited"


async def test_start_stream_rules(slack: FakeSlackServer, client: AsyncWebClient) -> None:
    parent = mention_ts(slack)
    team = slack.workspace.team_id
    top_level = client.api_call(
        "chat.startStream",
        json={
            "channel": slack.general,
            "markdown_text": "x",
            "recipient_user_id": ALICE,
            "recipient_team_id": team,
        },
    )
    assert await error_of(top_level) == "invalid_arguments"  # a stream is always a thread reply
    no_user = client.chat_startStream(channel=slack.general, thread_ts=parent, recipient_team_id=team)
    assert await error_of(no_user) == "missing_recipient_user_id"
    no_team = client.chat_startStream(channel=slack.general, thread_ts=parent, recipient_user_id=ALICE)
    assert await error_of(no_team) == "missing_recipient_team_id"
    # in a DM the recipient is implied
    dm_parent = slack.dm(ALICE, "hi").event["ts"]
    started = await client.chat_startStream(channel=slack.dm_channel(ALICE), thread_ts=dm_parent,
                                            markdown_text="ok")  # fmt: skip
    assert slack.thread_text(slack.dm_channel(ALICE), dm_parent) == "ok"
    too_long = client.chat_appendStream(
        channel=started["channel"], ts=started["ts"], markdown_text="z" * 12_001
    )
    assert await error_of(too_long) == "msg_too_long"
    await client.chat_stopStream(channel=started["channel"], ts=started["ts"], markdown_text="!")
    after_stop = client.chat_appendStream(channel=started["channel"], ts=started["ts"], markdown_text="more")
    assert await error_of(after_stop) == "message_not_in_streaming_state"
    assert slack.thread_text(slack.dm_channel(ALICE), dm_parent) == "ok!"


async def test_stream_lifetime_and_user_stop(
    slack: FakeSlackServer, client: AsyncWebClient, clock: ManualClock
) -> None:
    dm = slack.dm_channel(ALICE)
    first = slack.dm(ALICE, "one").event["ts"]
    started = await client.chat_startStream(channel=dm, thread_ts=first, markdown_text="partial ")
    clock.advance(301)  # Slack closes streams server-side after about 5 minutes
    expired = client.chat_appendStream(channel=dm, ts=started["ts"], markdown_text="lost")
    assert await error_of(expired) == "message_not_in_streaming_state"
    await client.chat_update(channel=dm, ts=started["ts"], markdown_text="partial and the rest")
    assert slack.thread_text(dm, first) == "partial and the rest"

    second = slack.dm(ALICE, "two").event["ts"]
    other = await client.chat_startStream(channel=dm, thread_ts=second, markdown_text="a")
    slack.stop_stream_by_user(dm, other["ts"])
    stopped = client.chat_appendStream(channel=dm, ts=other["ts"], markdown_text="b")
    assert await error_of(stopped) == "stopped_by_user"
    assert slack.thread_text(dm, second) == "a"


async def test_streaming_unavailable_switch(slack: FakeSlackServer, client: AsyncWebClient) -> None:
    slack.set_streaming_available(False)
    parent = slack.dm(ALICE, "hi").event["ts"]
    start = client.chat_startStream(channel=slack.dm_channel(ALICE), thread_ts=parent, markdown_text="x")
    assert await error_of(start) == "method_not_supported"
    slack.set_streaming_available(True)
    await client.chat_startStream(channel=slack.dm_channel(ALICE), thread_ts=parent, markdown_text="x")


# -- rate limits -----------------------------------------------------------------------------


async def test_tier_limit_answers_429_with_retry_after_and_counts_calls_inside_the_window(
    slack: FakeSlackServer, clock: ManualClock
) -> None:
    session = aiohttp.ClientSession()
    try:
        url = slack.api_url + "chat.update"
        headers = {"Authorization": f"Bearer {slack.bot_token}"}
        parent = mention_ts(slack)
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        ts = (await client.chat_postMessage(channel=slack.general, thread_ts=parent, text="0"))["ts"]
        for i in range(50):  # Tier 3: 50 per minute per workspace
            clock.advance(0.5)
            await client.chat_update(channel=slack.general, ts=ts, text=str(i))
        clock.advance(0.5)
        async with session.post(
            url, headers=headers, json={"channel": slack.general, "ts": ts, "text": "x"}
        ) as r:
            assert r.status == 429
            assert await r.json() == {"ok": False, "error": "ratelimited"}
            retry_after = int(r.headers["Retry-After"])
        assert retry_after == 35  # the first of the 50 leaves the 60 s window 35 s from now
        assert slack.count_429 == 1 and slack.calls_inside_retry_after == 0
        clock.advance(retry_after - 1)
        async with session.post(
            url, headers=headers, json={"channel": slack.general, "ts": ts, "text": "y"}
        ) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "1"
        assert slack.calls_inside_retry_after == 1
        assert slack.calls("chat.update")[-1].inside_retry_after is True
        clock.advance(1)
        await client.chat_update(channel=slack.general, ts=ts, text="after the window")
        assert slack.thread_text(slack.general, parent) == "after the window"
    finally:
        await session.close()


async def test_post_message_is_limited_per_channel_not_per_workspace(
    slack: FakeSlackServer, client: AsyncWebClient, clock: ManualClock
) -> None:
    other = slack.add_channel("other").id
    for i in range(3):  # a burst of 3, then about 1 per second
        await client.chat_postMessage(channel=slack.general, text=str(i))
    assert await error_of(client.chat_postMessage(channel=slack.general, text="3")) == "ratelimited"
    await client.chat_postMessage(channel=other, text="elsewhere")  # another channel's budget
    clock.advance(1.0)
    await client.chat_postMessage(channel=slack.general, text="3")
    assert [m.text for m in slack.messages(slack.general)] == ["0", "1", "2", "3"]


async def test_a_scripted_429_opens_a_real_retry_after_window(
    slack: FakeSlackServer, client: AsyncWebClient, clock: ManualClock
) -> None:
    slack.fail_next("users.info", "ratelimited", retry_after=7)
    assert await error_of(client.users_info(user=ALICE)) == "ratelimited"
    assert slack.calls("users.info")[-1].status == 429
    clock.advance(6)
    assert await error_of(client.users_info(user=ALICE)) == "ratelimited"  # still inside the 7 s
    assert slack.calls_inside_retry_after == 1
    clock.advance(1)
    assert (await client.users_info(user=ALICE))["user"]["id"] == ALICE


async def test_limits_can_be_disabled() -> None:
    async with FakeSlackServer(limits=RateLimits.disabled()) as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
        for i in range(30):
            await client.chat_postMessage(channel=slack.general, text=str(i))
        assert slack.count_429 == 0 and len(slack.messages(slack.general)) == 30


async def test_sdk_retry_handler_waits_out_retry_after_and_never_calls_inside_it() -> None:
    # a real clock and a 1-second window so the SDK's real sleep(Retry-After) is short
    limits = RateLimits(tiers={3: 2}, method_tiers={"chat.update": 3}, window=1.0)
    async with FakeSlackServer(limits=limits) as slack:
        retry = AsyncRateLimitErrorRetryHandler(max_retry_count=5)
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url, retry_handlers=[retry])
        ts = (await client.chat_postMessage(channel=slack.general, text="0"))["ts"]
        for i in range(1, 6):
            await client.chat_update(channel=slack.general, ts=ts, text=str(i))
        assert slack.messages(slack.general)[0].text == "5"
        assert slack.count_429 >= 1  # the SDK met the limit …
        assert slack.calls_inside_retry_after == 0  # … and honoured every Retry-After


# -- files -----------------------------------------------------------------------------------


async def test_files_v2_upload_into_a_thread_and_authenticated_download(
    slack: FakeSlackServer, client: AsyncWebClient
) -> None:
    parent = mention_ts(slack, "draw a cat")
    result = await client.files_upload_v2(
        channel=slack.general, thread_ts=parent, content=b"\x89PNG fake", filename="cat.png",
        title="A cat", initial_comment="Here it is",
    )
    file_id = result["file"]["id"]
    [share] = slack.replies(slack.general, parent)
    assert share.text == "Here it is" and share.files[0]["id"] == file_id
    assert [f.title for f in slack.uploaded_files()] == ["A cat"]
    assert [r.method for r in slack.timeline[-2:]] == [
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]
    url = result["file"]["url_private"]
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": f"Bearer {slack.bot_token}"}) as r:
            assert r.status == 200 and await r.read() == b"\x89PNG fake"
            assert r.content_type == "image/png"
        async with session.get(url) as r:  # no token: Slack's sign-in page, status 200
            assert r.status == 200 and r.content_type == "text/html"
    assert [status for _, status in slack.files.downloads] == [200, 302]


async def test_complete_upload_errors(slack: FakeSlackServer, client: AsyncWebClient) -> None:
    pending = await client.files_getUploadURLExternal(filename="a.png", length=3)
    never_uploaded = client.files_completeUploadExternal(files=[{"id": pending["file_id"]}],
                                                          channel_id=slack.general)  # fmt: skip
    assert await error_of(never_uploaded) == "file_not_found"
    assert (
        await error_of(client.files_getUploadURLExternal(filename="a.png", length=0)) == "invalid_arguments"
    )


async def test_upload_url_also_takes_a_multipart_file(slack: FakeSlackServer, client: AsyncWebClient) -> None:
    pending = await client.files_getUploadURLExternal(filename="notes.txt", length=5)
    form = aiohttp.FormData()
    form.add_field("file", b"hello", filename="notes.txt", content_type="text/plain")
    async with aiohttp.ClientSession() as session, session.post(pending["upload_url"], data=form) as r:
        assert r.status == 200 and await r.text() == "OK - 5"
    done = await client.files_completeUploadExternal(files=[{"id": pending["file_id"], "title": "Notes"}])
    assert done["files"][0]["mimetype"] == "text/plain"
    assert slack.store.files[pending["file_id"]].data == b"hello"
