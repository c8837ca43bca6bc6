"""Access checks of the web chat: client ids, the optional token, request size limits."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

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

    def response(self) -> JSONResponse:
        """The JSON response for this error."""
        return JSONResponse({"error": self.message, **self.extra}, status_code=self.status)


def client_id(conn: HTTPConnection) -> str:
    """The browser's client id (header, or ``?client=`` for EventSource and images)."""
    value = conn.headers.get(CLIENT_HEADER) or conn.query_params.get("client") or ""
    if not CLIENT_ID.match(value):
        raise ApiError(400, "missing or malformed client id (16-64 letters, digits, - or _)")
    return value


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
