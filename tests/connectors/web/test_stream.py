"""The SSE stream: resume without duplicates, closed tabs, two tabs, switching and stopping."""

from __future__ import annotations

import asyncio
import json

from relaybot.core.contracts.models import ReplyStatus

LONG = " ".join(f"word{i}" for i in range(120)) + "."


async def send(bot, text: str, **extra) -> dict:
    res = await bot.call("POST", "/api/messages", json={"text": text, **extra})
    assert res.status_code == 202, res.text
    return res.json()


async def wait_status(bot, status: ReplyStatus, client: str | None = None) -> list:
    async with asyncio.timeout(20):
        while True:
            stored = await bot.stored(client)
            if stored and stored[-1].role.value == "assistant" and stored[-1].status == status:
                return stored
            await asyncio.sleep(0.02)


def deltas(events: list) -> int:
    return sum(1 for e in events if e.event == "delta")


async def test_reconnect_with_last_event_id_resumes_without_duplicates(
    web, fake_openai, events_of, rebuild_texts
) -> None:
    fake_openai.add_reply(LONG, tokens_per_second=150, chunk_size_chars=6)
    first = await events_of(web)
    await send(web, "tell me a story")
    await first.wait_for(lambda ev: deltas(ev) >= 3)
    await first.close()  # the tab loses its connection mid-reply
    seen = list(first.events)
    await asyncio.sleep(0.2)  # more events happen while it is away
    resumed = await events_of(web, last_event_id=seen[-1].id)
    await resumed.wait_for(lambda ev: any(e.event == "done" for e in ev))
    assert not resumed.named("reset")
    ids = [e.id for e in seen + resumed.events]
    assert len(ids) == len(set(ids))  # nothing twice
    assert list(rebuild_texts(seen + resumed.events).values()) == [LONG]


async def test_unknown_or_stale_event_id_gets_a_reset(web, fake_openai, events_of) -> None:
    stale = await events_of(web, last_event_id="deadbeef-12")  # an id of an earlier server run
    await stale.wait_for(lambda ev: bool(ev))
    assert stale.events[0].event == "reset"


async def test_closed_tab_mid_reply_still_completes_and_is_stored(web, fake_openai, events_of) -> None:
    fake_openai.add_reply(LONG, tokens_per_second=150, chunk_size_chars=6)
    log = await events_of(web)
    await send(web, "go on")
    await log.wait_for(lambda ev: deltas(ev) >= 2)
    await log.close()
    stored = await wait_status(web, ReplyStatus.COMPLETE)
    assert stored[-1].text == LONG
    assert web.connector.hub.subscriber_count(web.client) == 0


async def test_two_tabs_of_one_browser_both_stream(web, fake_openai, events_of, rebuild_texts) -> None:
    fake_openai.add_reply("Shared answer for both tabs.", chunk_size_chars=4)
    tab1 = await events_of(web)
    tab2 = await events_of(web)
    await send(web, "hello from tab 1")
    for tab in (tab1, tab2):
        await tab.wait_for(lambda ev: any(e.event == "done" for e in ev))
        assert list(rebuild_texts(tab.events).values()) == ["Shared answer for both tabs."]
        user = json.loads(tab.named("user")[0].data)
        assert user["text"] == "hello from tab 1"  # the other tab shows the message too


async def test_a_tab_opened_mid_reply_gets_the_text_so_far(
    web, fake_openai, events_of, rebuild_texts
) -> None:
    fake_openai.add_reply(LONG, tokens_per_second=150, chunk_size_chars=6)
    first = await events_of(web)
    await send(web, "start")
    await first.wait_for(lambda ev: deltas(ev) >= 3)
    late = await events_of(web)  # fresh tab: no Last-Event-ID
    await late.wait_for(lambda ev: any(e.event == "done" for e in ev))
    assert late.events[0].event == "replace"  # a snapshot of the reply so far, then deltas
    assert list(rebuild_texts(late.events).values()) == [LONG]


async def test_switching_mid_reply_interrupts_it_and_never_mixes(
    web, fake_openai, events_of, rebuild_texts
) -> None:
    fake_openai.add_reply(LONG, tokens_per_second=60, chunk_size_chars=6)
    fake_openai.add_reply("Answer in B.")
    log = await events_of(web)
    a = (await send(web, "question in A"))["conversation_id"]
    await log.wait_for(lambda ev: deltas(ev) >= 2)
    b = (await web.call("POST", "/api/conversations", json={"title": "B"})).json()["id"]
    await send(web, "question in B", conversation_id=b)
    await log.wait_for(
        lambda ev: any(e.event == "done" and json.loads(e.data)["conversation_id"] == b for e in ev)
    )
    by_conv: dict[int, list] = {a: [], b: []}
    for e in log.events:
        if e.event != "reset":
            by_conv[json.loads(e.data)["conversation_id"]].append(e)
    interrupted = [json.loads(e.data) for e in by_conv[a] if e.event == "interrupted"]
    assert len(interrupted) == 1
    text_a = "".join(rebuild_texts(by_conv[a]).values())
    assert text_a and LONG.startswith(text_a) and text_a != LONG
    assert list(rebuild_texts(by_conv[b]).values()) == ["Answer in B."]
    assert "word" not in json.dumps([json.loads(e.data) for e in by_conv[b]])
    # storage agrees: A's partial reply is kept, marked interrupted
    history = (await web.call("GET", f"/api/conversations/{a}/messages")).json()["messages"]
    assert history[-1]["status"] == "interrupted" and history[-1]["text"].rstrip() == text_a


