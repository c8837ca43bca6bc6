"""Engine creation, SQLite tuning, migrations and database-error translation.

Supported URLs: ``sqlite+aiosqlite:///path/to.db`` (the default; ``sqlite+aiosqlite://`` or
``...:///:memory:`` for a throwaway in-memory database) and ``postgresql+asyncpg://user@host/db``.
The synchronous spellings ``sqlite:///`` and ``postgresql://`` are accepted and mapped to the
async drivers, because that is what people copy from other tools. The Store itself runs SQLite
through the synchronous pysqlite driver on a thread of its own (:func:`create_sqlite_engine`,
:mod:`.sqlite_worker`); the ``sqlite+aiosqlite`` spelling stays the documented one, and
:func:`create_engine` still builds an aiosqlite engine for code that wants an async one.

Every database failure leaves this package as a :class:`~relaybot.core.contracts.errors.StorageError`
whose message says what is wrong and what to do (see :func:`translate_error`), with the
password of the URL redacted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, StaticPool

from relaybot.core.contracts.errors import StorageError
from relaybot.core.contracts.redact import register_secret

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 5000
MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Execution option that makes a SQLite transaction start with BEGIN IMMEDIATE (take the write
# lock up front). A deferred transaction that reads first and writes later can fail with
# "database is locked" at once, without waiting for busy_timeout, when another connection
# wrote in between; taking the lock at BEGIN makes writers queue behind busy_timeout instead.
SQLITE_IMMEDIATE = "relaybot_sqlite_immediate"

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}
_SUPPORTED = {"sqlite+aiosqlite", "postgresql+asyncpg"}
_EXTRAS = {"sqlite": ("aiosqlite", "relaybot"), "postgresql": ("asyncpg", "relaybot[postgres]")}


@dataclass(frozen=True, slots=True)
class Target:
    """Where a store lives, described for error messages (never contains the password)."""

    url: URL
    safe_url: str
    backend: str  # "sqlite" or "postgresql"
    sqlite_path: str | None  # absolute file path; None for memory or PostgreSQL
    busy_timeout_ms: int

    @property
    def memory(self) -> bool:
        """True for an in-memory SQLite database."""
        return self.backend == "sqlite" and self.sqlite_path is None

    @property
    def where(self) -> str:
        """A short description: the SQLite file, or PostgreSQL host:port/db."""
        if self.backend == "sqlite":
            return f"SQLite database {self.sqlite_path or ':memory:'}"
        url = self.url
        return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def parse_url(url: str, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Target:
    """Validate ``url`` and map it to an async driver; raise StorageError if unusable."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(
            "[storage] url is not a database URL; expected e.g. "
            "'sqlite+aiosqlite:///relaybot.db' or 'postgresql+asyncpg://user@host/db'"
        ) from None
    if parsed.password:
        register_secret(str(parsed.password))
    drivername = _DRIVERS.get(parsed.drivername, parsed.drivername)
    if drivername not in _SUPPORTED:
        raise StorageError(
            f"[storage] url {parsed.render_as_string(hide_password=True)!r} uses driver "
            f"{parsed.drivername!r}; relaybot supports 'sqlite+aiosqlite://' and "
            "'postgresql+asyncpg://'"
        )
    parsed = parsed.set(drivername=drivername)
    safe = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    sqlite_path: str | None = None
    if backend == "sqlite":
        database = parsed.database or ""
        is_uri = str(parsed.query.get("uri", "")).lower() == "true"
        if database and database != ":memory:" and not is_uri:
            sqlite_path = str(Path(database).expanduser().absolute())
            parsed = parsed.set(database=sqlite_path)
        elif is_uri:
            sqlite_path = database
    return Target(parsed, safe, backend, sqlite_path, busy_timeout_ms)


