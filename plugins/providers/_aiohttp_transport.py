"""An httpx transport that moves the bytes with aiohttp.

Why: a busy bot reads hundreds of provider streams at once, one small SSE event at a time.
Through httpx's own stack (httpcore, h11, anyio) each read costs several times what aiohttp's
C-accelerated parser and its plain asyncio protocol cost, and at a few hundred concurrent
streams that difference is most of the bot's CPU (``benchmarks/streaming.py``; figures in
``benchmarks/README.md``). The providers keep speaking httpx (``AsyncClient.stream``,
``httpx-sse``); only the transport underneath changes, selected with the provider option
``http_client = "aiohttp"`` (the default when aiohttp is installed).

Contract — what the providers' error mapping (:func:`._http.transport_error`) relies on, so
the user sees the same, accurate message whichever transport runs:

* failing to connect (refused, DNS, TLS) → :class:`httpx.ConnectError`; no connection within
  the ``connect`` (+ ``pool``) timeout → :class:`httpx.ConnectTimeout`;
* sending the request fails → :class:`httpx.WriteError`;
* no byte for ``read`` seconds (headers or between chunks) → :class:`httpx.ReadTimeout`;
* the server closes the connection before the headers or in the middle of the body, or sends a
  truncated chunked body → :class:`httpx.RemoteProtocolError`; a reset → :class:`httpx.ReadError`.

Read pacing: when the core streams a reply (:mod:`relaybot.core.streaming.demand`), a response
whose text the chat cannot show yet pauses its socket between reads, for at most
:data:`MAX_READ_DEFERRAL` seconds (a quarter of the ``read`` timeout if that is shorter), and
the backlog is read in one go shortly before the chat's next frame.

Messages name what happened and the host, never the URL's path or query (Gemini's key can sit
in the query) nor any header. Bodies are passed on undecoded: httpx itself decodes
``Content-Encoding``, as with its own transport. Proxies from the environment keep working:
``httpx.AsyncClient(trust_env=True)`` routes proxied hosts through its own proxy transports and
only the direct ones through this one.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable

import aiohttp
import httpx
from yarl import URL

from relaybot.core.streaming.demand import TextDemand, current_text_demand, defer_reading

__all__ = ["MAX_READ_DEFERRAL", "AiohttpTransport"]

#: longest a streamed response is left unread while its chat cannot show text (seconds)
MAX_READ_DEFERRAL = 1.0


class AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx requests over one lazily created ``aiohttp.ClientSession`` (see module docstring).

    ``max_connections`` (``None`` = no cap) and ``keepalive_expiry`` mean what they mean in
    :class:`httpx.Limits`. The session is created on the first request, in the running loop,
    and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        keepalive_expiry: float = 5.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._limit = max_connections or 0  # aiohttp: 0 = unlimited
        self._keepalive = keepalive_expiry
        if verify is True:
            verify = httpx.create_ssl_context()  # certifi + SSL_CERT_FILE, as httpx does
        self._ssl: ssl.SSLContext | bool = verify
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the aiohttp transport is closed")
        session = self._session
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limit, limit_per_host=0, keepalive_timeout=self._keepalive, ssl=self._ssl
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps cookies itself
                auto_decompress=False,  # httpx decodes Content-Encoding itself
            )
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._get_session()
        timeouts = request.extensions.get("timeout", {})
        connect, read, pool = timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool")
        timeout = aiohttp.ClientTimeout(
            total=None,  # a stream may run for minutes; silence is bounded by sock_read
            # aiohttp's "connect" includes waiting for a pooled connection
            connect=None if connect is None else connect + (pool or 0.0),
            sock_connect=connect,
            sock_read=read,
        )
        host = request.url.host
        body = await request.aread()
        try:
            response = await session.request(
                request.method,
                # already encoded by httpx; re-encoding would mangle %-escapes
                URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=body or None,
                timeout=timeout,
                allow_redirects=False,
                compress=False,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _mapped(exc, request, host, before_response=True) from exc
        return httpx.Response(
            status_code=response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_ResponseStream(
                response,
                request,
                host,
                current_text_demand(),
                MAX_READ_DEFERRAL if read is None else min(MAX_READ_DEFERRAL, read / 4),
            ),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


class _ResponseStream(httpx.AsyncByteStream):
    """The body as aiohttp delivers it: each chunk as soon as it arrives (SSE wants that),
    unless ``demand`` says the text cannot be shown yet (see the module docstring)."""

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        request: httpx.Request,
        host: str,
        demand: TextDemand | None = None,
        max_deferral: float = MAX_READ_DEFERRAL,
    ) -> None:
        self._response = response
        self._request = request
        self._host = host
        self._demand = demand
        self._max_deferral = max_deferral

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        demand = self._demand
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
                if demand is not None:
                    await self._defer(demand)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise _mapped(exc, self._request, self._host, before_response=False) from exc

    async def _defer(self, demand: TextDemand) -> None:
        """Leave the socket unread while the consumer cannot show text (the kernel buffers)."""
        connection = self._response.connection
        transport = connection.transport if connection is not None else None
        if transport is None:
            return
        await defer_reading(
            demand,
            pause=lambda: _flow(transport.pause_reading),
            resume=lambda: _flow(transport.resume_reading),
            max_wait=self._max_deferral,
        )

    async def aclose(self) -> None:
        # release() returns a fully read connection to the pool; an unfinished one is closed
        self._response.release()
        if not self._response.content.at_eof():
            self._response.close()


def _flow(switch: Callable[[], None]) -> None:
    """Pause or resume a socket's reading; a closed one has nothing to switch (the next
    read reports why it closed)."""
    try:
        switch()
    except (RuntimeError, AttributeError, NotImplementedError):
        pass


def _mapped(
    exc: BaseException, request: httpx.Request, host: str, *, before_response: bool
) -> httpx.TransportError:
    """The httpx error for an aiohttp failure (see the module contract); never quotes the URL."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(f"no connection to {host} in time", request=request)
    if isinstance(exc, TimeoutError):  # SocketTimeoutError, ServerTimeoutError, plain timeouts
        return httpx.ReadTimeout(f"{host} sent nothing in time", request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(os_error, socket.gaierror):
            reason = f"unknown host ({os_error.strerror})"
        else:
            reason = getattr(os_error, "strerror", None) or type(os_error).__name__
        if isinstance(exc, aiohttp.ClientSSLError):
            reason = f"TLS: {exc.os_error}"
        return httpx.ConnectError(f"cannot connect to {exc.host}:{exc.port}: {reason}", request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        where = "before answering" if before_response else "in the middle of the answer"
        return httpx.RemoteProtocolError(f"{host} closed the connection {where}", request=request)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(f"{host} ended the answer early (incomplete body)", request=request)
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed status line or headers
        return httpx.RemoteProtocolError(f"{host} sent an invalid HTTP response", request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(
            f"cannot request this URL ({exc.__class__.__name__})", request=request
        )
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        detail = getattr(exc, "strerror", None) or type(exc).__name__
        if before_response:
            return httpx.WriteError(f"sending to {host} failed: {detail}", request=request)
        return httpx.ReadError(f"reading from {host} failed: {detail}", request=request)
    if isinstance(exc, aiohttp.ClientError):
        return httpx.NetworkError(f"network error with {host} ({type(exc).__name__})", request=request)
    return httpx.NetworkError(
        f"unexpected transport failure with {host} ({type(exc).__name__})", request=request
    )
