"""Scheduled jobs in one process: triggers, persistence across restarts, failures, config."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from relaybot import ConfigError, Job, JobContext, hookimpl, load_config
from relaybot.core.runtime.app import Relaybot
from relaybot.core.storage import Store, job_state
from relaybot.core.testing.pytest_plugin import FAST_POLICY
from relaybot.testing import RecordingConnector

TIMEOUT = 30.0


class JobPlugin:
    """Registers the given jobs and records what reaches ``on_error``."""

    def __init__(self, *jobs: Job) -> None:
        self.jobs = jobs
        self.errors: list[tuple[BaseException, Any]] = []
        self.error_seen = asyncio.Event()

    @hookimpl
    def register_jobs(self, register: Callable[[Job], None]) -> None:
        for job in self.jobs:
            register(job)

    @hookimpl
    def on_error(self, error: BaseException, message: Any) -> None:
        self.errors.append((error, message))
        self.error_seen.set()


class Recorder:
    """A job body that records each run's context and lets a test wait for the n-th run."""

    def __init__(self, fail: bool = False) -> None:
        self.runs: list[JobContext] = []
        self.fail = fail
        self._changed = asyncio.Condition()

    async def __call__(self, ctx: JobContext) -> None:
        async with self._changed:
            self.runs.append(ctx)
            self._changed.notify_all()
        if self.fail:
            raise RuntimeError("the job broke")

    async def wait_for(self, count: int) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.runs) >= count), TIMEOUT)


def _next_3am(after: datetime) -> datetime:
    day = after.replace(hour=3, minute=0, second=0, microsecond=0)
    return day if day > after else day + timedelta(days=1)


async def _states(db: str) -> dict[str, job_state.JobState]:
    async with await Store.open(db) as store:
        return await store.run_sync(job_state.list_states)


async def test_interval_job_runs_again_and_again(make_bot: Callable[..., Awaitable[Any]]) -> None:
    tick = Recorder()
    bot = await make_bot(plugins=[("p", JobPlugin(Job("tick", tick, interval_seconds=0.2)))])
    await tick.wait_for(3)
    first, second, third = (r.scheduled_at for r in tick.runs[:3])
    # scheduled times step by whole intervals (a busy machine may coalesce some into one)
    for earlier, later in ((first, second), (second, third)):
        steps = (later - earlier) / timedelta(seconds=0.2)
        assert later > earlier and abs(steps - round(steps)) < 1e-6
    assert tick.runs[0].name == "tick" and tick.runs[0].scheduled_at.tzinfo is not None
    state = (await bot.app.store.run_sync(job_state.list_states))["tick"]
    assert state.last_run_at is not None and state.last_run_at >= second


async def test_cron_run_missed_while_down_happens_once_at_start(
    make_bot: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'cron.db'}"
    nightly = Recorder()
    plugin = JobPlugin(Job("nightly", nightly, cron="0 3 * * *"))
    bot = await make_bot(plugins=[("p", plugin)], database=db)
    before = datetime.now(UTC)
    assert bot.app.jobs.next_run_times()["nightly"] == _next_3am(before)
    await bot.stop()
    assert nightly.runs == []

    # the bot was down for three nights
    async with await Store.open(db) as store:
        await store.run_sync(job_state.set_next_run, "nightly", _next_3am(before) - timedelta(days=3))
    now = datetime.now(UTC)
    await make_bot(
        plugins=[("p", plugin)], database=db, connector=RecordingConnector(policy=FAST_POLICY)
    )
    await nightly.wait_for(1)
    # coalesced: one run, for the latest missed night, and the schedule continues after it
    assert nightly.runs[0].scheduled_at == _next_3am(now) - timedelta(days=1)
    state = (await _states(db))["nightly"]
    assert state.next_run_at == _next_3am(now)
    await asyncio.sleep(0.2)  # nothing else is due: a second run would be a duplicate
    assert len(nightly.runs) == 1


async def test_schedule_survives_a_restart(make_bot: Callable[..., Awaitable[Any]], tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'hourly.db'}"
    plugin = JobPlugin(Job("hourly", Recorder(), interval_seconds=3600))
    bot = await make_bot(plugins=[("p", plugin)], database=db)
    planned = bot.app.jobs.next_run_times()["hourly"]
    await bot.stop()
    again = await make_bot(
        plugins=[("p", plugin)], database=db, connector=RecordingConnector(policy=FAST_POLICY)
    )
    # not reset to "an hour after this start"
    assert again.app.jobs.next_run_times()["hourly"] == planned