def create_engine(
    target: Target, *, connect_timeout: float = 10.0, foreign_keys: bool = True, pooled: bool = True
) -> AsyncEngine:
    """Create the async engine for ``target`` (SQLite: pragmas and explicit BEGIN).

    ``foreign_keys=False`` (SQLite only) is for migrations, see :func:`migrate`;
    ``pooled=False`` closes each connection when it is released.
    """
    kwargs: dict[str, Any] = {}
    if not pooled:
        kwargs["poolclass"] = NullPool
    if target.backend == "sqlite":
        if target.memory:
            # One shared connection, otherwise every pooled connection sees its own empty DB;
            # the Store serialises access to it.
            kwargs["poolclass"] = StaticPool
        # sqlite3's connect timeout is the same busy wait as PRAGMA busy_timeout; keep them equal.
        kwargs["connect_args"] = {"timeout": target.busy_timeout_ms / 1000}
    else:
        kwargs["pool_pre_ping"] = True  # survive a PostgreSQL restart between messages
        kwargs["connect_args"] = {"timeout": connect_timeout}
    try:
        engine = create_async_engine(target.url, **kwargs)
    except ImportError as exc:
        module, extra = _EXTRAS[target.backend]
        raise StorageError(
            f"{target.where} needs the {module!r} driver, which is not installed: pip install '{extra}'"
        ) from exc
    if target.backend == "sqlite":
        _tune_sqlite(engine.sync_engine, target.busy_timeout_ms, foreign_keys=foreign_keys)
    return engine


def create_sqlite_engine(target: Target, *, foreign_keys: bool = True, pooled: bool = True) -> sa.Engine:
    """The synchronous (pysqlite) engine for a SQLite ``target``, tuned like :func:`create_engine`.

    The Store runs it on its own thread (:mod:`.sqlite_worker`); connections may be made on
    any thread but each is used by one thread at a time.
    """
    kwargs: dict[str, Any] = {
        # sqlite3's connect timeout is the same busy wait as PRAGMA busy_timeout
        "connect_args": {"timeout": target.busy_timeout_ms / 1000, "check_same_thread": False},
    }
    if target.memory:
        kwargs["poolclass"] = StaticPool  # one shared connection, or each sees its own empty DB
    elif not pooled:
        kwargs["poolclass"] = NullPool
    engine = sa.create_engine(target.url.set(drivername="sqlite+pysqlite"), **kwargs)
    _tune_sqlite(engine, target.busy_timeout_ms, foreign_keys=foreign_keys)
    return engine


def _tune_sqlite(sync_engine: sa.Engine, busy_timeout_ms: int, *, foreign_keys: bool) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would BEGIN lazily and
        # always DEFERRED); _on_begin below emits the BEGIN we want.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
            cursor.execute("PRAGMA synchronous = NORMAL")  # safe with WAL, far fewer fsyncs
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def run_migrations(connection: sa.Connection, version_dirs: Sequence[str] = ()) -> None:
    """Upgrade the database behind ``connection`` to the newest revision (sync; run it via
    ``AsyncConnection.run_sync``). A database already at head is left untouched.

    ``version_dirs`` adds revision directories to the packaged one (tests, downstream forks).
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if version_dirs:
        locations = [str(MIGRATIONS_DIR / "versions"), *map(str, version_dirs)]
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_locations", os.pathsep.join(locations))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(target: Target, engine: AsyncEngine, *, version_dirs: Sequence[str] = ()) -> None:
    """Bring the schema to the newest revision in one transaction.

    SQLite files are migrated on a separate connection with foreign keys OFF: SQLite rebuilds
    a table to ALTER it (Alembic batch mode), and dropping the old table with foreign keys ON
    would fire ON DELETE CASCADE / SET NULL on the rows that reference it. The result is
    checked with ``PRAGMA foreign_key_check`` before committing. The write lock is taken up
    front (BEGIN IMMEDIATE), so concurrent starters queue; on PostgreSQL ``env.py`` takes an
    advisory lock.
    """
    from alembic.util import CommandError

    separate = target.backend == "sqlite" and not target.memory
    migrator = create_engine(target, foreign_keys=False, pooled=False) if separate else engine
    try:
        async with migrator.connect() as conn:
            conn = await conn.execution_options(**{SQLITE_IMMEDIATE: True})
            async with conn.begin():
                await conn.run_sync(_migrate_in, target, version_dirs)
    except CommandError as exc:
        raise _newer_schema(target, exc) from exc
    finally:
        if separate:
            await migrator.dispose()


def migrate_sqlite(target: Target, engine: sa.Engine, *, version_dirs: Sequence[str] = ()) -> None:
    """:func:`migrate` for the synchronous SQLite engine of :func:`create_sqlite_engine`
    (same rules: foreign keys off on a separate connection, BEGIN IMMEDIATE, checked)."""
    from alembic.util import CommandError

    migrator = engine if target.memory else create_sqlite_engine(target, foreign_keys=False, pooled=False)
    try:
        with migrator.connect() as conn:
            conn = conn.execution_options(**{SQLITE_IMMEDIATE: True})
            with conn.begin():
                _migrate_in(conn, target, version_dirs)
    except CommandError as exc:
        raise _newer_schema(target, exc) from exc
    finally:
        if migrator is not engine:
            migrator.dispose()


def _migrate_in(conn: sa.Connection, target: Target, version_dirs: Sequence[str]) -> None:
    """Upgrade inside the caller's transaction; on SQLite refuse a result with broken references."""
    run_migrations(conn, version_dirs)
    if target.backend == "sqlite":
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
        if broken is not None:
            raise StorageError(
                f"migrating {target.where} would break references "
                f"(table {broken[0]}); nothing was changed. Please report this"
            )


