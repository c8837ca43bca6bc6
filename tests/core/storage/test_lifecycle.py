"""Opening, migrating, reopening: the schema is created once and upgraded in place."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from relaybot.core.contracts.errors import StorageError
from relaybot.core.contracts.models import ChatKey, Role, TextPart
from relaybot.core.storage import Store
from relaybot.core.storage.engine import MIGRATIONS_DIR, create_engine, migrate, parse_url

CHAT = ChatKey("terminal", "local")

TEST_REVISION = '''
"""test-only revision: a column added with a full table rebuild on SQLite"""
import sqlalchemy as sa
from alembic import op

revision = "0002_test"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    # recreate="always" forces SQLite's copy-and-move rebuild of the referenced table, the
    # path where foreign-key actions could destroy data if they fired during the migration.
    recreate = "always" if op.get_bind().dialect.name == "sqlite" else "auto"
    with op.batch_alter_table("messages", recreate=recreate) as batch:
        batch.add_column(sa.Column("note", sa.String(50), nullable=False, server_default="kept"))


def downgrade():
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("note")
'''


#: the newest revision this package ships (a new migration changes it here, deliberately)
PACKAGED_HEAD = "0005_events"


def head_revision_in_package() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def test_alembic_version_holds_head(store: Store) -> None:
    assert await store.schema_revision() == head_revision_in_package() == PACKAGED_HEAD


async def test_sqlite_parent_directory_is_created(tmp_path: Path) -> None:
    db = tmp_path / "a" / "b" / "bot.db"
    store = await Store.open(f"sqlite+aiosqlite:///{db}")
    await store.close()
    assert db.is_file()


async def test_sync_url_spelling_is_accepted(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert store.backend == "sqlite" and store.url.startswith("sqlite+aiosqlite://")
    finally:
        await store.close()


async def test_in_memory_database_works(tmp_path: Path) -> None:
    async with await Store.open("sqlite+aiosqlite://") as store:
        conv = await store.create_conversation(CHAT, "mem")
        msg = await store.add_message(conv.id, role=Role.USER, parts=[TextPart("hi")])
        assert [m.text for m in await store.path(msg.id)] == ["hi"]


async def test_reopen_keeps_data_and_migrations_are_a_no_op(db_url: str) -> None:
    store = await Store.open(db_url)
    conv = await store.create_conversation(CHAT, "persisted")
    msg = await store.add_message(conv.id, role=Role.USER, parts=[TextPart("remember me")], token_count=3)
    await store.link_platform_message(CHAT, "p-1", msg.id)
    await store.close()

    reopened = await Store.open(db_url)
    try:
        active = await reopened.active_conversation(CHAT)
        assert active is not None and active.title == "persisted" and active.leaf_id == msg.id
        assert [m.text for m in await reopened.path(msg.id)] == ["remember me"]
        assert (await reopened.find_by_platform_id(CHAT, "p-1")).id == msg.id  # type: ignore[union-attr]
        assert await reopened.schema_revision() == PACKAGED_HEAD
    finally:
        await reopened.close()


async def test_existing_database_upgrades_in_place(db_url: str, tmp_path: Path) -> None:
    store = await Store.open(db_url)
    conv = await store.create_conversation(CHAT, "old data")
    q = await store.add_message(conv.id, role=Role.USER, parts=[TextPart("q")])
    a = await store.add_message(conv.id, role=Role.ASSISTANT, parts=[TextPart("a")])
    await store.link_platform_message(CHAT, "p-a", a.id)
    await store.close()

    versions = tmp_path / "extra_versions"
    versions.mkdir()
    (versions / "0002_test.py").write_text(TEST_REVISION.replace("{head}", head_revision_in_package()))
    target = parse_url(db_url)
    engine = create_engine(target)
    try:
        await migrate(target, engine, version_dirs=[str(versions)])
        async with engine.connect() as conn:
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
            notes = (await conn.execute(sa.text("SELECT id, note FROM messages ORDER BY id"))).all()
    finally:
        await engine.dispose()
    assert version == "0002_test"
    assert [tuple(row) for row in notes] == [(q.id, "kept"), (a.id, "kept")]

    # the rebuild kept every reference: tree, conversation ends, platform ids
    engine = create_engine(target)
    try:
        async with engine.connect() as conn:
            leaf = await conn.scalar(sa.text("SELECT leaf_id FROM conversations"))
            root = await conn.scalar(sa.text("SELECT root_id FROM conversations"))
            parent = await conn.scalar(sa.text(f"SELECT parent_id FROM messages WHERE id = {a.id}"))
            linked = await conn.scalar(sa.text("SELECT message_id FROM platform_messages"))
    finally:
        await engine.dispose()
    assert (leaf, root, parent, linked) == (a.id, q.id, q.id, a.id)


async def test_database_from_a_newer_version_gives_a_clear_error(db_url: str, tmp_path: Path) -> None:
    versions = tmp_path / "extra_versions"
    versions.mkdir()
    (versions / "0002_test.py").write_text(TEST_REVISION.replace("{head}", head_revision_in_package()))
    await (await Store.open(db_url)).close()
    target = parse_url(db_url)
    engine = create_engine(target)
    try:
        await migrate(target, engine, version_dirs=[str(versions)])
    finally:
        await engine.dispose()

    with pytest.raises(StorageError) as info:
        await Store.open(db_url)
    assert "0002_test" in str(info.value) and "upgrade relaybot" in str(info.value)


async def test_migrations_match_schema_module(store: Store) -> None:
    # schema.py (what autogenerate compares against) and the hand-written migrations must
    # describe the same database, or the next autogenerated revision would be wrong.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from relaybot.core.storage.schema import metadata

    def diff(sync_conn: sa.Connection) -> list[object]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    assert await store.run_sync(diff) == []
