"""Checkpoints of streaming replies, written for all replies at once.

While a reply streams, its partial text is saved every ``[bot] checkpoint_interval`` seconds so
that a crash loses at most that much. Written one reply at a time, that is two statements and
a transaction per reply per interval: with hundreds of replies streaming it was a quarter of
the bot's CPU (``benchmarks/streaming.py`` under py-spy). :class:`CheckpointWriter` collects
the checkpoints instead and writes whatever is pending in one transaction
(:meth:`Store.checkpoint_texts`), at most every ``gap`` seconds.

Contract for the reply code: :meth:`submit` is fire-and-forget (a failed write is logged and
the next checkpoint retries); :meth:`settle` must be awaited before the reply's final write, so
an older partial text can never land after the final one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["CheckpointWriter"]

log = logging.getLogger(__name__)


class CheckpointWriter:
    """Batches reply checkpoints into one write per ``gap`` seconds (see the module docstring).

    ``store`` needs ``checkpoint_texts(mapping) -> int``.
    """

    def __init__(self, store: Any, *, gap: float = 0.5) -> None:
        self._store = store
        self._gap = gap
        self._pending: dict[int, str] = {}
        #: ids in the batch being written right now, and the event set once it is written
        self._writing: frozenset[int] = frozenset()
        self._written = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def submit(self, reply_id: int, text: str) -> None:
        """Save ``text`` as reply ``reply_id``'s partial text soon (a newer one replaces it)."""
        self._pending[reply_id] = text
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="relaybot-checkpoints")

    async def settle(self, reply_id: int) -> None:
        """Drop the reply's pending checkpoint and wait out one being written (before the
        final write of the reply)."""
        self._pending.pop(reply_id, None)
        if reply_id in self._writing:
            await self._written.wait()

    async def aclose(self) -> None:
        """Write what is pending and stop (at shutdown, after the replies were saved)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.gather(task, return_exceptions=True)
        if self._pending:
            await self._write_batch()

    async def _run(self) -> None:
        while self._pending:
            # a short gap gathers the checkpoints of many replies into one transaction;
            # a checkpoint that waits half a second longer loses nothing
            await asyncio.sleep(self._gap)
            await self._write_batch()

    async def _write_batch(self) -> None:
        batch, self._pending = self._pending, {}
        self._writing, self._written = frozenset(batch), asyncio.Event()
        written = self._written
        try:
            await self._store.checkpoint_texts(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("checkpoint of %d streaming reply(ies) failed; the next one retries", len(batch))
        finally:
            self._writing = frozenset()
            written.set()
