"""The ``scheduled_jobs`` rows: a job's persisted schedule, its lease and its last outcome.

Synchronous SQLAlchemy Core functions, run through :meth:`Store.run_sync
<relaybot.core.storage.Store.run_sync>` (one write transaction each, on whichever backend), so
the Store's data API stays about conversations and this module stays about jobs.

Why a run happens once across processes: every process schedules the same job from the same
row; when its timer fires, :func:`claim` runs one ``UPDATE … WHERE next_run_at <= :run AND
lease free``. The first process to commit moves ``next_run_at`` past the run and takes the
lease; any other process's UPDATE then matches no row (SQLite serialises writers with
``BEGIN IMMEDIATE``; PostgreSQL re-checks the WHERE clause on the row version the winner
committed), so it skips the run. The lease also keeps one process from starting a run while
another process's run of the same job is still going — the running process renews it
(:func:`renew`) every third of ``lease_seconds`` for as long as the run lasts — and it expires
(``lease_seconds``) so a crashed process does not block the job for ever.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from relaybot.core.storage.schema import scheduled_jobs, utcnow

__all__ = ["JobState", "claim", "list_states", "register", "release", "renew"]


@dataclass(frozen=True, slots=True)
class JobState:
    """One job's row: what ``relaybot jobs`` shows."""

    name: str
    schedule: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_finished_at: datetime | None
    last_status: str
    last_error: str
    lease_owner: str
    lease_until: datetime | None


def register(conn: sa.Connection, name: str, schedule: str, first_run: datetime | None) -> datetime | None:
    """Make sure ``name`` has a row; return its persisted next run.

    A new job, one whose ``schedule`` changed (config edited) or one without a next run gets
    ``first_run``; an existing one keeps its next run — that is what makes a schedule survive
    restarts, and a run missed while nothing was running happen (once) at start-up.
    """
    now = utcnow()
    select = sa.select(scheduled_jobs.c.schedule, scheduled_jobs.c.next_run_at).where(
        scheduled_jobs.c.name == name
    )
    row = conn.execute(select).first()
    if row is None:
        # a concurrent starter may insert the same job: the loser's insert does nothing
        conn.execute(
            _insert_ignore(conn).values(name=name, schedule=schedule, next_run_at=first_run, updated_at=now)
        )
        row = conn.execute(select).one()
        if row.schedule == schedule:
            return row.next_run_at
    if row.schedule != schedule or row.next_run_at is None:
        conn.execute(
            sa.update(scheduled_jobs)
            .where(scheduled_jobs.c.name == name)
            .values(schedule=schedule, next_run_at=first_run, updated_at=now)
        )
        return first_run
    return row.next_run_at


def claim(
    conn: sa.Connection,
    name: str,
    *,
    run_at: datetime | None,
    next_run: datetime | None,
    owner: str,
    lease_until: datetime,
) -> bool:
    """Take the run of ``name`` scheduled at ``run_at``; True for exactly one process.

    ``run_at=None`` is a manual run (:meth:`JobRunner.run_now`): only the lease is checked and
    the schedule is left alone. On success the row's next run becomes ``next_run`` and the
    lease belongs to ``owner`` until ``lease_until``.
    """
    now = utcnow()
    lease_free = sa.or_(scheduled_jobs.c.lease_until.is_(None), scheduled_jobs.c.lease_until < now)
    values: dict[str, object] = {
        "lease_owner": owner,
        "lease_until": lease_until,
        "last_status": "running",
        "last_run_at": run_at or now,
        "updated_at": now,
    }
    stmt = sa.update(scheduled_jobs).where(scheduled_jobs.c.name == name, lease_free)
    if run_at is not None:
        values["next_run_at"] = next_run
        stmt = stmt.where(scheduled_jobs.c.next_run_at.is_not(None), scheduled_jobs.c.next_run_at <= run_at)
    return conn.execute(stmt.values(**values)).rowcount == 1


def renew(conn: sa.Connection, name: str, *, owner: str, lease_until: datetime) -> bool:
    """Extend ``owner``'s lease on ``name`` to ``lease_until`` (a run still going); False when
    ``owner`` no longer holds it (it expired and another process took the job)."""
    result = conn.execute(
        sa.update(scheduled_jobs)
        .where(scheduled_jobs.c.name == name, scheduled_jobs.c.lease_owner == owner)
        .values(lease_until=lease_until, updated_at=utcnow())
    )
    return bool(result.rowcount == 1)


def release(conn: sa.Connection, name: str, *, owner: str, status: str, error: str = "") -> None:
    """End ``owner``'s lease on ``name`` and record the outcome (``ok``, ``failed``, ``interrupted``)."""
    now = utcnow()
    conn.execute(
        sa.update(scheduled_jobs)
        .where(scheduled_jobs.c.name == name, scheduled_jobs.c.lease_owner == owner)
        .values(
            lease_owner="",
            lease_until=None,
            last_status=status,
            last_error=error[:2000],
            last_finished_at=now,
            updated_at=now,
        )
    )


def next_run(conn: sa.Connection, name: str) -> datetime | None:
    """The persisted next run of ``name`` (after another process advanced it)."""
    return conn.execute(sa.select(scheduled_jobs.c.next_run_at).where(scheduled_jobs.c.name == name)).scalar()


def list_states(conn: sa.Connection) -> dict[str, JobState]:
    """Every job row, by name."""
    rows = conn.execute(sa.select(scheduled_jobs)).all()
    return {
        row.name: JobState(
            name=row.name,
            schedule=row.schedule,
            next_run_at=row.next_run_at,
            last_run_at=row.last_run_at,
            last_finished_at=row.last_finished_at,
            last_status=row.last_status,
            last_error=row.last_error,
            lease_owner=row.lease_owner,
            lease_until=row.lease_until,
        )
        for row in rows
    }


def set_next_run(conn: sa.Connection, name: str, when: datetime | None) -> None:
    """Move a job's next run (tests and admins: e.g. run a daily job at the next start)."""
    conn.execute(
        sa.update(scheduled_jobs)
        .where(scheduled_jobs.c.name == name)
        .values(next_run_at=when, updated_at=utcnow())
    )


def _insert_ignore(conn: sa.Connection) -> sa.Insert:
    from relaybot.core.storage import queries as q

    return q.upsert(conn.dialect, scheduled_jobs).on_conflict_do_nothing(index_elements=["name"])
