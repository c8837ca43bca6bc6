"""SQLite on one dedicated thread: a whole Store call per thread hop.

Why: through SQLAlchemy's async engine, aiosqlite moves every cursor operation to its thread
and back: opening the cursor, executing, fetching and closing each cost a hop, and so do BEGIN
and COMMIT. Storing one message and its reply took ~80 hops and ~17 ms of CPU, and under load
each hop also waits for a busy event loop while the write lock is held, so 1,000 messages
arriving together took 20 s to be stored (measured 2026-12-01, ``benchmarks/README.md``).

Here the Store's SQLite work runs on one thread with SQLAlchemy's synchronous pysqlite engine.
The Store's methods are unchanged coroutines: :meth:`SQLiteWorker.run` runs a method's
coroutine to completion on the thread, and inside it ``await conn.execute(...)`` is a plain
synchronous call (:class:`ThreadConnection`), so the coroutine never suspends. One hop there,
one back, whatever the method does.

Consequences the Store relies on:

* every call runs on the same thread, one at a time, in the order they were made: that is
  the serialisation SQLite needs for writes (no asyncio lock), and reads see every write made
  before them;
* a call is atomic with respect to cancellation: cancelling the caller while the call runs
  lets it finish (or roll back on error) on the thread; the caller gets ``CancelledError``;
* storage code must not await anything that really suspends (a lock, a sleep, I/O) — that
  would stall the thread, so :meth:`SQLiteWorker.run` refuses it with a ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa

__all__ = ["SQLiteWorker", "ThreadConnection"]

log = logging.getLogger("relaybot.core.storage")

P = ParamSpec("P")
R = TypeVar("R")


class ThreadConnection:
    """The part of ``AsyncConnection`` the Store uses, over a synchronous connection.

    Only valid on the worker thread. Results are the synchronous ``CursorResult``: read them
    before the transaction ends, as with an async connection's buffered results.
    """

    __slots__ = ("_conn", "dialect")

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> sa.CursorResult[Any]:
        return self._conn.execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return self._conn.scalar(statement, parameters)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> sa.CursorResult[Any]:
        return self._conn.exec_driver_sql(statement, parameters)

    async def run_sync(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        return fn(self._conn, *args, **kwargs)


class SQLiteWorker:
    """One thread that runs a store's SQLite work (see the module docstring).

    ``engine`` is the synchronous engine the work uses; it is disposed by :meth:`close`.
    """

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._executor: ThreadPoolExecutor | None = None
        self._thread_id: int | None = None

    def in_thread(self) -> bool:
        """True when called from the worker thread (nested Store calls run inline)."""
        return threading.get_ident() == self._thread_id

    async def run(self, fn: Callable[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn(*args, **kwargs)`` (a coroutine function that never suspends) on the thread.

        The coroutine is created on the thread, so a call cancelled before it started leaves
        nothing behind. Context variables of the caller are visible to it.
        """
        return await self.call(_drive, fn, *args, **kwargs)

    async def call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run the plain function ``fn(*args, **kwargs)`` on the thread (migrations, close)."""
        if self._executor is None:
            # after close() a call starts a new thread, as a disposed engine reconnects
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relaybot-sqlite")
        job = functools.partial(contextvars.copy_context().run, self._enter, fn, *args, **kwargs)
        future = self._executor.submit(job)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # the call goes on (or never starts); if it fails, nobody is left to be told
            future.add_done_callback(_log_orphan_failure)
            raise

    def _enter(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        self._thread_id = threading.get_ident()
        return fn(*args, **kwargs)

    async def close(self) -> None:
        """Dispose the engine's connections on the thread, then end the thread. Idempotent."""
        executor = self._executor
        if executor is None:
            return
        try:
            await self.call(self.engine.dispose)
        finally:
            self._executor = None
            executor.shutdown(wait=False)  # its queue is empty: the thread ends at once


def _log_orphan_failure(future: Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.warning("a storage call failed after its caller was cancelled: %r", exc)


def _drive(fn: Callable[..., Coroutine[Any, Any, R]], *args: Any, **kwargs: Any) -> R:
    """Run a coroutine that never suspends to its end and return its result."""
    coro = fn(*args, **kwargs)
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError(
        f"{getattr(fn, '__qualname__', fn)} awaited something that suspends; storage code on "
        "the SQLite thread may only await the store's own connections"
    )
