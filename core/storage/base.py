"""The connection side of the store: opening (and migrating), transactions, chat ids.

Kept apart from :mod:`relaybot.core.storage.store` (the data API) so each stays small.
Write transactions go through :meth:`StoreBase._write`, reads through :meth:`StoreBase._read`;
see the :mod:`~relaybot.core.storage.store` docstring for the concurrency rules they implement.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from relaybot.core.errors import StorageError
from relaybot.core.models import ChatKey
from relaybot.core.storage import queries as q
from relaybot.core.storage.engine import (
    DEFAULT_BUSY_TIMEOUT_MS,
    SQLITE_IMMEDIATE,
    Target,
    create_engine,
    head_revision,
    migrate,
    parse_url,
    translate_error,
)
from relaybot.core.storage.schema import chats, utcnow

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="StoreBase")

#: chat ids inserted by the current write transaction (see StoreBase._write). A context
#: variable, not ``Connection.info``: after a cancellation mid-statement the connection is
#: invalidated, and touching its ``info`` then would try to reconnect outside SQLAlchemy's
#: greenlet and turn the cancellation into a StorageError.
_new_chats: ContextVar[dict[tuple[str, str, str], int] | None] = ContextVar(
    "relaybot_new_chats", default=None
)


def translated(
    fn: Callable[Concatenate[S, P], Awaitable[R]],
) -> Callable[Concatenate[S, P], Awaitable[R]]:
    """Re-raise database/OS errors of a Store method as an actionable StorageError."""

    @functools.wraps(fn)
    async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(self, *args, **kwargs)
        except StorageError:
            raise
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise translate_error(exc, self._target) from exc

    return wrapper


class StoreBase:
    """Connection lifecycle, transactions and chat ids; :class:`~relaybot.core.storage.Store`
    adds the data API on top. Not meant to be used on its own."""

    def __init__(self, engine: AsyncEngine, target: Target) -> None:
        """Wrap an engine whose database is already migrated; use :meth:`open` instead."""
        self._engine = engine
        self._target = target
        # Write transactions on SQLite start with BEGIN IMMEDIATE (see engine.SQLITE_IMMEDIATE).
        self._writer = (
            engine.execution_options(**{SQLITE_IMMEDIATE: True}) if target.backend == "sqlite" else engine
        )
        self._write_lock: contextlib.AbstractAsyncContextManager[Any] = (
            asyncio.Lock() if target.backend == "sqlite" else contextlib.nullcontext()
        )
        # An in-memory database is one shared connection: readers must queue as well.
        self._read_lock: contextlib.AbstractAsyncContextManager[Any] = (
            self._write_lock if target.memory else contextlib.nullcontext()
        )
        self._chat_ids: dict[tuple[str, str, str], int] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        connect_timeout: float = 10.0,
    ) -> Self:
        """Connect to ``url``, create the SQLite file's directory if needed, and migrate the
        schema to the newest revision (a no-op when it is current).

        ``busy_timeout_ms`` is how long a SQLite write waits for another process's lock
        before failing; ``connect_timeout`` bounds a PostgreSQL connection attempt.
        Raises StorageError when the database cannot be reached, opened or migrated.
        """
        target = parse_url(url, busy_timeout_ms=busy_timeout_ms)
        if target.sqlite_path and not target.sqlite_path.startswith("file:"):
            directory = Path(target.sqlite_path).parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(
                    f"cannot create the directory {directory} for SQLite database "
                    f"{target.sqlite_path}: {exc.strerror or exc}. Create it (writable by "
                    "relaybot) or point [storage] url at another path"
                ) from exc
            # Open the file once synchronously first: when aiosqlite fails to connect it
            # leaves its worker thread behind (aiosqlite#35-style leak), which later crashes
            # on the closed event loop; sqlite3 fails cleanly and gives the same error.
            try:
                await asyncio.to_thread(_probe_sqlite, target.sqlite_path, busy_timeout_ms)
            except sqlite3.Error as exc:
                raise translate_error(exc, target) from exc
        engine = create_engine(target, connect_timeout=connect_timeout)
        try:
            await migrate(target, engine)
        except BaseException as exc:
            await engine.dispose()
            if isinstance(exc, sa.exc.SQLAlchemyError | OSError):
                raise translate_error(exc, target) from exc
            raise
        log.debug("storage ready: %s", target.safe_url)
        return cls(engine, target)

    async def close(self) -> None:
        """Close every pooled connection. The store is unusable afterwards."""
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The database URL with the password hidden (safe to log)."""
        return self._target.safe_url

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._target.backend

    @translated
    async def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (``alembic_version``)."""
        async with self._read() as conn:
            return await head_revision(conn)

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        pending: dict[tuple[str, str, str], int] = {}
        token = _new_chats.set(pending)
        try:
            async with self._write_lock, self._writer.connect() as conn:
                async with conn.begin():
                    yield conn
            # Chat ids seen in this transaction are cached only once it committed: a
            # rolled-back insert must not leave an id that points at no row.
            self._chat_ids.update(pending)
        finally:
            _new_chats.reset(token)

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self._read_lock, self._engine.connect() as conn:
            yield conn

    # -- chats --------------------------------------------------------------------------------

    @translated
    async def get_or_create_chat(self, chat: ChatKey) -> int:
        """The row id of ``chat``, creating the row on first use (cached in memory)."""
        key = q.chat_key_values(chat)
        if (cached := self._chat_ids.get(key)) is not None:
            return cached
        async with self._read() as conn:
            found = await conn.scalar(sa.select(chats.c.id).where(q.chat_matches(chat)))
        if found is not None:
            self._chat_ids[key] = found
            return found
        async with self._write() as conn:
            return await self._chat_id(conn, chat)

    async def _chat_id(self, conn: AsyncConnection, chat: ChatKey) -> int:
        """Chat row id inside an open write transaction (insert-if-missing, race-free)."""
        key = q.chat_key_values(chat)
        if (cached := self._chat_ids.get(key)) is not None:
            return cached
        platform, chat_id, thread = key
        insert = (
            q.upsert(conn.dialect, chats)
            .values(platform=platform, chat=chat_id, thread=thread, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["platform", "chat", "thread"])
        )
        await conn.execute(insert)
        row_id = await conn.scalar(sa.select(chats.c.id).where(q.chat_matches(chat)))
        assert row_id is not None  # inserted or already present
        pending = _new_chats.get()
        if pending is not None:
            pending[key] = row_id
        return row_id


def _probe_sqlite(path: str, busy_timeout_ms: int) -> None:
    """Open (creating if missing) and close the SQLite file at ``path``; raises sqlite3.Error."""
    sqlite3.connect(path, timeout=busy_timeout_ms / 1000).close()
