"""SIGINT/SIGTERM reach relaybot's handler while each of its web servers runs (real processes).

uvicorn ≥ 0.29 takes both signals over for as long as its server runs, unless told not to; then
Ctrl-C would stop the web server before relaybot could save the live replies. Each server kind
(the web chat, Telegram's webhook receiver, the testing kit's fakes) runs in a child process that
installed its own handler first (``serve_until_signal.py``); the signal must reach that handler
and leave the server serving. ``relaybot run`` with the web chat must stop cleanly on both.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from .conftest import PROCESS_TIMEOUT, clean_env

HELPER = Path(__file__).with_name("serve_until_signal.py")
SIGNALS = pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])


def read_line_until(proc: subprocess.Popen[str], prefix: str, *, stderr: bool = False) -> str:
    """The first line of ``proc``'s stdout (or stderr) starting with ``prefix``."""
    found: list[str] = []
    stream = proc.stderr if stderr else proc.stdout

    def read() -> None:
        assert stream is not None
        for line in stream:
            if line.startswith(prefix):
                found.append(line.strip())
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(PROCESS_TIMEOUT)
    assert found, f"no {prefix!r} line from the process (exit status {proc.poll()})"
    return found[0]


@pytest.mark.parametrize("kind", ["web", "webhook", "loopback"])
@SIGNALS
def test_signal_reaches_the_programs_handler_and_the_server_keeps_serving(kind: str, sig: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(HELPER), kind],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        start_new_session=True,
    )
    try:
        read_line_until(proc, "ready ")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert f"handler {signal.Signals(sig).name}" in lines, out + err
    # answered after the signal: nothing but the program's handler reacted to it
    status = int(next(line for line in lines if line.startswith("still serving")).split()[-1])
    assert status < 500, out
    assert "Traceback" not in err


@SIGNALS
def test_run_with_the_web_chat_stops_cleanly_on_signal(bot, sig: int) -> None:
    bot.write_config("[connectors.web]\nport = 0\n")
    proc = bot.popen("run", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # stderr: "relaybot: web running at http://127.0.0.1:PORT"
        line = read_line_until(proc, "relaybot: web running at ", stderr=True)
        url = line.rsplit(" ", 1)[-1]
        assert httpx.get(url + "/api/info", headers={"X-Relaybot-Client": "c" * 32}, timeout=10).is_success
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err
    assert "stopping: saving live replies" in err  # relaybot's handler ran, then a clean shutdown
    assert "Traceback" not in err
