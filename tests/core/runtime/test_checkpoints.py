"""CheckpointWriter: the checkpoints of many streaming replies go out in one write, and the
final text of a reply can never be overwritten by an older checkpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from relaybot.core.runtime.checkpoints import CheckpointWriter


class SlowStore:
    """Records each batch; each write takes ``delay`` seconds (a busy database)."""

    def __init__(self, delay: float = 0.0, fail: int = 0) -> None:
        self.delay = delay
        self.fail = fail
        self.batches: list[dict[int, str]] = []
        self.rows: dict[int, str] = {}

    async def checkpoint_texts(self, texts: Mapping[int, str]) -> int:
        await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise OSError("disk I/O error")
        self.batches.append(dict(texts))
        self.rows.update(texts)
        return len(texts)


async def test_checkpoints_of_many_replies_are_one_write():
    store = SlowStore()
    writer = CheckpointWriter(store, gap=0.05)
    for reply in range(300):
        writer.submit(reply, f"partial {reply}")
    writer.submit(7, "partial 7, newer")  # a newer checkpoint replaces the pending one
    await asyncio.sleep(0.2)
    assert len(store.batches) == 1 and len(store.batches[0]) == 300
    assert store.rows[7] == "partial 7, newer"
    await writer.aclose()


async def test_settle_waits_for_the_batch_in_flight_and_drops_the_pending_one():
    store = SlowStore(delay=0.2)
    writer = CheckpointWriter(store, gap=0.01)
    writer.submit(1, "older")
    await asyncio.sleep(0.05)  # the batch with "older" is being written now
    writer.submit(1, "newer but still partial")
    await writer.settle(1)
    # settle returned only after the write in flight finished, and nothing for reply 1 is
    # left to land after the final text the caller writes next
    assert store.batches == [{1: "older"}]
    store.rows[1] = "FINAL"
    await asyncio.sleep(0.3)
    assert store.rows[1] == "FINAL"
    await writer.aclose()


async def test_a_failed_write_is_logged_and_later_checkpoints_still_land(caplog):
    store = SlowStore(fail=1)
    writer = CheckpointWriter(store, gap=0.01)
    writer.submit(1, "lost")
    await asyncio.sleep(0.1)
    assert "checkpoint of 1 streaming reply(ies) failed" in caplog.text
    writer.submit(1, "kept")
    await writer.aclose()
    assert store.rows == {1: "kept"}
