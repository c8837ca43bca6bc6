"""Spend records and budgets in the database: reserve atomically, settle, sum, override.

A provider call is one row of ``spend_records``: inserted as *reserved* with its worst case
(tokens and micro-dollars) and an expiry, then updated to *settled* with the real numbers —
and, in the same transaction, added to ``spend_buckets``: one row per budget scope (the user,
the chat, the platform, the provider, everything) and UTC hour. A budget's spend is the sum of
its scope's buckets since its period began plus its scope's reservations that have not
expired, read in one statement (one snapshot, so a reservation being settled meanwhile is
counted exactly once). That keeps a check proportional to the hours in the period, not to
the calls; and a crashed process's reservation simply stops counting once it expires, with
no sweeper needed for correctness.

Buckets are whole UTC hours and a period's first bucket is counted whole, so in a time zone
whose offset is not a whole hour (India, Nepal …) a day's budget also counts the spend of
the half hour before its midnight: budgets err on the safe side, never over. The same holds
for rolling windows (up to an hour more than the window is counted).

Atomicity of :meth:`SpendingStore.reserve_spend` (check every budget, insert the reservation):

* **SQLite**: the write transaction begins with ``BEGIN IMMEDIATE``, which takes the database's
  single write lock before the sums are read; every other writer, in this process or another,
  waits its turn (``busy_timeout``).
* **PostgreSQL**: each budget has a row in ``budget_locks``; the transaction locks the rows of
  the budgets it checks (``SELECT … FOR UPDATE``, in key order so two reservations never
  deadlock) before summing. Under READ COMMITTED each later statement sees what the previous
  lock holder committed, so two processes reserving the last cent serialise and exactly one
  fits. Calls that share no budget never wait for each other.

  The sums and the insert are one statement there (a data-modifying CTE inserting the
  reservation only where every budget has room, returning the sums either way), and settling
  updates the record and upserts its buckets in one statement too: per reply two round trips
  fewer than statement by statement. The lock must stay a statement of its own: a statement's
  snapshot is taken when it starts, so sums read in the statement that waited for the lock
  would miss what the previous holder committed meanwhile.

Refusals remembered for reset notices: with ``notify`` (the refused user's chat), a refusal
upserts a ``budget_notices`` row in the same transaction; the ``budget_reset_notices`` job of
the budgets plugin reads the due ones (:meth:`SpendingStore.due_budget_notices`) and claims each
by deleting it (:meth:`SpendingStore.claim_budget_notice`), so one process sends it, once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from relaybot.core.contracts.models import ChatKey
from relaybot.core.storage import queries as q
from relaybot.core.storage.base import translated
from relaybot.core.storage.schema import (
    budget_locks,
    budget_notices,
    budget_overrides,
    chats,
    messages,
    spend_buckets,
    spend_records,
    utcnow,
)

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
    (every row when ``column`` is ``None``) since ``since``; the limits are inclusive.

    ``resets_at`` is when the budget's period ends (``None``: a rolling window, ``since`` being
    the window's start) and ``label`` how a chat names it ("your daily budget"); both are only
    used to remember a refusal for a reset notice (:meth:`SpendingStore.reserve_spend`'s
    ``notify``).
    """

    key: str
    column: str | None
    value: str
    since: datetime
    token_limit: int | None = None
    micros_limit: int | None = None
    resets_at: datetime | None = None
    label: str = ""

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


@dataclass(frozen=True, slots=True)
class BudgetNotice:
    """A refusal whose user has not yet been told that the budget has room again.

    ``chat`` is where they were (last) refused, ``label`` how the budget was named there.
    ``resets_at`` is when its period resets; ``None`` for a rolling window, which is due once
    the window has room for the refused call (``needed_tokens``/``needed_micros``) again.
    ``attempts`` counts deliveries that failed so far.
    """

    user_id: str
    budget_key: str
    chat: ChatKey
    label: str
    hit_at: datetime
    resets_at: datetime | None
    scope_column: str | None = None
    scope_value: str = ""
    window_seconds: int | None = None
    token_limit: int | None = None
    micros_limit: int | None = None
    needed_tokens: int = 0
    needed_micros: int | None = None
    attempts: int = 0

    @property
    def rolling(self) -> bool:
        return self.resets_at is None


