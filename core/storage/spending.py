"""Spend records and budgets in the database: reserve atomically, settle, sum, override.

A provider call is one row of ``spend_records``: inserted as *reserved* with its worst case
(tokens and micro-dollars) and an expiry, then updated to *settled* with the real numbers. A
budget's spend is the sum of its scope's rows in its period, counting settled rows and
reservations that have not expired — so a crashed process's reservation simply stops counting
once it expires, with no sweeper needed for correctness.

Atomicity of :meth:`SpendingStore.reserve_spend` (check every budget, insert the reservation):

* **SQLite**: the write transaction begins with ``BEGIN IMMEDIATE``, which takes the database's
  single write lock before the sums are read; every other writer, in this process or another,
  waits its turn (``busy_timeout``).
* **PostgreSQL**: each budget has a row in ``budget_locks``; the transaction locks the rows of
  the budgets it checks (``SELECT … FOR UPDATE``, in key order so two reservations never
  deadlock) before summing. Under READ COMMITTED each later statement sees what the previous
  lock holder committed, so two processes reserving the last cent serialise and exactly one
  fits. Calls that share no budget never wait for each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from relaybot.core.storage import queries as q
from relaybot.core.storage.base import translated
from relaybot.core.storage.schema import budget_locks, budget_overrides, spend_records, utcnow

#: the ``spend_records`` columns a budget scope can filter on
SCOPE_COLUMNS = frozenset({"user_id", "chat", "platform", "provider"})


@dataclass(frozen=True, slots=True)
class SpendDraft:
    """The columns of a new spend record (the worst case while it is a reservation)."""

    platform: str
    chat: str
    user_id: str
    provider: str
    model: str
    kind: str
    tokens: int
    cost_micros: int | None
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """One budget a reservation must fit: its spend is the rows where ``column == value``
    (every row when ``column`` is ``None``) since ``since``; the limits are inclusive."""

    key: str
    column: str | None
    value: str
    since: datetime
    token_limit: int | None = None
    micros_limit: int | None = None

    def __post_init__(self) -> None:
        if self.column is not None and self.column not in SCOPE_COLUMNS:
            raise ValueError(f"unknown budget column {self.column!r}")


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Why a reservation did not fit: the first budget without room and what it had spent."""

    check: BudgetCheck
    spent_tokens: int
    spent_micros: int
    oldest: datetime | None


@dataclass(frozen=True, slots=True)
class Override:
    """A budget an admin set for a user or chat (``usd_micros``/``tokens``: ``None`` = no limit)."""

    scope: str
    subject: str
    tokens: int | None
    usd_micros: int | None
    period: str
    window_seconds: int | None
    updated_at: datetime
    updated_by: str


def _live(now: datetime) -> Any:
    """Rows that count: settled, or reserved and not expired yet."""
    return sa.or_(spend_records.c.state == "settled", spend_records.c.expires_at > now)


def _scope(check: BudgetCheck) -> list[Any]:
    where = [spend_records.c.created_at >= check.since]
    if check.column is not None:
        where.append(spend_records.c[check.column] == check.value)
    return where