def _newer_schema(target: Target, exc: Exception) -> StorageError:
    # Typically: the database was migrated by a newer relaybot than this one.
    return StorageError(
        f"cannot migrate {target.where}: {exc}. If a newer relaybot version used this "
        "database, upgrade relaybot (or point [storage] url at another database)"
    )


async def head_revision(conn: AsyncConnection) -> str | None:
    """The revision recorded in ``alembic_version`` (``None`` if never migrated)."""
    from alembic.migration import MigrationContext

    def _read(sync_conn: sa.Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    return await conn.run_sync(_read)


# -- reachability (relaybot check) ------------------------------------------------------------


def packaged_head() -> str | None:
    """The newest schema revision this relaybot ships."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


def _describe_revision(where: str, revision: str | None, head: str | None) -> str:
    if revision is None:
        return f"{where}: reachable, no relaybot schema yet (created at start)"
    if revision == head:
        return f"{where}: reachable, schema current ({revision})"
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    if revision in known:
        return f"{where}: reachable, schema at {revision} (migrated to {head} at start)"
    raise StorageError(
        f"{where} has schema revision {revision}, which this relaybot does not know: a newer "
        "relaybot migrated it. Upgrade relaybot, or point [storage] url at another database"
    )


def _sqlite_revision(path: str) -> str | None:
    """The revision of an existing SQLite file, opened read-only (nothing is written)."""
    import sqlite3

    conn = sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True, timeout=2)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "alembic_version" not in tables:
            return None
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        return row[0] if row else None
    finally:
        conn.close()


def _probe_sqlite_file(target: Target) -> str:
    """:func:`probe` for SQLite (blocking file checks; run in a thread)."""
    if target.sqlite_path is None or target.sqlite_path.startswith("file:"):
        return f"{target.where}: nothing to check (in-memory or URI database)"
    path = Path(target.sqlite_path)
    if not path.exists():
        parent = path.parent
        while not parent.exists():
            parent = parent.parent
        if not _can_create_in(parent):
            raise StorageError(
                f"cannot create {target.where}: {parent} is not writable. Make it writable by "
                "relaybot or point [storage] url at another path"
            )
        return f"{target.where}: does not exist yet (created at start)"
    try:
        revision = _sqlite_revision(str(path))
        _sqlite_write_lock(str(path), target.busy_timeout_ms)
    except Exception as exc:
        raise translate_error(exc, target) from exc
    return _describe_revision(target.where, revision, packaged_head())


def _can_create_in(directory: Path) -> bool:
    """True when relaybot could create its database (and folders) in ``directory``.

    Tried for real, with a temporary folder removed at once: permission bits do not tell
    (root passes ``os.access`` everywhere, yet cannot create anything under ``/proc``; a
    read-only mount looks writable too).
    """
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".relaybot-check-", dir=directory))
    except OSError:
        return False
    return True


def _sqlite_write_lock(path: str, busy_timeout_ms: int) -> None:
    """Take and release SQLite's write lock (``BEGIN IMMEDIATE``; nothing is written).

    Fails like the bot would at start when another program holds the write lock longer than
    the busy timeout, or when the file cannot be written.
    """
    import sqlite3

    conn = sqlite3.connect(
        f"{Path(path).as_uri()}?mode=rw", uri=True, timeout=busy_timeout_ms / 1000, isolation_level=None
    )
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def probe(target: Target, *, connect_timeout: float = 10.0) -> str:
    """Whether relaybot could use ``target``, without creating or changing anything.

    Returns one line for ``relaybot check``; raises StorageError (with the fix) when the
    database cannot be reached, opened or created, or was migrated by a newer relaybot.
    """
    import asyncio

    if target.backend == "sqlite":
        return await asyncio.to_thread(_probe_sqlite_file, target)
    head = await asyncio.to_thread(packaged_head)
    engine = create_engine(target, connect_timeout=connect_timeout, pooled=False)
    try:
        async with engine.connect() as conn:
            revision = await head_revision(conn)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        raise translate_error(exc, target) from exc
    finally:
        await engine.dispose()
    return _describe_revision(target.where, revision, head)


# -- error translation ------------------------------------------------------------------------


def configured_at(exc: StorageError, source: str) -> StorageError:
    """``exc`` with the config file and key that chose the database in front (``relaybot.toml:
    [storage.url] …``), for errors met while opening it at start-up or in ``relaybot check``."""
    return type(exc)(f"{source}: [storage.url] {exc}", user_message=exc.user_message)


def translate_error(exc: BaseException, target: Target) -> StorageError:
    """Turn a driver/SQLAlchemy/OS error into a StorageError that says what to do.

    The message names the database (SQLite file, or PostgreSQL host:port/db) but never the
    password, and carries only the first line of the driver's message (no SQL, no params).
    """
    if isinstance(exc, StorageError):
        return exc
    detail = _driver_message(exc)
    low = detail.lower()
    where = target.where
    if target.backend == "sqlite":
        path = target.sqlite_path or ":memory:"
        if "database is locked" in low or "database table is locked" in low:
            msg = (
                f"{where} is locked: another connection held the write lock for longer than "
                f"busy_timeout ({target.busy_timeout_ms} ms). Make sure no other program keeps "
                "a write transaction open on it; to run several relaybot processes on one "
                "database use PostgreSQL"
            )
        elif "unable to open database file" in low or isinstance(exc, OSError):
            msg = (
                f"cannot open {where}: the file or its directory is missing or not writable "
                f"({detail}). Check that {Path(path).parent} is a writable directory, or point "
                "[storage] url at one"
            )
        elif "readonly database" in low or "read-only" in low:
            msg = (
                f"{where} is read-only: give the relaybot user write access to {path} and its "
                "directory (SQLite writes a -wal and -shm file next to it)"
            )
        elif "disk is full" in low or "disk i/o error" in low:
            msg = f"cannot write {where}: {detail}. Free disk space or move the database"
        elif "file is not a database" in low or "malformed" in low:
            msg = f"{where} is not a valid SQLite database ({detail}); restore it or use a new path"
        else:
            msg = f"{where}: {detail}"
    else:
        if (
            isinstance(exc, ConnectionRefusedError)
            or "connection refused" in low
            or ("connect call failed" in low)
        ):
            msg = f"cannot connect to {where}: connection refused. Is PostgreSQL running there?"
        elif isinstance(exc, OSError) and ("name or service" in low or "nodename" in low):
            msg = f"cannot connect to {where}: unknown host {target.url.host!r}"
        elif isinstance(exc, (OSError, TimeoutError)) and not isinstance(exc, sa.exc.SQLAlchemyError):
            msg = f"cannot connect to {where}: {detail or type(exc).__name__}"
        elif "password authentication failed" in low or ("role" in low and "does not exist" in low):
            msg = f"{where} rejected the login ({detail}); check the user and password in [storage] url"
        elif "database" in low and "does not exist" in low:
            msg = f"{where}: {detail}. Create it first, e.g. createdb {target.url.database}"
        else:
            msg = f"{where}: {detail}"
    if isinstance(exc, sa.exc.TimeoutError):
        msg = f"{where}: no free database connection (pool exhausted): {detail}"
    error = StorageError(_scrub(msg, target))
    return error


def _driver_message(exc: BaseException) -> str:
    """First line of the underlying driver message, without SQLAlchemy's SQL/params dump."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc) or type(exc).__name__
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first.strip()


def _scrub(message: str, target: Target) -> str:
    password = target.url.password
    if password:
        message = message.replace(str(password), "***")
    return message