def hour_of(when: datetime) -> datetime:
    """The UTC hour (bucket) ``when`` falls in."""
    return when.replace(minute=0, second=0, microsecond=0)


def scope_keys(draft: SpendDraft) -> list[str]:
    """The budget keys a record counts for (as the budgets plugin names them), sorted."""
    keys = ["global"]
    for scope, value in (
        ("user", draft.user_id),
        ("chat", draft.chat),
        ("platform", draft.platform),
        ("provider", draft.provider),
    ):
        if value:
            keys.append(f"{scope}:{value}")
    return sorted(keys)


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
        self,
        draft: SpendDraft,
        checks: Sequence[BudgetCheck],
        *,
        ttl: float,
        now: datetime | None = None,
        notify: ChatKey | None = None,
    ) -> int | Shortfall:
        """Insert ``draft`` as a reservation expiring after ``ttl`` seconds if it fits every
        check, atomically (see the module docstring); return its id, or the first
        :class:`Shortfall` (no reservation is written then).

        ``notify``: the chat of the user refused (``draft.user_id``). A refusal then also
        remembers, in the same transaction, to tell them in that chat once the budget that
        refused has room again (a :class:`BudgetNotice`; one per user and budget, the latest
        refusal's chat and period winning) — unless the call could never fit that budget.
        """
        now = now or utcnow()
        keys = sorted({c.key for c in checks})
        if keys and self.backend == "postgresql":  # type: ignore[attr-defined]
            await self._ensure_lock_rows(keys)
        expires = now + timedelta(seconds=ttl)
        async with self._write() as conn:  # type: ignore[attr-defined]
            folded = (
                conn.dialect.name == "postgresql"
                and bool(checks)
                and (draft.cost_micros is not None or all(c.micros_limit is None for c in checks))
            )
            if keys and conn.dialect.name == "postgresql":
                await conn.execute(_LOCK, {"keys": keys})
            if folded:
                # PostgreSQL: the sums and the insert if it fits in one statement (one round trip
                # less); its snapshot is taken after the locks are held, like the sums' alone
                sums, record_id = await _sum_and_reserve(conn, draft, checks, now, expires)
                if record_id is not None:
                    return record_id
            else:
                sums = await self._sums(conn, checks, now)
            for check, (tokens, micros) in zip(checks, sums, strict=True):
                over_tokens = check.token_limit is not None and tokens + draft.tokens > check.token_limit
                over_money = check.micros_limit is not None and (
                    draft.cost_micros is None or micros + draft.cost_micros > check.micros_limit
                )
                if over_tokens or over_money:
                    oldest = await conn.scalar(
                        sa.select(sa.func.min(spend_buckets.c.hour)).where(
                            spend_buckets.c.scope_key == check.key,
                            spend_buckets.c.hour >= hour_of(check.since),
                            sa.or_(spend_buckets.c.tokens > 0, spend_buckets.c.cost_micros > 0),
                        )
                    )
                    if notify is not None and draft.user_id and _could_fit(draft, check):
                        await _remember_refusal(conn, draft, check, notify, now)
                    return Shortfall(check, tokens, micros, oldest)
            # the folded statement decided "no room" by the same comparisons as above
            assert not folded, "the reservation statement and the checks disagree"
            result = await conn.execute(
                sa.insert(spend_records).values(
                    **_columns(draft), created_at=now, state="reserved", expires_at=expires
                )
            )
            return int(result.inserted_primary_key[0])

    @contextlib.asynccontextmanager
    async def _lookup(self) -> AsyncIterator[AsyncConnection]:
        """A connection for a read of one statement (every reservation reads the overrides).
        On PostgreSQL it runs without BEGIN and ROLLBACK (autocommit): a single statement is
        its own snapshot either way, and the two round trips were half of the read's cost."""
        async with self._read() as conn:  # type: ignore[attr-defined]
            if conn.dialect.name == "postgresql":
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

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

    async def _sums(
        self, conn: AsyncConnection, checks: Sequence[BudgetCheck], now: datetime
    ) -> list[tuple[int, int]]:
        """``(tokens, micro-dollars)`` of every check, in one statement (one round trip):
        one pair of ``SUM(...) FILTER (WHERE scope)`` per check over the union of the scopes."""
        if not checks:
            return []
        row = (await conn.execute(_sums_statement(_columns_of(checks)), _sums_params(checks, now))).one()
        return _pairs(row, len(checks))

    @translated
    async def settle_spend(self, record_id: int, draft: SpendDraft) -> None:
        """Replace reservation ``record_id`` by the real numbers in ``draft`` and add them to
        the buckets of the hour it was reserved in (it counts for good now, also when it had
        expired). Settling twice changes nothing the second time."""
        async with self._write() as conn:  # type: ignore[attr-defined]
            if conn.dialect.name == "postgresql" and (draft.tokens or draft.cost_micros):
                # one statement (one round trip): the update and, from the row it settled, the
                # buckets' upsert — nothing is added when it was settled already
                params = _columns(draft) | {
                    "record_id": record_id,
                    "keys": scope_keys(draft),
                    "bucket_tokens": draft.tokens,
                    "bucket_micros": draft.cost_micros or 0,
                }
                await conn.execute(_SETTLE, params)
                return
            created = await conn.scalar(
                sa.update(spend_records)
                .where(spend_records.c.id == record_id, spend_records.c.state == "reserved")
                .values(**_columns(draft), state="settled", expires_at=None)
                .returning(spend_records.c.created_at)
            )
            if created is not None:
                await self._add_to_buckets(conn, draft, created)

    @translated
    async def record_spend(self, draft: SpendDraft, *, now: datetime | None = None) -> int:
        """Insert a settled record directly (a call no budget applied to) and count it."""
        now = now or utcnow()
        async with self._write() as conn:  # type: ignore[attr-defined]
            result = await conn.execute(
                sa.insert(spend_records).values(
                    **_columns(draft), created_at=now, state="settled", expires_at=None
                )
            )
            await self._add_to_buckets(conn, draft, now)
            return int(result.inserted_primary_key[0])

    async def _add_to_buckets(self, conn: AsyncConnection, draft: SpendDraft, when: datetime) -> None:
        """One upsert adding ``draft`` to each of its scopes' bucket for ``when``'s hour (rows in
        key order: concurrent settles lock them in the same order, so they never deadlock)."""
        if not draft.tokens and not draft.cost_micros:
            return
        hour = hour_of(when)
        insert = q.upsert(conn.dialect, spend_buckets).values(
            [
                {
                    "scope_key": key,
                    "hour": hour,
                    "tokens": draft.tokens,
                    "cost_micros": draft.cost_micros or 0,
                }
                for key in scope_keys(draft)
            ]
        )
        await conn.execute(
            insert.on_conflict_do_update(
                index_elements=["scope_key", "hour"],
                set_={
                    "tokens": spend_buckets.c.tokens + insert.excluded.tokens,
                    "cost_micros": spend_buckets.c.cost_micros + insert.excluded.cost_micros,
                },
            )
        )

    @translated
    async def spent(
        self, checks: Sequence[BudgetCheck], *, now: datetime | None = None
    ) -> list[tuple[int, int]]:
        """``(tokens, micro-dollars)`` spent (reservations included) for each check."""
        now = now or utcnow()
        async with self._read() as conn:  # type: ignore[attr-defined]
            return await self._sums(conn, checks, now)

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

    @translated
    async def usage_rows(self, *, since: datetime) -> list[tuple[str, str, str, str, int, int, int]]:
        """Replies' stored usage since ``since``, summed per platform, chat, user and model:
        ``(platform, chat, user id, model, input tokens, output tokens, replies)`` — what
        usage reports price (every reply has its usage stored, budgets or not)."""
        stmt = (
            sa.select(
                chats.c.platform,
                chats.c.chat,
                messages.c.user_id,
                messages.c.model,
                sa.func.coalesce(sa.func.sum(messages.c.input_tokens), 0),
                sa.func.coalesce(sa.func.sum(messages.c.output_tokens), 0),
                sa.func.count(),
            )
            .select_from(messages.join(chats, chats.c.id == messages.c.chat_id))
            .where(
                messages.c.created_at >= since,
                messages.c.input_tokens.is_not(None) | messages.c.output_tokens.is_not(None),
            )
            .group_by(chats.c.platform, chats.c.chat, messages.c.user_id, messages.c.model)
        )
        async with self._read() as conn:  # type: ignore[attr-defined]
            return [
                (str(p), str(c), str(u), str(m), int(i), int(o), int(n))
                for p, c, u, m, i, o, n in (await conn.execute(stmt)).all()
            ]

    # -- reset notices ------------------------------------------------------------------------

    @translated
    async def due_budget_notices(
        self, *, now: datetime | None = None, limit: int = 200
    ) -> list[BudgetNotice]:
        """Remembered refusals whose budget has room again at ``now``, oldest first: calendar
        periods that have reset, rolling windows with room for the refused call again."""
        now = now or utcnow()
        stmt = (
            sa.select(budget_notices)
            .where(sa.or_(budget_notices.c.resets_at <= now, budget_notices.c.resets_at.is_(None)))
            .order_by(budget_notices.c.hit_at)
            .limit(limit)
        )
        async with self._read() as conn:  # type: ignore[attr-defined]
            found = [_notice(row) for row in (await conn.execute(stmt)).all()]
            due = []
            for notice in found:
                if not notice.rolling or await self._has_room(conn, notice, now):
                    due.append(notice)
            return due

    async def _has_room(self, conn: AsyncConnection, notice: BudgetNotice, now: datetime) -> bool:
        """Whether a rolling window has room for the call it refused, at ``now``."""
        check = BudgetCheck(
            key=notice.budget_key,
            column=notice.scope_column,
            value=notice.scope_value,
            since=now - timedelta(seconds=notice.window_seconds or 0),
        )
        ((tokens, micros),) = await self._sums(conn, [check], now)
        if notice.token_limit is not None and tokens + notice.needed_tokens > notice.token_limit:
            return False
        return notice.micros_limit is None or micros + (notice.needed_micros or 0) <= notice.micros_limit

    @translated
    async def claim_budget_notice(self, notice: BudgetNotice) -> bool:
        """Take ``notice`` for sending: True for exactly one caller, across processes; False
        when another took it or the user was refused again since (a newer notice replaced it)."""
        async with self._write() as conn:  # type: ignore[attr-defined]
            result = await conn.execute(
                sa.delete(budget_notices).where(
                    budget_notices.c.user_id == notice.user_id,
                    budget_notices.c.budget_key == notice.budget_key,
                    budget_notices.c.hit_at == notice.hit_at,
                )
            )
            return bool(result.rowcount == 1)

    @translated
    async def restore_budget_notice(self, notice: BudgetNotice, *, count: bool = True) -> None:
        """Give back a claimed notice that could not be delivered, with one more failed
        attempt counted when ``count`` (unless the user was refused again meanwhile: the
        newer notice stays)."""
        async with self._write() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                q.upsert(conn.dialect, budget_notices)
                .values(**_notice_columns(notice), attempts=notice.attempts + int(count))
                .on_conflict_do_nothing(index_elements=["user_id", "budget_key"])
            )

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
        async with self._lookup() as conn:
            rows = (await conn.execute(sa.select(budget_overrides).where(wanted))).all()
        return {(r.scope, r.subject): Override(**r._mapping) for r in rows}


