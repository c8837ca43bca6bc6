"""Fixtures for storage tests: every ``store`` test runs on SQLite and on PostgreSQL.

PostgreSQL tests get a fresh throwaway database per test (``relaybot_t_<random>``, created
from the ``test`` database and dropped afterwards), so tests never see each other's rows.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from relaybot.core.storage import Store
from sqlalchemy.engine import make_url

PG_ADMIN_DSN = os.environ.get("RELAYBOT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def require_service(name: str, exc: BaseException | str) -> None:
    """Skip the test because service ``name`` is unavailable, or fail it when
    ``RELAYBOT_REQUIRE_SERVICES=1`` (CI, where the service must be there)."""
    reason = f"{name} is not available: {exc}"
    if os.environ.get("RELAYBOT_REQUIRE_SERVICES") == "1":
        pytest.fail(reason + " (RELAYBOT_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def _async_url(dsn: str, database: str) -> str:
    base = dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """URL of a fresh, empty PostgreSQL database (dropped after the test)."""
    try:
        import asyncpg
    except ImportError as exc:
        require_service("PostgreSQL (asyncpg)", exc)
    name = f"relaybot_t_{secrets.token_hex(6)}"
    try:
        admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        shown = make_url(PG_ADMIN_DSN).render_as_string(hide_password=True)
        require_service(f"PostgreSQL at {shown}", exc)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _async_url(PG_ADMIN_DSN, name)
    finally:
        # FORCE: a test that failed mid-way may have left a connection open
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite file (not yet created) in the test's temporary directory."""
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'relaybot.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Which database backend the test runs on."""
    yield request.param


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A database URL for ``backend`` (fresh for each test)."""
    fixture = "sqlite_url" if backend == "sqlite" else "pg_url"
    return request.getfixturevalue(fixture)


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An open, migrated :class:`Store` on a fresh database; closed after the test."""
    opened = await Store.open(db_url)
    try:
        yield opened
    finally:
        await opened.close()