class SpendingStore:
    """The spending half of :class:`~relaybot.core.storage.Store` (a mixin over StoreBase)."""

    _lock_keys: set[str]

    @translated
    async def reserve_spend(
        self, draft: SpendDraft, checks: Sequence[BudgetCheck], *, ttl: float, now: datetime | None = None
    ) -> int | Shortfall:
        """Insert ``draft`` as a reservation expiring after ``ttl`` seconds if it fits every
        check, atomically (see the module docstring); return its id, or the first
        :class:`Shortfall` (nothing is written then)."""
        now = now or utcnow()
        keys = sorted({c.key for c in checks})
        if keys and self.backend == "postgresql":  # type: ignore[attr-defined]
            await self._ensure_lock_rows(keys)
        async with self._write() as conn:  # type: ignore[attr-defined]
            if keys and conn.dialect.name == "postgresql":
                await conn.execute(
                    sa.select(budget_locks.c.key)
                    .where(budget_locks.c.key.in_(keys))
                    .order_by(budget_locks.c.key)
                    .with_for_update()
                )
            for check in checks:
                tokens, micros = await self._spent(conn, check, now)
                over_tokens = check.token_limit is not None and tokens + draft.tokens > check.token_limit
                over_money = check.micros_limit is not None and (
                    draft.cost_micros is None or micros + draft.cost_micros > check.micros_limit
                )
                if over_tokens or over_money:
                    oldest = await conn.scalar(
                        sa.select(sa.func.min(spend_records.c.created_at)).where(*_scope(check), _live(now))
                    )
                    return Shortfall(check, tokens, micros, oldest)
            result = await conn.execute(
                sa.insert(spend_records).values(
                    **_columns(draft),
                    created_at=now,
                    state="reserved",
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
            return int(result.inserted_primary_key[0])

    async def _ensure_lock_rows(self, keys: list[str]) -> None:
        """Create missing ``budget_locks`` rows in their own committed transaction (so the
        reservation's transaction only ever locks existing rows, in key order)."""
        missing = [k for k in keys if k not in self._lock_keys]
        if not missing:
            return
        async with self._write() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                q.upsert(conn.dialect, budget_locks)
                .values([{"key": k} for k in missing])
                .on_conflict_do_nothing(index_elements=["key"])
            )
        self._lock_keys.update(missing)

    async def _spent(self, conn: AsyncConnection, check: BudgetCheck, now: datetime) -> tuple[int, int]:
        row = (
            await conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(spend_records.c.tokens), 0),
                    sa.func.coalesce(sa.func.sum(spend_records.c.cost_micros), 0),
                ).where(*_scope(check), _live(now))
            )
        ).one()
        return int(row[0]), int(row[1])

    @translated
    async def settle_spend(self, record_id: int, draft: SpendDraft) -> None:
        """Replace reservation ``record_id`` by the real numbers in ``draft`` (it counts for
        good now, also when it had expired)."""
        async with self._write() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                sa.update(spend_records)
                .where(spend_records.c.id == record_id)
                .values(**_columns(draft), state="settled", expires_at=None)
            )

    @translated
    async def record_spend(self, draft: SpendDraft, *, now: datetime | None = None) -> int:
        """Insert a settled record directly (a call no budget applied to)."""
        async with self._write() as conn:  # type: ignore[attr-defined]
            result = await conn.execute(
                sa.insert(spend_records).values(
                    **_columns(draft), created_at=now or utcnow(), state="settled", expires_at=None
                )
            )
            return int(result.inserted_primary_key[0])

    @translated
    async def spent(
        self, checks: Sequence[BudgetCheck], *, now: datetime | None = None
    ) -> list[tuple[int, int]]:
        """``(tokens, micro-dollars)`` spent (reservations included) for each check."""
        now = now or utcnow()
        async with self._read() as conn:  # type: ignore[attr-defined]
            return [await self._spent(conn, check, now) for check in checks]

    @translated
    async def list_spend_records(self, *, since: datetime | None = None) -> list[dict[str, Any]]:
        """Every spend record (since ``since``), oldest first, as dicts (reports and tests)."""
        stmt = sa.select(spend_records).order_by(spend_records.c.id)
        if since is not None:
            stmt = stmt.where(spend_records.c.created_at >= since)
        async with self._read() as conn:  # type: ignore[attr-defined]
            return [dict(row._mapping) for row in (await conn.execute(stmt)).all()]

    @translated
    async def top_spenders(
        self, column: str, *, since: datetime, limit: int = 5, now: datetime | None = None
    ) -> list[tuple[str, int, int, int]]:
        """The ``limit`` biggest ``column`` values (user_id, chat, model, provider) since
        ``since`` by cost then tokens: ``(value, micro-dollars, tokens, calls)``."""
        if column not in SCOPE_COLUMNS | {"model"}:
            raise ValueError(f"unknown column {column!r}")
        col = spend_records.c[column]
        micros = sa.func.coalesce(sa.func.sum(spend_records.c.cost_micros), 0)
        tokens = sa.func.coalesce(sa.func.sum(spend_records.c.tokens), 0)
        stmt = (
            sa.select(col, micros, tokens, sa.func.count())
            .where(spend_records.c.created_at >= since, _live(now or utcnow()))
            .group_by(col)
            .order_by(micros.desc(), tokens.desc(), col)
            .limit(limit)
        )
        async with self._read() as conn:  # type: ignore[attr-defined]
            return [(str(v), int(m), int(t), int(n)) for v, m, t, n in (await conn.execute(stmt)).all()]

    # -- overrides ----------------------------------------------------------------------------

    @translated
    async def set_budget_override(self, override: Override) -> None:
        """Create or replace the budget of ``(override.scope, override.subject)``."""
        values = {
            "tokens": override.tokens,
            "usd_micros": override.usd_micros,
            "period": override.period,
            "window_seconds": override.window_seconds,
            "updated_at": override.updated_at,
            "updated_by": override.updated_by,
        }
        async with self._write() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                q.upsert(conn.dialect, budget_overrides)
                .values(scope=override.scope, subject=override.subject, **values)
                .on_conflict_do_update(index_elements=["scope", "subject"], set_=values)
            )

    @translated
    async def delete_budget_override(self, scope: str, subject: str) -> bool:
        """Remove an override; ``False`` when there was none."""
        async with self._write() as conn:  # type: ignore[attr-defined]
            result = await conn.execute(
                sa.delete(budget_overrides).where(
                    budget_overrides.c.scope == scope, budget_overrides.c.subject == subject
                )
            )
            return bool(result.rowcount)

    @translated
    async def budget_overrides(self, subjects: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Override]:
        """The overrides of the given ``(scope, subject)`` pairs that exist."""
        if not subjects:
            return {}
        wanted = sa.tuple_(budget_overrides.c.scope, budget_overrides.c.subject).in_(list(subjects))
        async with self._read() as conn:  # type: ignore[attr-defined]
            rows = (await conn.execute(sa.select(budget_overrides).where(wanted))).all()
        return {(r.scope, r.subject): Override(**r._mapping) for r in rows}


def _columns(draft: SpendDraft) -> dict[str, Any]:
    return {
        "platform": draft.platform,
        "chat": draft.chat,
        "user_id": draft.user_id,
        "provider": draft.provider,
        "model": draft.model,
        "kind": draft.kind,
        "tokens": draft.tokens,
        "cost_micros": draft.cost_micros,
        "input_tokens": draft.input_tokens,
        "cached_input_tokens": draft.cached_input_tokens,
        "output_tokens": draft.output_tokens,
        "images": draft.images,
        "estimated": draft.estimated,
    }