#: the sums statement per tuple of scope columns, built once (building SQL costs more CPU than
#: running it); bind parameters key_N / hour_N / since_N / value_N per check, hour_min,
#: since_min and now
_SUMS: dict[tuple[str | None, ...], Any] = {}


def _sums_statement(columns: tuple[str | None, ...]) -> Any:
    """``SELECT`` of two one-row aggregates joined: per check, the settled tokens and
    micro-dollars of its buckets, then those of its live reservations (one snapshot)."""
    stmt = _SUMS.get(columns)
    if stmt is not None:
        return stmt
    b, r = spend_buckets.c, spend_records.c
    settled = []
    reserved = []
    for i, column in enumerate(columns):
        in_bucket = sa.and_(b.scope_key == sa.bindparam(f"key_{i}"), b.hour >= sa.bindparam(f"hour_{i}"))
        settled.append(sa.func.coalesce(sa.func.sum(b.tokens).filter(in_bucket), 0).label(f"st{i}"))
        settled.append(sa.func.coalesce(sa.func.sum(b.cost_micros).filter(in_bucket), 0).label(f"sm{i}"))
        scope = [r.created_at >= sa.bindparam(f"since_{i}")]
        if column is not None:
            scope.append(r[column] == sa.bindparam(f"value_{i}"))
        reserved.append(sa.func.coalesce(sa.func.sum(r.tokens).filter(sa.and_(*scope)), 0).label(f"rt{i}"))
        reserved.append(
            sa.func.coalesce(sa.func.sum(r.cost_micros).filter(sa.and_(*scope)), 0).label(f"rm{i}")
        )
    buckets = (
        sa.select(*settled)
        .where(
            b.scope_key.in_([sa.bindparam(f"key_{i}") for i in range(len(columns))]),
            b.hour >= sa.bindparam("hour_min"),
        )
        .subquery("settled")
    )
    live = (
        sa.select(*reserved)
        .where(
            # a literal, so PostgreSQL can use the partial index on live reservations
            sa.text("spend_records.state = 'reserved'"),
            r.expires_at > sa.bindparam("now"),
            r.created_at >= sa.bindparam("since_min"),
        )
        .subquery("reserved")
    )
    stmt = _SUMS[columns] = sa.select(*buckets.c, *live.c).select_from(buckets.join(live, sa.true()))
    return stmt


