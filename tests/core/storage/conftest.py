"""Fixtures for storage tests: every ``store`` test runs on SQLite and on PostgreSQL.

PostgreSQL tests get a fresh throwaway database per test (``pg_url`` in ``tests/conftest.py``),
so tests never see each other's rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relaybot.core.storage import Store


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
