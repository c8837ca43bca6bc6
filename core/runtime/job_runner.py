"""Running the registered :class:`~relaybot.core.contracts.jobs.Job` objects on APScheduler.

How it fits together:

* **APScheduler** (3.x, ``AsyncIOScheduler``) owns the timing: interval and cron triggers,
  coalescing of missed runs, one running instance per job in this process. Its job store is the
  in-memory one: a plugin's job is code, registered again at every start, so there is nothing
  to unpickle from the database.
* **relaybot's database** owns what must outlive the process and be shared between processes:
  one ``scheduled_jobs`` row per job (:mod:`relaybot.core.storage.job_state`) with the next
  run, the last outcome and a lease. At start-up each job is scheduled from its row's next run
  (so a daily job is not reset by a restart, and a run missed while down happens once); when
  the timer fires, the run is *claimed* with one atomic UPDATE, so with several processes on
  one database exactly one of them runs it.

Why not APScheduler's ``SQLAlchemyJobStore``: it is synchronous (it would block the event loop
on every wake-up, and need a second, synchronous PostgreSQL driver next to asyncpg), it pickles
job state into the database, creates its table outside our Alembic migrations, and APScheduler
3 documents that a job store must not be shared by several schedulers (duplicate runs) — so the
lease would be needed anyway. The row we keep is the part of a job store that matters here.

Failures never reach the bot: an exception from a job is logged, reported to the ``on_error``
hook (with ``message=None``) and recorded on the row; the job runs again at its next time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from apscheduler.executors.asyncio import AsyncIOExecutor
from pydantic import BaseModel, ConfigDict, Field

from relaybot.core.cli.config import RelaybotConfig, validate_section
from relaybot.core.contracts.errors import ConfigError, RelaybotError
from relaybot.core.contracts.jobs import Job, JobContext
from relaybot.core.contracts.redact import redact
from relaybot.core.storage import job_state

if TYPE_CHECKING:
    from relaybot.core.contracts.host import BotServices
    from relaybot.core.runtime.app import Relaybot
    from relaybot.core.storage import Store

log = logging.getLogger("relaybot.jobs")

__all__ = ["JobRunner", "PlannedJob", "plan_jobs"]


class _JobTable(BaseModel):
    """The keys of ``[jobs.NAME]`` the runner reads; the rest are the job's options."""

    model_config = ConfigDict(extra="allow")

    enabled: bool | None = None
    cron: str | None = None
    interval_seconds: float | None = Field(default=None, gt=0)


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """A registered job with its config applied: whether it runs, its trigger, its options."""

    job: Job
    plugin: str
    enabled: bool
    trigger: Any  # an APScheduler trigger
    schedule: str  # human-readable, and the key that tells a changed schedule
    options: Any

    def first_run(self, now: datetime) -> datetime | None:
        """When the job would first run if it were new at ``now``."""
        return _utc(self.trigger.get_next_fire_time(None, now))