def _could_fit(draft: SpendDraft, check: BudgetCheck) -> bool:
    """Whether ``draft`` fits ``check``'s budget at all (with nothing spent): if not, no reset
    gives it room, and a notice saying so would be wrong."""
    if check.token_limit is not None and draft.tokens > check.token_limit:
        return False
    if check.micros_limit is not None and (
        draft.cost_micros is None or draft.cost_micros > check.micros_limit
    ):
        return False
    return True


async def _remember_refusal(
    conn: AsyncConnection, draft: SpendDraft, check: BudgetCheck, chat: ChatKey, now: datetime
) -> None:
    """Upsert the :class:`BudgetNotice` of ``draft.user_id`` refused by ``check`` in ``chat``."""
    notice = BudgetNotice(
        user_id=draft.user_id,
        budget_key=check.key,
        chat=chat,
        label=(check.label or check.key)[:255],
        hit_at=now,
        resets_at=check.resets_at,
        scope_column=check.column,
        scope_value=check.value,
        window_seconds=None if check.resets_at is not None else round((now - check.since).total_seconds()),
        token_limit=check.token_limit,
        micros_limit=check.micros_limit,
        needed_tokens=draft.tokens,
        needed_micros=draft.cost_micros,
    )
    values = _notice_columns(notice)
    await conn.execute(
        q.upsert(conn.dialect, budget_notices)
        .values(**values, attempts=0)
        .on_conflict_do_update(
            index_elements=["user_id", "budget_key"],
            set_={k: v for k, v in values.items() if k not in ("user_id", "budget_key")} | {"attempts": 0},
        )
    )


