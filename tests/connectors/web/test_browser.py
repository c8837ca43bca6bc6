"""The web chat in a real browser: Debian's Chromium driven by Playwright (headless).

Needs ``apt-get install chromium`` and ``pip install playwright`` (never ``playwright install``:
we use the system browser via ``executable_path``). Skipped when either is missing, failed
instead under ``RELAYBOT_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relaybot.core.contracts.models import ReplyStatus
from relaybot.testing import require_service

try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover
    async_fixture = pytest.fixture

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LONG = " ".join(f"word{i}" for i in range(150)) + "."


def chromium_path() -> str:
    path = os.environ.get("RELAYBOT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        require_service("chromium", f"{path} not found (apt-get install chromium)")
    return path


@async_fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        require_service("playwright", f"{exc} (pip install playwright)")
    executable = chromium_path()
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


class Page:
    """A browser tab on the web chat, failing the test on any JavaScript error."""

    def __init__(self, page: Any, url: str) -> None:
        self.page = page
        self.url = url
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    async def open(self) -> Page:
        await self.page.goto(self.url + "/")
        await self.page.wait_for_selector("body[data-ready='1']")
        return self

    async def say(self, text: str) -> None:
        await self.page.fill("#input", text)
        await self.page.press("#input", "Enter")

    def assistant(self, nth: int = -1) -> Any:
        return self.page.locator(".msg.assistant[data-role='assistant']").nth(nth)

    async def wait_reply_done(self, nth: int = -1) -> str:
        msg = self.assistant(nth)
        await msg.and_(self.page.locator("[data-status='complete'], [data-status='interrupted']")).wait_for()
        # the typewriter may still be revealing the end
        await msg.and_(self.page.locator("[data-typing='0']")).wait_for()
        return await msg.locator(".text").inner_text()

    async def client(self) -> str:
        """The page's client id (its ChatKey on the server)."""
        return await self.page.evaluate("localStorage.getItem('relaybot.client')")

    async def texts(self) -> list[str]:
        return await self.page.locator("#list .msg .text").all_inner_texts()


@async_fixture
async def tab(browser: Any, web: Any) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = Page(await context.new_page(), web.url)
    try:
        yield page
    finally:
        await context.close()
    assert page.errors == [], f"JavaScript errors on the page: {page.errors}"


async def test_message_streams_with_typewriter_and_markdown(tab: Page, web, fake_openai) -> None:
    fake_openai.add_reply("Here is **bold** and `code`.\n\n" + LONG, tokens_per_second=80, chunk_size_chars=8)
    await tab.open()
    await tab.say("hello browser")
    await tab.page.locator(".msg.user .text", has_text="hello browser").wait_for()
    # the reply shows up while it streams, growing
    await tab.page.wait_for_function(
        "() => { const m = document.querySelector('.msg.assistant[data-status=streaming] .text');"
        " return m && m.textContent.length > 20; }"
    )
    partial = await tab.assistant().locator(".text").inner_text()
    text = await tab.wait_reply_done()
    assert len(partial) < len(text)
    assert text.startswith("Here is bold and code.") and text.rstrip().endswith("word149.")
    assert await tab.assistant().locator("strong").inner_text() == "bold"
    assert await tab.assistant().locator("code").inner_text() == "code"
    assert await tab.page.locator("#thinking").count() == 0
    assert await tab.page.locator(".conv-item").count() == 1


