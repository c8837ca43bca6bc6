"""Helper program for test_signals_with_servers.py (not a test module): run one kind of relaybot
web server in a real process whose own SIGINT/SIGTERM handler was installed *first*.

``python serve_until_signal.py KIND`` with KIND one of ``web``, ``webhook``, ``loopback``:
installs a handler with ``loop.add_signal_handler`` (as relaybot's CLI does), starts the server,
prints ``ready URL`` and waits. On a signal it prints ``handler SIGNAME`` — from relaybot's own
handler — then checks the server still answers (``still serving STATUS``: no one but the
program reacted to the signal), stops it and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import httpx


async def nothing(_: object) -> None:
    return None


async def main(kind: str) -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[signal.Signals] = asyncio.Queue()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, got.put_nowait, sig)

    if kind == "web":
        from relaybot.connectors.web import WebConnector
        from relaybot.connectors.web.config import WebConfig

        web = WebConnector("web", WebConfig(port=0))
        from relaybot.testing import RecordingHost

        await web.start(RecordingHost())
        url, method, stop = web.url + "/api/info", "GET", web.aclose
    elif kind == "webhook":
        from relaybot.connectors.telegram.webhook import WebhookServer

        hook = WebhookServer(host="127.0.0.1", port=0, path="/hook", secret="s", sink=nothing)
        await hook.start()
        url, method, stop = hook.local_url, "POST", hook.stop
    else:
        from relaybot.testing import FakeOpenAIServer

        fake = FakeOpenAIServer()
        await fake.start()
        url, method, stop = fake.base_url + "/models", "GET", fake.stop

    print("ready", url, flush=True)
    sig = await got.get()
    print("handler", sig.name, flush=True)
    async with httpx.AsyncClient(timeout=10) as http:
        res = await http.request(method, url, headers={"X-Relaybot-Client": "c" * 32})
    print("still serving", res.status_code, flush=True)
    await stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
