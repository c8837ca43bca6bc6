"""Platform events already taken in: :meth:`EventsMixin.claim_event`.

A platform that did not see an event acknowledged delivers it again (Slack: at once, after a
minute, after five; the same ``event_id`` each time). The connector claims the event's key
before handling it; only the first claim wins. The claim is a row keyed by (connector, key),
inserted with ``ON CONFLICT DO NOTHING``, so two deliveries racing in two processes sharing
PostgreSQL still produce exactly one winner, and a restart forgets nothing.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from relaybot.core.storage import queries as q
from relaybot.core.storage.base import StoreBase, translated
from relaybot.core.storage.schema import seen_events, utcnow

#: claims older than this are swept (platforms re-deliver within minutes, Slack within ~5)
KEEP_EVENTS = timedelta(days=1)
#: sweep old claims once per this many claims (a cheap, bounded DELETE on the seen_at index)
_SWEEP_EVERY = 500


class EventsMixin(StoreBase):
    """Event de-duplication of :class:`~relaybot.core.storage.Store` (see the module docstring)."""

    _claims_since_sweep = 0

    @translated
    async def claim_event(self, connector: str, key: str) -> bool:
        """True when ``(connector, key)`` was not claimed before (it is now), False otherwise."""
        now = utcnow()
        sweep = self._claims_since_sweep >= _SWEEP_EVERY
        self._claims_since_sweep = 0 if sweep else self._claims_since_sweep + 1
        async with self._write() as conn:
            insert = (
                q.upsert(conn.dialect, seen_events)
                .values(connector=connector, event_key=key[:255], seen_at=now)
                .on_conflict_do_nothing(index_elements=["connector", "event_key"])
            )
            claimed = (await conn.execute(insert)).rowcount == 1
            if sweep:
                await conn.execute(sa.delete(seen_events).where(seen_events.c.seen_at < now - KEEP_EVENTS))
        return claimed