def plan_jobs(jobs: Mapping[str, tuple[Job, str]], config: RelaybotConfig) -> dict[str, PlannedJob]:
    """Apply ``[jobs]`` / ``[jobs.NAME]`` to the registered jobs (raises ConfigError naming the key)."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    tz = ZoneInfo(config.jobs.timezone)
    source = config.source
    for key, value in (config.jobs.model_extra or {}).items():
        if not isinstance(value, dict):
            raise ConfigError(
                f"[jobs.{key}] is not a known key: remove it or check its spelling", path=source
            )
        if key not in jobs:
            log.warning("%s: [jobs.%s] names no registered job (known: %s)", source, key, ", ".join(jobs))
    planned: dict[str, PlannedJob] = {}
    for name, (job, plugin) in jobs.items():
        table: _JobTable = validate_section(_JobTable, config.jobs.table(name), source, f"jobs.{name}")
        if table.cron is not None and table.interval_seconds is not None:
            raise ConfigError(
                "give either cron or interval_seconds, not both", path=source, key=f"jobs.{name}"
            )
        enabled = job.enabled if table.enabled is None else table.enabled
        cron = table.cron if table.cron is not None or table.interval_seconds is not None else job.cron
        interval = table.interval_seconds if table.cron is None else None
        if interval is None and cron is None:
            interval = job.interval_seconds
        if cron is not None:
            try:
                trigger: Any = CronTrigger.from_crontab(cron, timezone=tz)
            except ValueError as exc:
                raise ConfigError(
                    f"job {name!r}: {cron!r} is not a five-field crontab ({exc})",
                    path=source,
                    key=f"jobs.{name}.cron",
                ) from None
            schedule = f"cron {cron} ({config.jobs.timezone})"
        else:
            assert interval is not None  # Job.__post_init__: one of the two is given
            trigger = IntervalTrigger(seconds=interval, timezone=tz)
            schedule = f"every {interval:g}s"
        raw_options = table.model_extra or {}
        options = None
        if job.options is not None:
            options = validate_section(job.options, raw_options, source, f"jobs.{name}") if enabled else None
        elif raw_options:
            key = next(iter(raw_options))
            raise ConfigError(
                f"[jobs.{name}.{key}] is not a known key: job {name!r} takes only enabled, cron, "
                "interval_seconds",
                path=source,
            )
        planned[name] = PlannedJob(job, plugin, enabled, trigger, schedule, options)
    return planned


class JobRunner:
    """Schedules the enabled jobs of one process; see the module docstring.

    ``bot`` (what a job may use) and ``on_error`` come from the app (:meth:`for_app`); a job
    sees only its :class:`~relaybot.core.contracts.jobs.JobContext`.
    """

    def __init__(
        self,
        planned: Mapping[str, PlannedJob],
        *,
        config: RelaybotConfig,
        store: Store,
        bot: BotServices,
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.planned = dict(planned)
        self._config = config
        self._store = store
        self._bot = bot
        self._on_error = on_error
        #: names this process in the lease column (host, pid and a per-start nonce)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._scheduler: Any = None
        self._next: dict[str, datetime | None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def for_app(cls, app: Relaybot, planned: Mapping[str, PlannedJob] | None = None) -> JobRunner:
        """The runner of ``app``'s registered jobs (``planned``: from :func:`plan_jobs`; no I/O)."""

        def on_error(exc: BaseException) -> None:
            app.plugins.notify("on_error", error=exc, message=None)

        return cls(
            plan_jobs(app.registrations.jobs, app.config) if planned is None else planned,
            config=app.config,
            store=app.store,
            bot=app.services,
            on_error=on_error,
        )

    # ── lifecycle ───────────────────────────────────────────────────────────────────────────

    async def load(self) -> None:
        """Read (or create) every enabled job's row: its persisted next run. The database work
        of starting, done before the connectors start so nothing waits on it afterwards."""
        self._next = {}
        if not self._config.jobs.enabled:
            return
        now = datetime.now(UTC)
        for name, planned in self.planned.items():
            if planned.enabled:
                first = planned.first_run(now)
                persisted = await self._store.run_sync(job_state.register, name, planned.schedule, first)
                self._next[name] = persisted or first

    def start(self) -> None:
        """Start the timers of the jobs :meth:`load` read (no I/O)."""
        if not self._next:
            log.debug("no scheduled jobs run in this process")
            return
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        scheduler = AsyncIOScheduler(
            timezone=ZoneInfo(self._config.jobs.timezone),
            executors={"default": _RunTimeExecutor()},
            # missed runs (the bot was down) collapse into one; the database decides who runs
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        for name, next_run in self._next.items():
            scheduler.add_job(
                self._fire, trigger=self.planned[name].trigger, args=[name], id=name, name=name,
                next_run_time=next_run,
            )  # fmt: skip
        scheduler.start()
        self._scheduler = scheduler
        log.info("scheduled jobs: %s", ", ".join(self._next))

    async def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the timers; runs still going are cancelled and recorded as interrupted."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def next_run_times(self) -> dict[str, datetime | None]:
        """This process's timers: the next run of each scheduled job (UTC)."""
        if self._scheduler is None:
            return {}
        return {job.id: _utc(job.next_run_time) for job in self._scheduler.get_jobs()}

    async def run_now(self, name: str) -> str:
        """Run job ``name`` once now, outside its schedule (it must not be running anywhere).

        Returns the outcome: ``ok``, ``failed`` or ``busy`` (another run holds the lease).
        Raises KeyError for an unknown job.
        """
        planned = self.planned[name]
        now = datetime.now(UTC)
        await self._store.run_sync(job_state.register, name, planned.schedule, planned.first_run(now))
        return await self._claim_and_run(planned, None, now)

    # ── one run ─────────────────────────────────────────────────────────────────────────────

    async def _fire(self, name: str, *, run_at: datetime | None = None) -> None:
        """APScheduler's timer went off for the run of ``name`` scheduled at ``run_at``.

        (``run_at`` always comes from :class:`_RunTimeExecutor`; its default only satisfies
        APScheduler's check of the function's signature.)
        """
        assert run_at is not None
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._claim_and_run(self.planned[name], _utc(run_at), datetime.now(UTC))

    async def _claim_and_run(self, planned: PlannedJob, run_at: datetime | None, now: datetime) -> str:
        name = planned.job.name
        lease = timedelta(seconds=self._config.jobs.lease_seconds)
        following = _utc(planned.trigger.get_next_fire_time(run_at, now)) if run_at is not None else None
        try:
            won = await self._store.run_sync(
                job_state.claim,
                name,
                run_at=run_at,
                next_run=following,
                owner=self.owner,
                lease_until=now + lease,
            )
        except Exception as exc:  # the database is down: skip this run, never the bot
            log.error("job %r: could not claim its run: %s", name, redact(str(exc)))
            self._on_error(exc)
            return "failed"
        if not won:
            log.info("job %r: the run at %s is taken by another process", name, run_at or "now")
            if run_at is not None:
                await self._follow_row(name, now)
            return "busy"
        return await self._run(planned, run_at or now)

    async def _follow_row(self, name: str, now: datetime) -> None:
        """Align this process's timer with the row after another process advanced it."""
        try:
            persisted = await self._store.run_sync(job_state.next_run, name)
        except Exception:
            return
        job = self._scheduler.get_job(name) if self._scheduler is not None else None
        if job is None or persisted is None or persisted <= now:
            return
        if _utc(job.next_run_time) != persisted:
            job.modify(next_run_time=persisted)

    async def _run(self, planned: PlannedJob, scheduled_at: datetime) -> str:
        name = planned.job.name
        ctx = JobContext(
            name=name,
            scheduled_at=scheduled_at,
            options=planned.options,
            bot=self._bot,
            log=logging.getLogger(f"relaybot.jobs.{name}"),
        )
        status, error = "ok", ""
        log.info("job %r: running (scheduled at %s)", name, scheduled_at.isoformat())
        try:
            await planned.job.run(ctx)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(name, "interrupted", "relaybot stopped during the run"))
            raise
        except Exception as exc:
            status = "failed"
            error = redact(f"{type(exc).__name__}: {exc}")
            log.error("job %r failed: %s", name, error, exc_info=not isinstance(exc, RelaybotError))
            self._on_error(exc)
        await self._release(name, status, error)
        return status

    async def _release(self, name: str, status: str, error: str) -> None:
        try:
            await self._store.run_sync(job_state.release, name, owner=self.owner, status=status, error=error)
        except Exception as exc:  # the lease expires by itself
            log.warning("job %r: could not record its outcome: %s", name, redact(str(exc)))


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


class _RunTimeExecutor(AsyncIOExecutor):  # type: ignore[misc]
    """APScheduler's asyncio executor, except that the job function is told which run it is.

    APScheduler 3 calls a job's function with its fixed ``args`` only; the claim needs the
    scheduled time (it is the key that makes a run happen once), so it is passed as ``run_at``.
    With ``coalesce`` there is one run time per submission (the latest missed one).
    """

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        task = self._eventloop.create_task(job.func(*job.args, run_at=run_times[-1]))

        def done(finished: asyncio.Future[Any]) -> None:
            self._pending_futures.discard(finished)
            # JobRunner._run reports failures itself; this only frees the instance slot
            self._run_job_success(job.id, [])

        task.add_done_callback(done)
        self._pending_futures.add(task)