async def test_stop_and_regenerate(web, fake_openai, events_of, rebuild_texts) -> None:
    fake_openai.add_reply(LONG, tokens_per_second=60, chunk_size_chars=6)
    fake_openai.add_reply("A better answer.")
    log = await events_of(web)
    await send(web, "question")
    await log.wait_for(lambda ev: deltas(ev) >= 2)
    assert (await web.call("POST", "/api/stop")).json() == {"stopped": True}
    await log.wait_for(lambda ev: any(e.event == "interrupted" for e in ev))
    assert (await web.call("POST", "/api/stop")).json() == {"stopped": False}
    res = await web.call("POST", "/api/regenerate", json={})
    assert res.status_code == 202
    await log.wait_for(lambda ev: any(e.event == "done" for e in ev))
    assert "A better answer." in rebuild_texts(log.events).values()
    stored = await wait_status(web, ReplyStatus.COMPLETE)
    assert [m.text for m in stored] == ["question", "A better answer."]


async def test_a_failed_reply_sends_an_error_event(web, fake_openai, events_of) -> None:
    fake_openai.add_error(401, "bad key")
    log = await events_of(web)
    await send(web, "hello?")
    await log.wait_for(lambda ev: any(e.event == "error" for e in ev))
    error = json.loads(log.named("error")[0].data)
    assert error["conversation_id"] is not None and error["reply_id"] is not None
    assert error["error"]  # the user-facing explanation, never a secret
    assert "sk-test-key" not in json.dumps([e.data for e in log.events])
    stored = await wait_status(web, ReplyStatus.FAILED)
    assert stored[-1].id == error["reply_id"]


def test_replay_buffer_is_bounded_and_old_ids_get_a_reset() -> None:
    from relaybot.connectors.web.hub import REPLAY_EVENTS, EventHub

    hub = EventHub()
    for i in range(REPLAY_EVENTS + 10):
        hub.publish("client-aaaaaaaaaaaaaaaa", "delta", {"text": str(i)})
    channel = hub.channel("client-aaaaaaaaaaaaaaaa")
    assert len(channel.buffer) == REPLAY_EVENTS  # memory stays bounded without any tab open
    assert channel.replay_after(5) is None  # too old: the page must reload history
    tail = channel.replay_after(REPLAY_EVENTS + 5)
    assert tail is not None and [e.data["text"] for e in tail] == [
        str(i) for i in range(REPLAY_EVENTS + 5, REPLAY_EVENTS + 10)
    ]
    assert hub.parse_last_id(f"{hub.epoch}-7") == 7
    assert hub.parse_last_id("0000-7") == -1 and hub.parse_last_id("garbage") == -1


async def test_a_command_answer_is_a_notice_not_a_reply(web, fake_openai, events_of, rebuild_texts) -> None:
    log = await events_of(web)
    await send(web, "hi")
    await log.wait_for(lambda ev: len(ev) and ev[-1].event == "done")
    reply_id = json.loads(log.named("done")[0].data)["reply_id"]
    assert reply_id is not None
    await send(web, "/help")
    await log.wait_for(lambda ev: len(log.named("done")) == 2)
    notice = json.loads(log.named("done")[1].data)
    assert notice["reply_id"] is None  # it must not take over the previous answer's bubble
    assert "/new" in rebuild_texts(log.events)[notice["message_id"]]


async def test_shutdown_tells_open_tabs_before_their_stream_closes(
    web, fake_openai, events_of, rebuild_texts
) -> None:
    fake_openai.add_reply(LONG, tokens_per_second=40, chunk_size_chars=6)
    tab = await events_of(web)
    await send(web, "a long one please")
    await tab.wait_for(lambda ev: deltas(ev) >= 2)
    await asyncio.wait_for(web.app.stop(), 10)
    # the tab saw the reply end as interrupted before its event stream was closed
    await tab.wait_for(lambda ev: any(e.event == "interrupted" for e in ev))
    assert tab._task.done()  # and then the stream ended (the server is gone)
    (text,) = rebuild_texts(tab.events).values()
    assert 0 < len(text) < len(LONG) and LONG.startswith(text.rstrip())
    assert len(fake_openai.requests) == 1


async def test_imagine_shows_the_picture_in_place_of_its_notice(web, fake_openai, events_of) -> None:
    fake_openai.add_image(delay=0.3)
    log = await events_of(web)
    await send(web, "/imagine a cat on a mat")
    await log.wait_for(lambda ev: any(e.event == "remove" for e in ev))
    notice = json.loads(log.named("delta")[0].data)
    assert notice["text"].startswith("🎨 Generating") and notice["reply_id"] is None  # a command's notice
    [image] = [json.loads(e.data) for e in log.named("image")]
    [removed] = [json.loads(e.data) for e in log.named("remove")]
    assert removed["message_id"] == notice["message_id"]  # the notice leaves, the picture stays
    assert [e.event for e in log.events if e.event in ("image", "remove")] == ["image", "remove"]
    stored = await web.stored()
    assert image["caption"] == "a cat on a mat" and image["reply_id"] == stored[-1].id
    assert image["conversation_id"] == stored[-1].conversation_id


async def test_a_failed_reply_ends_with_its_error_not_done_and_keeps_its_reason(
    web, fake_openai, events_of
) -> None:
    fake_openai.add_error(400, "this request is not acceptable")
    log = await events_of(web)
    await send(web, "please fail")
    await log.wait_for(lambda ev: any(e.event == "error" for e in ev))
    ends = [e.event for e in log.events if e.event in ("done", "interrupted", "error")]
    assert ends == ["error"]  # no "done … complete" before the error
    error = json.loads(log.named("error")[0].data)
    assert error["error"].startswith("⚠️") and error["status"] == "failed"
    # after a reload the history shows the reason, not an empty bubble
    conversation = error["conversation_id"]
    history = (await web.call("GET", f"/api/conversations/{conversation}/messages")).json()["messages"]
    assert history[-1]["status"] == "failed" and history[-1]["text"] == error["error"]