def _notice_columns(notice: BudgetNotice) -> dict[str, Any]:
    return {
        "user_id": notice.user_id,
        "budget_key": notice.budget_key,
        "platform": notice.chat.platform,
        "chat": notice.chat.chat,
        "thread": notice.chat.thread or "",
        "label": notice.label,
        "hit_at": notice.hit_at,
        "resets_at": notice.resets_at,
        "scope_column": notice.scope_column,
        "scope_value": notice.scope_value,
        "window_seconds": notice.window_seconds,
        "token_limit": notice.token_limit,
        "micros_limit": notice.micros_limit,
        "needed_tokens": notice.needed_tokens,
        "needed_micros": notice.needed_micros,
    }


def _notice(row: Any) -> BudgetNotice:
    return BudgetNotice(
        user_id=row.user_id,
        budget_key=row.budget_key,
        chat=ChatKey(row.platform, row.chat, row.thread or None),
        label=row.label,
        hit_at=row.hit_at,
        resets_at=row.resets_at,
        scope_column=row.scope_column,
        scope_value=row.scope_value,
        window_seconds=row.window_seconds,
        token_limit=row.token_limit,
        micros_limit=row.micros_limit,
        needed_tokens=row.needed_tokens,
        needed_micros=row.needed_micros,
        attempts=row.attempts,
    )