async def test_switching_conversation_mid_stream_never_mixes(tab: Page, web, fake_openai) -> None:
    fake_openai.add_reply(LONG, tokens_per_second=40, chunk_size_chars=6)
    fake_openai.add_reply("Fresh answer in B.")
    await tab.open()
    await tab.say("question A")
    await tab.page.wait_for_function(
        "() => (document.querySelector('.msg.assistant .text') || {}).textContent?.includes('word2')"
    )
    # record every text the list shows, with the conversation the sidebar marks as shown
    a_id = await tab.page.evaluate("""() => {
        window.__seen = [];
        const active = () => document.querySelector('.conv-item.active')?.dataset.id;
        const list = document.querySelector('#list');
        new MutationObserver(() => window.__seen.push([active(), list.textContent]))
            .observe(document.querySelector('#list'), {childList: true, subtree: true, characterData: true});
        return active();
    }""")
    assert a_id
    await tab.page.click("#new-chat")
    await tab.page.wait_for_function("() => document.querySelectorAll('.conv-item').length === 2")
    await tab.say("question B")
    assert "Fresh answer in B." in await tab.wait_reply_done()
    await asyncio.sleep(0.3)
    seen = [text for conv, text in await tab.page.evaluate("window.__seen") if conv != a_id]
    assert seen and not any("word" in s or "question A" in s for s in seen)
    # A keeps its partial reply, marked interrupted
    await tab.page.click(f".conv-item[data-id='{a_id}']")
    marker = tab.page.locator(".msg.assistant .interrupted-marker")
    await marker.wait_for()
    shown = await tab.assistant().locator(".text").inner_text()
    assert LONG.startswith(shown.strip()) and "word2" in shown and "Fresh answer" not in shown
    assert "Fresh answer in B." not in "".join(await tab.texts())


