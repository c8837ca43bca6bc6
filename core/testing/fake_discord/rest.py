"""The REST API's plumbing: routing, auth, rate-limit buckets and headers, errors, the timeline.

Each route is a template (``"PATCH /channels/{channel_id}/messages/{message_id}"``), a bucket
group (:mod:`.ratelimit`) and a handler in :mod:`.handlers`. Every answer — success, error or
429 — carries the bucket's ``X-RateLimit-*`` headers and is recorded as a
:class:`~relaybot.core.testing.fake_discord.store.CallRecord`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from relaybot.core.testing.fake_discord.ratelimit import RateLimiter, Verdict
from relaybot.core.testing.fake_discord.store import CallRecord, RateLimitRecord, Store
from relaybot.core.testing.fake_discord.validation import DiscordError, unauthorized


@dataclass(slots=True)
class UploadedFile:
    """A file the bot uploaded (multipart ``files[n]``)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(slots=True)
class Call:
    """One request as a handler sees it, and what it fills in for the timeline."""

    params: dict[str, str]
    query: dict[str, str]
    body: Any
    files: list[UploadedFile]
    base_url: str
    channel_id: int | None = None
    message_id: int | None = None
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def int_param(self, name: str) -> int:
        """A numeric path parameter (a snowflake); a non-number is 404 as on Discord."""
        try:
            return int(self.params[name])
        except ValueError:
            raise DiscordError(404, 0, "404: Not Found") from None