def _columns_of(checks: Sequence[BudgetCheck]) -> tuple[str | None, ...]:
    return tuple(c.column for c in checks)


def _sums_params(checks: Sequence[BudgetCheck], now: datetime) -> dict[str, Any]:
    """The bind parameters of :func:`_sums_statement` for ``checks`` at ``now``."""
    since_min = min(c.since for c in checks)
    params: dict[str, Any] = {"now": now, "since_min": since_min, "hour_min": hour_of(since_min)}
    for i, check in enumerate(checks):
        params[f"since_{i}"] = check.since
        params[f"hour_{i}"] = hour_of(check.since)
        params[f"key_{i}"] = check.key
        if check.column is not None:
            params[f"value_{i}"] = check.value
    return params


def _pairs(row: Any, n: int) -> list[tuple[int, int]]:
    """``(tokens, micros)`` per check from a sums row: settled (tokens, micros) per check from
    the buckets come first, then the reserved ones."""
    return [
        (int(row[2 * i]) + int(row[2 * n + 2 * i]), int(row[2 * i + 1]) + int(row[2 * n + 2 * i + 1]))
        for i in range(n)
    ]


#: the budgets' lock rows, locked in key order (so two reservations never deadlock)
_LOCK = (
    sa.select(budget_locks.c.key)
    .where(budget_locks.c.key.in_(sa.bindparam("keys", expanding=True)))
    .order_by(budget_locks.c.key)
    .with_for_update()
)

#: the reservation columns the folded statement inserts, each from a ``v_NAME`` parameter
_RESERVATION_COLUMNS = (
    "platform", "chat", "user_id", "provider", "model", "kind", "tokens", "cost_micros",
    "input_tokens", "cached_input_tokens", "output_tokens", "images", "estimated",
    "created_at", "state", "expires_at",
)  # fmt: skip

_RESERVE: dict[tuple[str | None, ...], Any] = {}


