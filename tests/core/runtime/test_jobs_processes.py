"""Scheduled jobs across processes: two relaybots on one database run each job run once, and
the schedule carries on after both stop and another starts (SQLite file and PostgreSQL)."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

INTERVAL = 0.5
TIMEOUT = 90.0  # generous: two interpreters start on a shared 2-core machine

WORKER = '''
import asyncio, logging, os, signal, sys

from relaybot import Job, hookimpl, parse_config
from relaybot.core.runtime.app import Relaybot

db, runs_path = sys.argv[1], sys.argv[2]
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
logging.getLogger("relaybot.jobs").setLevel(logging.INFO)


async def tick(ctx):
    with open(runs_path, "a") as out:  # O_APPEND: one short line per write, never interleaved
        out.write(f"{ctx.scheduled_at.isoformat()} {os.getpid()}\\n")


class Plugin:
    @hookimpl
    def register_jobs(self, register):
        register(Job("tick", tick, interval_seconds=%(interval)s))


async def main():
    config = parse_config({
        "storage": {"url": db},
        "providers": {"fake": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}},
        "connectors": {},
    })
    app = Relaybot(config, extra_plugins=[("tick", Plugin())])
    await app.start(start_configured=False)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("started", flush=True)
    await stop.wait()
    await app.stop()


asyncio.run(main())
'''


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("pg_url"))


class Worker:
    """One relaybot process running the ``tick`` job; its log goes to a file."""

    def __init__(self, script: Path, db: str, runs: Path, log: Path) -> None:
        self.args = [sys.executable, str(script), db, str(runs)]
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                *self.args, stdout=asyncio.subprocess.PIPE, stderr=err
            )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        assert line.strip() == b"started", self.log.read_text()

    @property
    def lost_claims(self) -> int:
        return self.log.read_text().count("is taken by another process")

    async def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.proc.wait(), TIMEOUT) == 0, self.log.read_text()


def _runs(path: Path) -> list[tuple[datetime, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        when, pid = line.split()
        out.append((datetime.fromisoformat(when), int(pid)))
    return out


async def _until(condition: object, what: str) -> None:
    """Wait (polling files the workers write) until ``condition()`` holds."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_job_runs_once_across_two_processes_and_again_after_a_restart(
    shared_db: str, tmp_path: Path
) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER % {"interval": INTERVAL})
    runs = tmp_path / "runs.txt"
    first = Worker(script, shared_db, runs, tmp_path / "first.log")
    second = Worker(script, shared_db, runs, tmp_path / "second.log")
    await first.start()
    await second.start()
    try:
        # both processes keep firing for every run; the database lets one of them have it
        await _until(
            lambda: len(_runs(runs)) >= 6 and first.lost_claims + second.lost_claims >= 3,
            "six runs with both processes competing",
        )
    finally:
        await first.stop()
        await second.stop()
    before = _runs(runs)
    times = Counter(when for when, _ in before)
    assert all(n == 1 for n in times.values()), f"a run happened twice: {times.most_common(3)}"
    assert first.lost_claims + second.lost_claims >= 3  # the competition really happened
    assert {pid for _, pid in before} <= {first.proc.pid, second.proc.pid}  # type: ignore[union-attr]

    # a restart continues the stored schedule: later runs, on the same grid, none repeated
    last = max(times)
    third = Worker(script, shared_db, runs, tmp_path / "third.log")
    await third.start()
    try:
        await _until(lambda: any(when > last for when, _ in _runs(runs)), "a run after the restart")
    finally:
        await third.stop()
    after = [when for when, pid in _runs(runs) if pid == third.proc.pid]  # type: ignore[union-attr]
    assert after and min(after) > last
    everything = Counter(when for when, _ in _runs(runs))
    assert all(n == 1 for n in everything.values())
    origin = min(everything)
    for when in everything:
        steps = (when - origin) / timedelta(seconds=INTERVAL)
        assert abs(steps - round(steps)) < 1e-6, f"{when} is off the schedule's grid"