Handler = Callable[[Call], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route: ``method``, ``template``, bucket ``group``, and whether it needs the bot token."""

    method: str
    template: str
    group: str
    handler: Handler
    auth: bool = True
    counts_global: bool = True

    @property
    def key(self) -> str:
        """``"METHOD /template"``, the route's name in the timeline and in scripted failures."""
        return f"{self.method} {self.template}"


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{pattern}$")


class ResponseHold:
    """Holds answers of one route back until :meth:`release`: requests stay "in flight".

    The fake has already counted and applied them (buckets, messages); only the answer waits,
    so a test can look at a client while several of its requests are unanswered.
    """

    def __init__(self, notify: Callable[[], None]) -> None:
        self.pending = 0
        self._open = asyncio.Event()
        self._notify = notify

    def release(self) -> None:
        """Let every held answer (and later ones) go."""
        self._open.set()

    async def wait(self) -> None:
        self.pending += 1
        self._notify()
        try:
            await self._open.wait()
        finally:
            self.pending -= 1


@dataclass(frozen=True, slots=True)
class ScriptedFailure:
    """A failure a test queued for a route: an error, or a 429 of ``retry_after`` seconds."""

    error: DiscordError | None = None
    retry_after: float | None = None
    is_global: bool = False
    with_via: bool = True


class RestApi:
    """Routes requests under ``/api/v{n}/`` to handlers, enforcing auth and rate limits."""

    def __init__(self, token: str, store: Store, limiter: RateLimiter, routes: list[RouteSpec]) -> None:
        self.token = token
        self.store = store
        self.limiter = limiter
        self._routes = [(spec, _compile(spec.template)) for spec in routes]
        self.scripted: defaultdict[str, deque[ScriptedFailure]] = defaultdict(deque)
        self.holds: dict[str, ResponseHold] = {}

    def match(self, method: str, path: str) -> tuple[RouteSpec, dict[str, str]] | None:
        """The route for a request and its path parameters (None: Discord's 404)."""
        for spec, pattern in self._routes:
            if spec.method == method:
                found = pattern.match(path)
                if found:
                    return spec, found.groupdict()
        return None

    async def handle(self, request: Request) -> Response:
        """The ASGI endpoint for ``/api/v{version}/{path}``."""
        path = "/" + request.path_params["path"]
        matched = self.match(request.method, path)
        if matched is None:
            return self._answer(request.method + " " + path, None, DiscordError(404, 0, "404: Not Found"), {})
        spec, params = matched
        call = Call(params, dict(request.query_params), None, [], str(request.base_url).rstrip("/"))
        call.channel_id = _snowflake(params.get("channel_id"))
        call.message_id = _snowflake(params.get("message_id"))
        major = params.get("channel_id") or params.get("guild_id") or params.get("interaction_token")
        # the body is read first so that refused calls (401, 429 ...) are recorded with it too
        body_error: DiscordError | None = None
        try:
            await _read_body(request, call)
        except DiscordError as exc:
            body_error = exc
        if isinstance(call.body, dict) and isinstance(call.body.get("content"), str):
            call.text = call.body["content"]
        if spec.auth and request.headers.get("authorization") != f"Bot {self.token}":
            return self._answer(spec.key, call, unauthorized(), self.limiter.headers_for(spec.group, major))
        scripted = self.scripted.get(spec.key)
        if scripted:
            return self._scripted(spec, call, scripted.popleft(), self.limiter.headers_for(spec.group, major))
        verdict = self.limiter.check(spec.group, major, counts_global=spec.counts_global)
        if verdict.banned:
            return self._banned(spec, call)
        if verdict.retry_after is not None:
            return self._rate_limited(spec, call, verdict)
        try:
            if body_error is not None:
                raise body_error
            status, payload = await spec.handler(call)
        except DiscordError as exc:
            return self._answer(spec.key, call, exc, verdict.headers)
        hold = self.holds.get(spec.key)
        if hold is not None:
            await hold.wait()
        return self._answer(spec.key, call, (status, payload), verdict.headers)

    def _scripted(
        self, spec: RouteSpec, call: Call, failure: ScriptedFailure, headers: dict[str, str]
    ) -> Response:
        if failure.error is not None:
            return self._answer(spec.key, call, failure.error, headers)
        scope = "global" if failure.is_global else "user"
        extra = {"X-RateLimit-Scope": scope} | ({"X-RateLimit-Global": "true"} if failure.is_global else {})
        verdict = Verdict(headers | extra, retry_after=failure.retry_after, is_global=failure.is_global,
                          scope=scope)  # fmt: skip
        return self._rate_limited(spec, call, verdict, with_via=failure.with_via)

    # -- answers ---------------------------------------------------------------------------

    def _answer(self, route: str, call: Call | None, result: DiscordError | tuple[int, Any],
                headers: dict[str, str]) -> Response:  # fmt: skip
        if isinstance(result, DiscordError):
            status, body, code = result.status, result.body(), result.code
            self.limiter.record_invalid(status)
        else:
            (status, body), code = result, None
        response: Response = Response(status_code=204) if body is None else JSONResponse(body, status)
        response.headers.update(headers)
        self._record(route, call, status, dict(headers), code)
        return response

    def _rate_limited(
        self, spec: RouteSpec, call: Call, verdict: Verdict, *, with_via: bool = True
    ) -> Response:
        retry = round(verdict.retry_after or 0.0, 3)
        body = {"message": "You are being rate limited.", "retry_after": retry, "global": verdict.is_global}
        headers = dict(verdict.headers)
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
        if with_via:
            # discord.py takes a 429 without Via for a Cloudflare ban and raises at once
            headers["Via"] = "1.1 google"
        response = JSONResponse(body, 429, headers=headers)
        self.limiter.record_invalid(429, verdict.scope)
        bucket = headers.get("X-RateLimit-Bucket", "global")
        record = RateLimitRecord(self.limiter.clock(), spec.key, bucket, retry, verdict.scope)
        self.store.rate_limited.append(record)
        self._record(spec.key, call, 429, headers, None)
        return response

    def _banned(self, spec: RouteSpec, call: Call) -> Response:
        # Cloudflare's page: HTML, no Via, no JSON (discord.py raises HTTPException at once)
        response = Response("<html><body>error code: 1015</body></html>", 429, media_type="text/html")
        self._record(spec.key, call, 429, {}, 1015)
        return response

    def _record(self, route: str, call: Call | None, status: int, headers: dict[str, str],
                code: int | None) -> None:  # fmt: skip
        self.store.calls.append(CallRecord(
            self.limiter.clock(), route, call.channel_id if call else None,
            call.message_id if call else None, call.text if call else None, status,
            call.body if call else None, headers, code,
        ))  # fmt: skip
        self.store.notify()


async def _read_body(request: Request, call: Call) -> None:
    """JSON body, or multipart with ``payload_json`` and ``files[n]`` (what discord.py sends)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        for key, value in form.multi_items():
            if key == "payload_json" and isinstance(value, str):
                call.body = _json(value)
            elif isinstance(value, UploadFile):
                data = await value.read()
                call.files.append(UploadedFile(value.filename or key, value.content_type or
                                               "application/octet-stream", data))  # fmt: skip
        return
    raw = await request.body()
    call.body = _json(raw.decode() if raw else "null")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None


def _snowflake(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
