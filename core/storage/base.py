"""The connection side of the store: opening (and migrating), transactions, chat ids.

Kept apart from :mod:`relaybot.core.storage.store` (the data API) so each stays small.
Write transactions go through :meth:`StoreBase._write`, reads through :meth:`StoreBase._read`;
see the :mod:`~relaybot.core.storage.store` docstring for the concurrency rules they implement.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Concatenate, ParamSpec, Self, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from relaybot.core.contracts.errors import StorageError
from relaybot.core.contracts.models import ChatKey
from relaybot.core.storage import queries as q
from relaybot.core.storage.engine import (
    DEFAULT_BUSY_TIMEOUT_MS,
    SQLITE_IMMEDIATE,
    Target,
    create_engine,
    create_sqlite_engine,
    head_revision,
    migrate,
    migrate_sqlite,
    parse_url,
    translate_error,
)
from relaybot.core.storage.schema import chats, utcnow
from relaybot.core.storage.sqlite_worker import SQLiteWorker, ThreadConnection

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
    """Run a Store method where its backend wants it; re-raise database/OS errors as an
    actionable StorageError. Every public data method of the store carries it."""

    @functools.wraps(fn)
    async def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            worker = self._worker
            if worker is not None and not worker.in_thread():
                # SQLite: the whole call runs on the store's thread (nested calls run inline)
                return await worker.run(fn, self, *args, **kwargs)
            return await fn(self, *args, **kwargs)
        except StorageError:
            raise
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise translate_error(exc, self._target) from exc

    return wrapper


class StoreBase:
    """Connection lifecycle, transactions and chat ids; :class:`~relaybot.core.storage.Store`
    adds the data API on top. Not meant to be used on its own."""

    def __init__(self, engine: AsyncEngine | SQLiteWorker, target: Target) -> None:
        """Wrap a migrated database: PostgreSQL through an ``AsyncEngine``, SQLite through a
        :class:`~.sqlite_worker.SQLiteWorker`. Use :meth:`open` instead."""
        self._target = target
        #: SQLite: the thread every call runs on (it also serialises the writes)
        self._worker = engine if isinstance(engine, SQLiteWorker) else None
        #: PostgreSQL: the async engine (asyncpg needs no thread)
        self._engine = engine if isinstance(engine, AsyncEngine) else None
        self._chat_ids: dict[tuple[str, str, str], int] = {}
        #: budget_locks rows known to exist (see relaybot.core.storage.spending)
        self._lock_keys: set[str] = set()

    @property
    def sql_engine(self) -> sa.Engine:
        """The synchronous engine under the store, whose events see every statement (tests,
        instrumentation). Do not run queries on it directly: use the store's methods."""
        if self._worker is not None:
            return self._worker.engine
        assert self._engine is not None
        return self._engine.sync_engine

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
        if target.backend == "sqlite":
            worker = SQLiteWorker(create_sqlite_engine(target))
            store = cls(worker, target)
            migrating = worker.call(migrate_sqlite, target, worker.engine)
        else:
            engine = create_engine(target, connect_timeout=connect_timeout)
            store = cls(engine, target)
            migrating = migrate(target, engine)
        try:
            await migrating
        except BaseException as exc:
            await store.close()
            if isinstance(exc, sa.exc.SQLAlchemyError | OSError):
                raise translate_error(exc, target) from exc
            raise
        log.debug("storage ready: %s", target.safe_url)
        return store

    async def close(self) -> None:
        """Close every pooled connection. The store is unusable afterwards."""
        if self._worker is not None:
            await self._worker.close()
        elif self._engine is not None:
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
        """A write transaction (SQLite: BEGIN IMMEDIATE on the store's thread)."""
        pending: dict[tuple[str, str, str], int] = {}
        token = _new_chats.set(pending)
        try:
            if self._worker is not None:
                with self._sqlite_connection() as sync_conn:
                    sync_conn = sync_conn.execution_options(**{SQLITE_IMMEDIATE: True})
                    with sync_conn.begin():
                        yield ThreadConnection(sync_conn)  # type: ignore[misc]
            else:
                assert self._engine is not None
                async with self._engine.connect() as conn, conn.begin():
                    yield conn
            # Chat ids seen in this transaction are cached only once it committed: a
            # rolled-back insert must not leave an id that points at no row.
            self._chat_ids.update(pending)
        finally:
            _new_chats.reset(token)

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading (SQLite: on the store's thread)."""
        if self._worker is not None:
            with self._sqlite_connection() as sync_conn:
                yield ThreadConnection(sync_conn)  # type: ignore[misc]
        else:
            assert self._engine is not None
            async with self._engine.connect() as conn:
                yield conn

    def _sqlite_connection(self) -> sa.Connection:
        assert self._worker is not None and self._worker.in_thread(), "SQLite work off its thread"
        return self._worker.engine.connect()

    @translated
    async def run_sync(
        self, fn: Callable[Concatenate[sa.Connection, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``fn(connection, *args, **kwargs)``, a synchronous SQLAlchemy function, in one
        write transaction, where the backend runs its work (SQLite: the store's thread).

        For maintenance, tests and plugins that need SQL the data API lacks; it commits when
        ``fn`` returns and rolls back when it raises.
        """
        async with self._write() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

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
