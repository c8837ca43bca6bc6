"""Alembic environment for relaybot's storage.

Two ways in:

* **relaybot itself** (``Store.open``) passes an open synchronous connection (from
  ``AsyncConnection.run_sync``) in ``config.attributes["connection"]``; the migration runs in
  the caller's transaction.
* **the alembic CLI** (developers, see ``alembic.ini``) builds an async engine from
  ``RELAYBOT_DATABASE_URL`` or ``sqlalchemy.url`` and runs the same code through it.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from relaybot.core.storage.schema import metadata

config = context.config

# Any constant works; it only has to be the same for every relaybot process.
_PG_MIGRATION_LOCK = 0x72656C6179  # "relay"


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite: ALTERs become copy-and-move table rebuilds
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Several workers starting at once must not run the same DDL concurrently; the
            # lock is released when the migration transaction ends. (SQLite serialises via
            # BEGIN IMMEDIATE, taken by the caller.)
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        context.run_migrations()


async def _run_cli(url: str) -> None:
    from relaybot.core.storage.engine import SQLITE_IMMEDIATE, create_engine, parse_url

    # Same conditions as relaybot's own migrate(): SQLite foreign keys off (table rebuilds
    # must not fire ON DELETE actions) and the write lock taken up front.
    engine = create_engine(parse_url(url), foreign_keys=False, pooled=False)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(**{SQLITE_IMMEDIATE: True})
            async with conn.begin():
                await conn.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if context.is_offline_mode():
        raise SystemExit("relaybot migrations run online only (no --sql)")
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    url = os.environ.get("RELAYBOT_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set RELAYBOT_DATABASE_URL (e.g. sqlite+aiosqlite:///relaybot.db)")
    asyncio.run(_run_cli(url))


_main()