def _reserve_statement(columns: tuple[str | None, ...]) -> Any:
    """PostgreSQL: the sums of :func:`_sums_statement` and, in the same statement, the insert
    of the reservation when it fits every check (a data-modifying CTE)::

        WITH sums AS (…), ins AS (INSERT INTO spend_records … SELECT … FROM sums
                                  WHERE <fits every check> RETURNING id)
        SELECT sums.*, (SELECT id FROM ins) FROM sums

    "Fits" is the comparison :meth:`SpendingStore.reserve_spend` makes: for each check
    ``spent + this <= limit`` for tokens and for micro-dollars (``limit_t_N``/``limit_m_N``,
    NULL: no limit). Built once per tuple of scope columns.
    """
    stmt = _RESERVE.get(columns)
    if stmt is not None:
        return stmt
    sums = _sums_statement(columns).cte("sums")
    tokens = sa.bindparam("v_tokens", type_=sa.BigInteger())
    micros = sa.bindparam("v_cost_micros", type_=sa.BigInteger())
    fits = []
    for i in range(len(columns)):
        token_limit = sa.bindparam(f"limit_t_{i}", type_=sa.BigInteger())
        micros_limit = sa.bindparam(f"limit_m_{i}", type_=sa.BigInteger())
        spent_tokens = sums.c[f"st{i}"] + sums.c[f"rt{i}"]
        spent_micros = sums.c[f"sm{i}"] + sums.c[f"rm{i}"]
        fits.append(sa.or_(token_limit.is_(None), spent_tokens + tokens <= token_limit))
        fits.append(sa.or_(micros_limit.is_(None), spent_micros + micros <= micros_limit))
    values = [
        tokens if name == "tokens" else micros if name == "cost_micros" else
        sa.bindparam(f"v_{name}", type_=spend_records.c[name].type)
        for name in _RESERVATION_COLUMNS
    ]  # fmt: skip
    inserted = (
        sa.insert(spend_records)
        .from_select(list(_RESERVATION_COLUMNS), sa.select(*values).select_from(sums).where(*fits))
        .returning(spend_records.c.id)
        .cte("ins")
    )
    stmt = _RESERVE[columns] = sa.select(
        *sums.c, sa.select(inserted.c.id).scalar_subquery().label("reserved_id")
    )
    return stmt


#: PostgreSQL: settle a reservation and add it to its scopes' buckets of the hour it was
#: reserved in, in one statement; the bucket rows are upserted in key order (concurrent settles
#: lock them in the same order, so they never deadlock)
_SETTLE = sa.text(
    """
    WITH settled AS (
        UPDATE spend_records SET
            platform = :platform, chat = :chat, user_id = :user_id, provider = :provider,
            model = :model, kind = :kind, tokens = :tokens, cost_micros = :cost_micros,
            input_tokens = :input_tokens, cached_input_tokens = :cached_input_tokens,
            output_tokens = :output_tokens, images = :images, estimated = :estimated,
            state = 'settled', expires_at = NULL
        WHERE id = :record_id AND state = 'reserved'
        RETURNING created_at
    )
    INSERT INTO spend_buckets (scope_key, hour, tokens, cost_micros)
    SELECT k.key, date_trunc('hour', settled.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC',
           :bucket_tokens, :bucket_micros
    FROM settled CROSS JOIN unnest(CAST(:keys AS VARCHAR[])) AS k(key)
    ORDER BY k.key
    ON CONFLICT (scope_key, hour) DO UPDATE SET
        tokens = spend_buckets.tokens + excluded.tokens,
        cost_micros = spend_buckets.cost_micros + excluded.cost_micros
    """
).bindparams(
    sa.bindparam("keys", type_=postgresql.ARRAY(sa.String())),
    sa.bindparam("record_id", type_=sa.BigInteger()),
    sa.bindparam("bucket_tokens", type_=sa.BigInteger()),
    sa.bindparam("bucket_micros", type_=sa.BigInteger()),
)


async def _sum_and_reserve(
    conn: AsyncConnection,
    draft: SpendDraft,
    checks: Sequence[BudgetCheck],
    now: datetime,
    expires: datetime,
) -> tuple[list[tuple[int, int]], int | None]:
    """Run :func:`_reserve_statement`: every check's ``(tokens, micros)`` spent before this
    reservation, and its id (``None``: it did not fit, nothing was inserted)."""
    params = _sums_params(checks, now)
    columns = _columns(draft) | {"created_at": now, "state": "reserved", "expires_at": expires}
    params.update({f"v_{name}": value for name, value in columns.items()})
    for i, check in enumerate(checks):
        params[f"limit_t_{i}"] = check.token_limit
        params[f"limit_m_{i}"] = check.micros_limit
    row = (await conn.execute(_reserve_statement(_columns_of(checks)), params)).one()
    record_id = row[-1]
    return _pairs(row, len(checks)), None if record_id is None else int(record_id)


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
