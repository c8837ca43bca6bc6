"""Access checks of the web chat: client ids, the optional token, who may call, size limits.

With no token (the default on loopback) anything that can reach the port may chat, so the
browser must be kept from doing it on behalf of *other* web sites (:class:`SiteGuard`):

* **DNS rebinding**: a page on ``evil.example`` whose name is re-pointed at 127.0.0.1 talks to
  us as "same origin". Its requests carry ``Host: evil.example``; we answer only host names we
  know (loopback names, IP literals, the configured ``host`` and ``allowed_hosts``).
* **Cross-site requests**: a foreign page may POST (``text/plain`` needs no CORS preflight) to
  ``http://127.0.0.1:8080``. State-changing requests whose ``Origin`` is not our own (or, when
  a browser sends no ``Origin``, whose ``Sec-Fetch-Site`` is not ``same-origin``) are refused,
  API reads marked cross-site too; JSON bodies must say ``application/json`` (which a foreign
  page cannot send without a preflight we never approve); and the client id of a
  state-changing request comes from the ``X-Relaybot-Client`` header only (a custom header,
  again impossible cross-site), not from the query string.

``GET /api/events`` (EventSource) and ``/media`` (``<img>``) cannot set headers, so reads keep
``?client=`` and the token cookie / ``?token=``.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

#: a client id is what the page generates (crypto.randomUUID without dashes, or similar)
CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
CLIENT_HEADER = "x-relaybot-client"
TOKEN_COOKIE = "relaybot_token"


class ApiError(Exception):
    """An HTTP error with a JSON body ``{"error": message}``; raised by handlers."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        """The JSON response for this error (with extra ``headers``, e.g. ``Allow`` for a 405)."""
        return JSONResponse({"error": self.message, **self.extra}, status_code=self.status, headers=headers)


#: methods that change nothing: the only ones a foreign page may trigger (and never read)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def client_id(conn: HTTPConnection, *, from_query: bool = True) -> str:
    """The browser's client id: header ``X-Relaybot-Client``, or ``?client=`` when ``from_query``.

    The query string is for reads only (EventSource and downloads cannot set headers); a
    state-changing request must send the header, which no foreign page can set.
    """
    value = conn.headers.get(CLIENT_HEADER) or (conn.query_params.get("client") if from_query else "") or ""
    if not CLIENT_ID.match(value):
        where = "header X-Relaybot-Client" if not from_query else "X-Relaybot-Client or ?client="
        raise ApiError(400, f"missing or malformed client id ({where}: 16-64 letters, digits, - or _)")
    return value


def require_json(conn: HTTPConnection) -> None:
    """Refuse a body that does not declare ``Content-Type: application/json`` (415)."""
    declared = conn.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if declared != "application/json":
        raise ApiError(415, "the request body must be JSON sent as Content-Type: application/json")


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or URL netloc: lower case, no port, no final dot."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8080
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class SiteGuard:
    """ASGI middleware: refuses unknown ``Host`` names and cross-site use (see the module doc).

    Host names answered are loopback names (``localhost``, ``*.localhost``) and IP literals,
    which DNS rebinding cannot use, plus ``hosts`` (the configured ``host``) and
    ``proxy_hosts`` (``[connectors.web] allowed_hosts``, e.g. a reverse proxy's public name).
    An ``Origin`` must be the address the request was sent to, or one of ``proxy_hosts`` (a
    proxy may rewrite ``Host`` to the upstream address).
    """

    def __init__(self, app: Any, hosts: Iterable[str] = (), proxy_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.proxies = frozenset(host_name(h) for h in proxy_hosts if h.strip())
        self.allowed = self.proxies | {host_name(h) for h in hosts if h.strip()}

    def host_ok(self, name: str) -> bool:
        """True when a request for host ``name`` (from :func:`host_name`) is answered."""
        return name in self.allowed or name == "localhost" or name.endswith(".localhost") or _is_ip(name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            await ApiError(403, refusal).response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, scope: Any) -> str | None:
        """Why this request is refused, or None when it may go on."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        if host and not self.host_ok(host_name(host)):
            return (
                f"this server does not answer for host {host_name(host)[:100]!r}; if a reverse "
                "proxy forwards it, add the name to [connectors.web] allowed_hosts"
            )
        path = scope.get("path", "")
        site = headers.get("sec-fetch-site", "").lower()
        if path.startswith(("/api/", "/media/")) and site in ("cross-site", "same-site"):
            return "cross-site requests are not allowed"
        if scope.get("method", "GET") in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None:
            if not self.origin_ok(origin, host):
                return f"requests from another site are not allowed (Origin {origin[:100]!r})"
        elif site not in ("", "same-origin", "none"):
            return "cross-site requests are not allowed"
        return None

    def origin_ok(self, origin: str, host: str) -> bool:
        """True when ``origin`` is this server itself (as the browser addressed it)."""
        if origin == "null":  # sandboxed frames, file:// pages: never our page
            return False
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        if parts.netloc.lower() == host.strip().lower():
            return True
        # a reverse proxy may rewrite Host; its public name is configured explicitly
        return host_name(parts.netloc) in self.proxies


def token_ok(conn: HTTPConnection, expected: str | None) -> bool:
    """True when no token is configured or the request carries it.

    Accepted: ``Authorization: Bearer <token>`` (API calls), ``?token=`` (EventSource cannot
    set headers) or the ``relaybot_token`` cookie the page sets (so ``<img>`` works).
    """
    if expected is None:
        return True
    auth = conn.headers.get("authorization", "")
    candidates = [
        auth[7:].strip() if auth.lower().startswith("bearer ") else "",
        conn.query_params.get("token", ""),
        conn.cookies.get(TOKEN_COOKIE, ""),
    ]
    wanted = expected.encode()
    # compare_digest: no timing hints about how much of a guess was right
    return any(c and secrets.compare_digest(c.encode(), wanted) for c in candidates)


class BodyLimitMiddleware:
    """Refuses request bodies over a limit with 413, before the app reads them all.

    ``limit_for(path)`` gives the byte limit of a path. A declared ``Content-Length`` over the
    limit is refused at once; a chunked body is counted as it arrives and the handler reading
    it gets :class:`ApiError` (413), which the app's error handler turns into the response.
    """

    def __init__(self, app: Any, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        message = f"request too large (limit {max(1, limit // (1024 * 1024))} MB)"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Any:
            nonlocal seen
            event = await receive()
            if event["type"] == "http.request":
                seen += len(event.get("body", b""))
                if seen > limit:
                    raise ApiError(413, message)
            return event

        await self.app(scope, counting_receive, send)
