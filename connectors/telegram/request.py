"""python-telegram-bot's HTTP layer on aiohttp instead of httpx.

PTB sends every Bot API call through a :class:`telegram.request.BaseRequest`. Its default,
``HTTPXRequest``, cost 1.75–2.9 ms of CPU per call on our 2-core benchmark machine (most of
it in httpx/httpcore/anyio); this class costs 0.28–0.53 ms. A bot that streams into hundreds
of chats sends a typing action or a draft to each of them the moment a message arrives, so
that cost is what delays the first feedback when many messages come at once
(``benchmarks/telegram_requests.py --transport aiohttp|httpx`` measures both).
:class:`AiohttpRequest` does the same job through one ``aiohttp.ClientSession``.

Contract (the one PTB's own request classes keep):

* :meth:`do_request` returns ``(status, body)`` for every HTTP answer, errors included: PTB
  turns 4xx/5xx bodies into ``BadRequest``/``RetryAfter``/… itself.
* A timeout raises :class:`telegram.error.TimedOut`; any other transport failure (refused,
  reset, cut off mid-body) raises :class:`telegram.error.NetworkError` naming the aiohttp error.
  The URL (which holds the bot token) never appears in either message.
* Timeouts map as PTB documents them: ``connect_timeout`` is the TCP connect, ``read_timeout``
  the longest wait for data, ``pool_timeout`` the wait for a free connection (aiohttp counts it
  in ``connect`` together with the TCP connect, so that gets the sum); ``write_timeout`` has no
  aiohttp counterpart and bounds the whole request together with the others.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData
from yarl import URL

__all__ = ["AiohttpRequest"]

_DEFAULT_NONE: Any = BaseRequest.DEFAULT_NONE


def _seconds(value: Any, default: float | None) -> float | None:
    """A PTB timeout argument: ``DEFAULT_NONE`` means ours, ``None`` means no limit."""
    return default if value is _DEFAULT_NONE else value


class AiohttpRequest(BaseRequest):
    """A :class:`~telegram.request.BaseRequest` on aiohttp; one instance per PTB ``Bot`` role.

    ``connection_pool_size`` caps concurrent connections to the Bot API. The session is created
    in :meth:`initialize` (it needs the running loop) and can be re-created after
    :meth:`shutdown`, as PTB expects when an application is started twice.
    """

    __slots__ = ("_connect", "_pool", "_pool_size", "_proxies", "_read", "_session", "_write")

    def __init__(
        self,
        *,
        connection_pool_size: int = 1,
        connect_timeout: float | None = 5.0,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
    ) -> None:
        self._pool_size = connection_pool_size
        self._connect = connect_timeout
        self._read = read_timeout
        self._write = write_timeout
        self._pool = pool_timeout
        self._session: aiohttp.ClientSession | None = None
        # origin → (proxy, auth) from HTTPS_PROXY/NO_PROXY…, looked up once per origin: aiohttp's
        # own trust_env does it (and a .netrc read) in a worker thread on every request
        self._proxies: dict[str, tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    @property
    def read_timeout(self) -> float | None:
        """The default read timeout (PTB adds it to ``getUpdates``' long-poll timeout)."""
        return self._read

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0)
            # the Bot API sets no cookies; the dummy jar skips cookie filtering per request
            self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: float | None = _DEFAULT_NONE,
        write_timeout: float | None = _DEFAULT_NONE,
        connect_timeout: float | None = _DEFAULT_NONE,
        pool_timeout: float | None = _DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("AiohttpRequest is not initialized (call initialize() first)")
        connect = _seconds(connect_timeout, self._connect)
        pool = _seconds(pool_timeout, self._pool)
        read = _seconds(read_timeout, self._read)
        write = _seconds(write_timeout, self._write)
        parts = [t for t in (connect, pool, read, write) if t is not None]
        timeout = aiohttp.ClientTimeout(
            # every phase bounded: nothing can hang longer than all limits together
            total=sum(parts) if len(parts) == 4 else None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=read,
        )
        headers = {"User-Agent": self.USER_AGENT}
        data: Any = None
        if request_data is not None:
            if request_data.multipart_data:
                form = aiohttp.FormData()
                for name, value in (request_data.json_parameters or {}).items():
                    form.add_field(name, value)
                for name, (filename, content, mime) in request_data.multipart_data.items():
                    form.add_field(name, content, filename=filename, content_type=mime)
                data = form
            elif request_data.json_parameters:
                # url-encoded, as PTB's httpx request sends it; encoded here because aiohttp
                # would build a FormData (and a multipart writer) for a dict every time
                data = urlencode(request_data.json_parameters).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
        target = URL(url, encoded=True)
        proxy, proxy_auth = self._proxy_for(target)
        try:
            async with session.request(
                method,
                target,
                data=data,
                timeout=timeout,
                headers=headers,
                proxy=proxy,
                proxy_auth=proxy_auth,
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:  # aiohttp's timeouts subclass it (ServerTimeoutError too)
            raise TimedOut(f"Timed out talking to the Bot API ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {_describe(exc)}") from exc
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            raise NetworkError(f"{type(exc).__name__}: {exc}") from exc

    def _proxy_for(self, url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``NO_PROXY``…), cached."""
        origin = f"{url.scheme}://{url.host}:{url.port}"
        found = self._proxies.get(origin)
        if found is None:
            try:
                found = get_env_proxy_for_url(url)
            except LookupError:
                found = (None, None)
            self._proxies[origin] = found
        return found


def _describe(exc: aiohttp.ClientError) -> str:
    """The error's text without the request URL (it holds the bot token)."""
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer was cut off"
    text = str(exc)
    return "" if "/bot" in text else text
