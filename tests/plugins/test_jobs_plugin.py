"""The built-in jobs: retention deletes exactly what is old and unused; the usage report
reaches the admins."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image

from relaybot import ChatKey, ImagePart, ImageRef, Role, TextPart
from relaybot.core.storage.schema import conversations, utcnow


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str | None:
    """``None`` (the harness's SQLite file) or a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


RETENTION = {"jobs": {"retention": {"enabled": True, "days": 30}}}


def _png(colour: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, "PNG")
    return buf.getvalue()


def _age_file(path: os.PathLike[str], days: int) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


async def test_retention_deletes_old_conversations_and_unused_media_only(
    make_bot: Callable[..., Awaitable[Any]], database: str | None, tmp_path: Path
) -> None:
    # the media folder in the test's directory (with PostgreSQL it would default to the cwd)
    config = {**RETENTION, "storage": {"media_dir": str(tmp_path / "media")}}
    bot = await make_bot(config=config, database=database)
    app = bot.app
    store, media = app.store, app.media
    old_chat, new_chat = ChatKey("fake", "old"), ChatKey("fake", "new")
    shared_chat = ChatKey("fake", "shared")

    gone_image = await media.save(_png("red"))  # only the old conversation shows it
    kept_image = await media.save(_png("blue"))  # an old file, but a live conversation shows it
    orphan_old = await media.save(_png("green"))  # nobody refers to it, old
    orphan_new = await media.save(_png("white"))  # nobody refers to it, but just saved

    def image(ref: ImageRef) -> ImagePart:
        return ImagePart(ref)

    old = await store.create_conversation(old_chat, "old")
    await store.add_message(old.id, role=Role.USER, parts=[TextPart("old q"), image(gone_image)])
    new = await store.create_conversation(new_chat, "new")
    kept = await store.add_message(new.id, role=Role.USER, parts=[TextPart("new q"), image(kept_image)])
    base = await store.create_conversation(shared_chat, "base")
    first = await store.add_message(base.id, role=Role.USER, parts=[TextPart("shared q")])
    await store.add_message(base.id, role=Role.ASSISTANT, parts=[TextPart("only in base")])
    branch = await store.create_conversation(shared_chat, "branch", branch_from=first.id)
    tip = await store.add_message(branch.id, role=Role.USER, parts=[TextPart("branch q")])

    long_ago = utcnow() - timedelta(days=40)

    def age(conn: sa.Connection, ids: list[int]) -> None:
        conn.execute(sa.update(conversations).where(conversations.c.id.in_(ids)).values(updated_at=long_ago))

    await store.run_sync(age, [old.id, base.id])
    for ref in (gone_image, kept_image, orphan_old):
        _age_file(media.path_of(ref), 40)

    assert await app.jobs.run_now("retention") == "ok"

    assert await store.get_conversation(old.id) is None
    assert await store.get_conversation(base.id) is None
    assert (await store.get_conversation(new.id)) is not None
    # the branch keeps the message it shares with the deleted conversation
    assert [m.text for m in await store.path(tip.id)] == ["shared q", "branch q"]
    assert not media.path_of(gone_image).exists()
    assert not media.path_of(orphan_old).exists()
    assert media.path_of(kept_image).exists() and media.path_of(orphan_new).exists()
    assert [m.parts for m in await store.path(kept.id)] == [[TextPart("new q"), image(kept_image)]]


async def test_retention_is_off_by_default(make_bot: Callable[..., Awaitable[Any]]) -> None:
    bot = await make_bot()
    assert not bot.app.jobs.planned["retention"].enabled
    assert "retention" not in bot.app.jobs.next_run_times()


async def test_an_image_sent_again_is_not_swept(make_bot: Callable[..., Awaitable[Any]]) -> None:
    bot = await make_bot(config=RETENTION)
    media = bot.app.media
    ref = await media.save(_png("black"))
    _age_file(media.path_of(ref), 40)
    await media.save(_png("black"))  # the same picture arrives again (content-addressed)
    assert await bot.app.jobs.run_now("retention") == "ok"
    assert media.path_of(ref).exists()


async def test_usage_report_reaches_the_admins(
    make_bot: Callable[..., Awaitable[Any]], fake_openai: Any
) -> None:
    bot = await make_bot(config={"bot": {"admins": ["fake:boss"]}})
    fake_openai.add_reply("an answer")
    await bot.say("a question")
    usage = await bot.app.store.usage_by_model()
    tokens = usage["gpt-4o-mini"].input_tokens + usage["gpt-4o-mini"].output_tokens
    assert tokens > 0

    assert await bot.app.jobs.run_now("usage_report") == "ok"
    (report,) = bot.connector.messages(bot.chat("boss"))
    assert report.startswith("📊 Usage over the last 7 day(s)")
    assert f"gpt-4o-mini: {'~' if usage['gpt-4o-mini'].estimated else ''}{tokens:,} tokens" in report


async def test_usage_report_to_configured_chats(make_bot: Callable[..., Awaitable[Any]]) -> None:
    bot = await make_bot(config={"jobs": {"usage_report": {"chats": ["fake:ops:7"], "days": 1}}})
    assert await bot.app.jobs.run_now("usage_report") == "ok"
    assert bot.connector.messages(bot.chat("ops", "7")) == [
        "📊 Usage over the last 1 day(s)\nNo tokens were used."
    ]