async def test_upload_image_and_see_it(tab: Page, web, fake_openai, tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("RGB", (3000, 1500), "blue").save(path)  # larger than 2048 px: downscaled first
    await tab.open()
    await tab.page.set_input_files("#file", str(path))
    chip = tab.page.locator("#attachments .chip img")
    await chip.wait_for()
    await tab.say("what colour is this?")
    image = tab.page.locator(".msg.user img.image")
    await image.wait_for()
    await tab.page.wait_for_function("() => document.querySelector('.msg.user img.image').naturalWidth > 0")
    size = await image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [2048, 1024]
    await tab.wait_reply_done()
    stored = [m for m in await web.stored(await tab.client()) if m.role.value == "user"]
    ref = stored[0].parts[-1].image
    assert (ref.width, ref.height) == (2048, 1024)
    await tab.page.reload()
    await tab.page.wait_for_selector("body[data-ready='1']")
    await tab.page.wait_for_function("() => document.querySelector('.msg.user img.image')?.naturalWidth > 0")


async def test_upload_a_video_with_progress_and_see_it(tab: Page, web, fake_openai, tmp_path: Path) -> None:
    pytest.importorskip("av")
    from relaybot.core.testing.video import make_video

    path = tmp_path / "clip.webm"  # WebM: Chromium builds without H.264 still play it
    path.write_bytes(make_video(seconds=2, codec="libvpx", container="webm"))
    await tab.open()
    # remember every width the progress bar takes while the file goes up
    await tab.page.evaluate("""() => {
        window.progress = [];
        const bar = document.querySelector('#upload-bar');
        new MutationObserver(() => window.progress.push(bar.style.width))
            .observe(bar, { attributes: true, attributeFilter: ['style'] });
    }""")
    await tab.page.set_input_files("#file", str(path))
    await tab.page.locator("#attachments .chip video").wait_for()
    assert "100%" in await tab.page.evaluate("() => window.progress")
    await tab.say("what happens?")
    await tab.page.locator(".msg.user video.image").wait_for()
    await tab.wait_reply_done()
    content = fake_openai.requests[-1].json["messages"][-1]["content"]
    assert sum(part.get("type") == "image_url" for part in content) == 8
    stored = [m for m in await web.stored(await tab.client()) if m.role.value == "user"]
    assert stored[0].parts[-1].video.mime_type == "video/webm"
    await tab.page.reload()
    await tab.page.wait_for_selector("body[data-ready='1']")
    await tab.page.locator(".msg.user video.image").wait_for()
    assert tab.errors == []


async def test_non_image_upload_shows_an_error(tab: Page, tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(b"this is not a picture")
    await tab.open()
    await tab.page.set_input_files("#file", str(path))
    notice = tab.page.locator("#notice")
    await notice.wait_for()
    assert "not an image" in await notice.inner_text()
    assert await tab.page.locator("#attachments .chip").count() == 0


async def test_reload_shows_history(tab: Page, web, fake_openai) -> None:
    await tab.open()
    await tab.say("first question")
    await tab.wait_reply_done()
    await tab.say("second question")
    await tab.page.locator(".msg.assistant").nth(1).wait_for()
    await tab.wait_reply_done()
    await tab.page.reload()
    await tab.page.wait_for_selector("body[data-ready='1']")
    await tab.page.locator(".msg").nth(3).wait_for()
    assert await tab.texts() == [
        "first question",
        "You said: first question",
        "second question",
        "You said: second question",
    ]


async def test_offline_history_stays_readable(tab: Page, web, fake_openai) -> None:
    await tab.open()
    await tab.say("remember this offline")
    await tab.wait_reply_done()
    await tab.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    await tab.page.wait_for_function("() => !!navigator.serviceWorker.controller")
    await web.connector.aclose()  # the server goes away
    await tab.page.locator("#offline-banner").wait_for(state="visible")
    await tab.page.reload()  # the shell comes from the service worker, the chat from IndexedDB
    await tab.page.wait_for_selector("body[data-ready='1']")
    await tab.page.locator("#offline-banner").wait_for(state="visible")
    await tab.page.locator(".msg.assistant").wait_for()
    assert await tab.texts() == ["remember this offline", "You said: remember this offline"]
    assert await tab.page.locator(".conv-item").count() == 1


async def test_script_tags_are_shown_as_text(tab: Page, web, fake_openai) -> None:
    evil = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> [x](javascript:alert(1))'
    await tab.open()
    await tab.say(evil)
    await tab.wait_reply_done()
    await tab.page.reload()
    await tab.page.wait_for_selector("body[data-ready='1']")
    await tab.page.locator(".msg.assistant").wait_for()
    texts = await tab.texts()
    assert texts == [evil, "You said: " + evil]
    assert await tab.page.evaluate("window.pwned") is None
    assert (
        await tab.page.locator("#list script, #list img[src='x'], #list a[href^='javascript']").count() == 0
    )


async def test_phone_layout_and_screenshot(browser: Any, web, fake_openai) -> None:
    fake_openai.add_reply("Day 1: Alfama and the castle. Day 2: Belém and pastéis de nata.")
    fake_openai.add_reply(
        "Sure! Here is a tiny Python example:\n\n"
        '```python\ndef greet(name):\n    return f"Hello, {name}!"\n```\n\n'
        "- **Streams** as it is written\n- Keeps *every* conversation\n- Works offline for reading",
        chunk_size_chars=12,
    )
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = Page(await context.new_page(), web.url)
    await page.open()
    await page.say("Plan a weekend in Lisbon")
    await page.wait_reply_done()
    await page.page.click("#new-chat")
    await page.page.wait_for_function("() => document.querySelectorAll('.conv-item').length === 2")
    await page.say("Show me a Python greeting function")
    await page.wait_reply_done()
    assert await page.page.locator(".code .copy").count() == 1
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    await page.page.screenshot(path=str(docs / "screenshot.png"))
    client = await page.client()
    await context.close()
    phone = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    # the same browser identity on a phone-sized screen
    await phone.add_init_script(f"localStorage.setItem('relaybot.client', {client!r})")
    p2 = Page(await phone.new_page(), web.url)
    await p2.open()
    assert not await p2.page.locator("#sidebar").is_visible() or await p2.page.locator("#sidebar").evaluate(
        "el => el.getBoundingClientRect().right <= 0"
    )
    await p2.page.click("#menu")
    await p2.page.wait_for_function(
        "() => document.querySelector('#sidebar').getBoundingClientRect().left >= 0"
    )
    assert await p2.page.locator(".conv-item").count() == 2
    await phone.close()
    assert page.errors == [] and p2.errors == []
    assert (await web.stored(client))[-1].status == ReplyStatus.COMPLETE


async def test_slow_connection_still_completes(browser: Any, web, fake_openai) -> None:
    fake_openai.add_reply(LONG, tokens_per_second=100, chunk_size_chars=5)
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = Page(await context.new_page(), web.url)
    await page.open()
    cdp = await context.new_cdp_session(page.page)
    await cdp.send("Network.enable")
    # a poor mobile link: 300 ms latency, ~16 KB/s each way
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 300, "downloadThroughput": 16 * 1024, "uploadThroughput": 16 * 1024},
    )
    await page.say("slowly please")
    text = await page.wait_reply_done()
    assert text.strip() == LONG
    assert page.errors == []
    await context.close()


