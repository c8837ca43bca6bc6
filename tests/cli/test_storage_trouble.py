"""An unusable database: a clear one-line message, no hang, no traceback, nothing stored lost."""

from __future__ import annotations

import queue
import sqlite3
import subprocess
import threading
import time

import pytest


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("command", ["chat", "export"])
def test_database_path_under_a_regular_file(bot, command: str) -> None:
    blocker = bot.root / "not-a-folder"
    blocker.write_text("a regular file")
    db = blocker / "data" / "bot.db"
    bot.write_config("[connectors.terminal]\n", storage_url=f"sqlite+aiosqlite:///{db}")
    args = ["export", "--chat", "terminal:x"] if command == "export" else [command]
    result = bot.run(*args, input="hello\n", timeout=60)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert str(blocker / "data") in line and "Not a directory" in line and "[storage] url" in line


def test_database_locked_at_start_fails_clearly_without_hanging(bot) -> None:
    holder = sqlite3.connect(bot.db, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("CREATE TABLE squatter (x)")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO squatter VALUES (1)")
        started = time.monotonic()
        result = bot.run("chat", input="hello\n", timeout=60)
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert str(bot.db) in line and "is locked" in line and "busy_timeout" in line
    assert elapsed < 30  # it gives up after busy_timeout, it does not wait forever


class LineReader:
    """Reads a pipe in a thread so the test can wait for a line with a timeout."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout: float = 30.0) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no output line from relaybot") from None

    def until(self, predicate, timeout: float = 30.0) -> str:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.1, deadline - time.monotonic()))
            if predicate(line):
                return line


def test_database_locked_mid_chat_tells_the_user_and_recovers(bot) -> None:
    proc = bot.popen(
        "chat",
        "--chat",
        "dora",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out = LineReader(proc.stdout)
    try:
        proc.stdin.write("first\n/list\n")
        proc.stdin.flush()
        assert out.next() == "You said: first"
        out.until(lambda line: line.startswith("▶ 1."))  # the first turn is fully saved now

        holder = sqlite3.connect(bot.db, isolation_level=None, timeout=30)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            proc.stdin.write("second\n")
            proc.stdin.flush()
            told = out.next(timeout=60)
            assert "message store" in told  # the user is told, in words, not with a trace
            assert proc.poll() is None
        finally:
            holder.close()

        proc.stdin.write("third\n")
        proc.stdin.close()
        assert out.next() == "You said: third"
        assert proc.wait(30) == 0
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in stderr
    assert "is locked" in stderr  # the admin's log says why
    # nothing that was stored is lost; the message sent while locked was refused, not half-saved
    assert bot.messages() == [
        ("user", "first", "complete"),
        ("assistant", "You said: first", "complete"),
        ("user", "third", "complete"),
        ("assistant", "You said: third", "complete"),
    ]