async def test_changed_schedule_in_config_replaces_the_stored_one(
    make_bot: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'changed.db'}"
    plugin = JobPlugin(Job("hourly", Recorder(), interval_seconds=3600))
    bot = await make_bot(plugins=[("p", plugin)], database=db)
    await bot.stop()
    again = await make_bot(
        plugins=[("p", plugin)],
        database=db,
        connector=RecordingConnector(policy=FAST_POLICY),
        config={"jobs": {"hourly": {"cron": "0 3 * * *"}}},
    )
    assert again.app.jobs.next_run_times()["hourly"] == _next_3am(datetime.now(UTC))


async def test_failing_job_reaches_on_error_and_the_bot_keeps_answering(
    make_bot: Callable[..., Awaitable[Any]], fake_openai: Any
) -> None:
    broken = Recorder(fail=True)
    plugin = JobPlugin(Job("broken", broken, interval_seconds=0.2))
    bot = await make_bot(plugins=[("p", plugin)])
    await asyncio.wait_for(plugin.error_seen.wait(), TIMEOUT)
    error, message = plugin.errors[0]
    assert isinstance(error, RuntimeError) and str(error) == "the job broke" and message is None
    await broken.wait_for(2)  # it is scheduled again
    fake_openai.add_reply("still here")
    assert await bot.say("hello") == "still here"
    state = (await bot.app.store.run_sync(job_state.list_states))["broken"]
    assert state.last_status in {"failed", "running"}
    assert "RuntimeError: the job broke" in state.last_error or state.last_status == "running"


async def test_job_can_message_the_admins(make_bot: Callable[..., Awaitable[Any]]) -> None:
    async def hello(ctx: JobContext) -> None:
        for chat in ctx.bot.admin_chats():
            await ctx.bot.send(chat, f"job {ctx.name} says hi")

    plugin = JobPlugin(Job("hello", hello, interval_seconds=3600))
    bot = await make_bot(plugins=[("p", plugin)], config={"bot": {"admins": ["fake:boss", "nowhere:x"]}})
    # the second admin's platform has no connector here: a failure, the first still got it
    assert await bot.app.jobs.run_now("hello") == "failed"
    assert bot.connector.messages(bot.chat("boss")) == ["job hello says hi"]
    assert "no connector 'nowhere'" in str(plugin.errors[0][0])


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"tick": {"cron": "every day"}}, "jobs.tick.cron"),
        ({"tick": {"cron": "0 3 * * *", "interval_seconds": 5}}, "not both"),
        ({"tick": {"colour": "red"}}, "[jobs.tick.colour] is not a known key"),
        ({"tick": {"interval_seconds": -1}}, "[jobs.tick.interval_seconds]"),
        ({"tikc": 3}, "[jobs.tikc] is not a known key"),
        ({"retention": {"enabled": True}}, "[jobs.retention.days] is required"),
        ({"retention": {"enabled": True, "days": -3}}, "[jobs.retention.days]"),
    ],
)
async def test_bad_job_config_is_refused_before_start(
    make_bot: Callable[..., Awaitable[Any]], table: dict[str, Any], expected: str
) -> None:
    plugin = JobPlugin(Job("tick", Recorder(), interval_seconds=60))
    with pytest.raises(ConfigError) as info:
        await make_bot(plugins=[("p", plugin)], config={"jobs": table})
    assert expected in str(info.value)


def test_job_needs_exactly_one_schedule() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Job("x", Recorder())
    with pytest.raises(ValueError, match="exactly one"):
        Job("x", Recorder(), interval_seconds=1, cron="* * * * *")
    with pytest.raises(ValueError, match="positive"):
        Job("x", Recorder(), interval_seconds=0)


def test_relaybot_jobs_lists_next_and_last_runs(tmp_path: Path) -> None:
    config = tmp_path / "relaybot.toml"
    config.write_text(
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "listed.db"}"\n'
        '[providers.fake]\ntype = "openai"\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "sk-x"\n'
        "[jobs.usage_report]\ndays = 7\n"
    )

    async def run_once() -> datetime | None:
        app = Relaybot(load_config(config))
        await app.start(start_configured=False)
        try:
            assert app.jobs is not None and await app.jobs.run_now("usage_report") == "ok"
            return app.jobs.next_run_times()["usage_report"]
        finally:
            await app.stop()

    planned = asyncio.run(run_once())
    result = subprocess.run(
        [sys.executable, "-m", "relaybot.core", "jobs", "--config", str(config)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = lines.index(next(line for line in lines if line.startswith("usage_report ")))
    assert lines[at + 1] == "  schedule: cron 0 9 * * 1 (UTC)"
    assert lines[at + 2] == f"  next run: {planned:%Y-%m-%d %H:%M:%S} UTC"
    assert lines[at + 3].startswith("  last run: ") and lines[at + 3].endswith(" — ok")
    retention = lines.index(next(line for line in lines if line.startswith("retention ")))
    assert lines[retention + 1] == "  schedule: cron 30 3 * * * (UTC)  — disabled"
    assert lines[retention + 2] == "  last run: never"