async def test_image_too_large_even_after_shrinking_shows_a_size_error(
    browser: Any, make_web, tmp_path: Path
) -> None:
    from PIL import Image

    bot = await make_web(web={"max_upload_mb": 1})
    path = tmp_path / "noise.png"
    Image.frombytes("RGB", (1500, 1500), os.urandom(1500 * 1500 * 3)).save(path)  # noise: no compression
    context = await browser.new_context()
    page = Page(await context.new_page(), bot.url)
    await page.open()
    await page.page.set_input_files("#file", str(path))
    notice = page.page.locator("#notice")
    await notice.wait_for()
    assert "larger than 1 MB" in await notice.inner_text()
    assert await page.page.locator("#attachments .chip").count() == 0
    assert page.errors == []
    await context.close()


async def test_markdown_renderer_is_safe_and_complete(tab: Page) -> None:
    await tab.open()
    html = await tab.page.evaluate("""async () => {
        const { renderMarkdown } = await import('/static/markdown.js');
        const render = (text) => {
            const box = document.createElement('div');
            box.appendChild(renderMarkdown(text));
            return box.innerHTML;
        };
        return {
            heading: render('## Title **bold**'),
            list: render('- one\\n- *two*\\n\\n1. first\\n2. second'),
            code: render('```js\\nconst a = "<b>";\\n```'),
            open_fence: render('```py\\nprint(1)'),
            link: render('[site](https://example.com/a?b=1) and https://x.org/y.'),
            bad_link: render('[x](javascript:alert(1)) [y](data:text/html,hi)'),
            snake: render('call my_var_name now'),
            html: render('<b>hi</b> & <i onclick=x>'),
            quote: render('> quoted\\n---'),
        };
    }""")
    assert html["heading"] == "<h2>Title <strong>bold</strong></h2>"
    assert html["list"] == "<ul><li>one</li><li><em>two</em></li></ul><ol><li>first</li><li>second</li></ol>"
    assert '<pre><code>const a = "&lt;b&gt;";</code></pre>' in html["code"] and 'class="copy"' in html["code"]
    assert "<pre><code>print(1)</code></pre>" in html["open_fence"]
    assert (
        '<a href="https://example.com/a?b=1" rel="noopener noreferrer nofollow" target="_blank">site</a>'
        in html["link"]
    )
    assert '<a href="https://x.org/y"' in html["link"] and html["link"].endswith("</a>.</p>")
    assert "<a" not in html["bad_link"] and "javascript:alert(1)" in html["bad_link"]
    assert html["snake"] == "<p>call my_var_name now</p>"
    assert html["html"] == "<p>&lt;b&gt;hi&lt;/b&gt; &amp; &lt;i onclick=x&gt;</p>"
    assert html["quote"] == "<blockquote>quoted</blockquote><hr>"


async def test_imagine_notice_gives_way_to_the_picture(tab: Page, web, fake_openai) -> None:
    fake_openai.add_image(delay=0.5)
    await tab.open()
    await tab.say("/imagine a green triangle")
    notice = tab.page.locator("#list .msg.assistant .text", has_text="Generating")
    await notice.wait_for()  # the notice is shown while the picture is drawn …
    await tab.page.locator("#list .msg.assistant img").wait_for()
    await notice.wait_for(state="detached")  # … and leaves once the picture is there
    assert await tab.page.locator("#list .msg.assistant img").count() == 1
    assert "a green triangle" in "\n".join(await tab.texts())


async def test_tokens_and_cost_before_sending_and_after_the_reply(tab: Page, web, fake_openai) -> None:
    fake_openai.add_reply("Priced answer.", usage=(1200, 300))
    await tab.open()
    estimate = tab.page.locator("#estimate")
    await tab.page.fill("#input", "how much will this cost?")
    await tab.page.locator("#estimate", has_text="tokens in context").wait_for()
    line = await estimate.inner_text()
    assert "to send, at most $" in line and "with the answer" in line
    await tab.page.press("#input", "Enter")
    await tab.wait_reply_done()
    cost = tab.assistant().locator(".cost")
    await cost.wait_for()
    # (1200 × $0.15 + 300 × $0.60) / 1M = $0.00036
    assert await cost.inner_text() == "1,200 in · 300 out · $0.0004"
