"""HTTP Events mode: Slack's signed requests into slack-bolt, as one Starlette endpoint.

Slack POSTs events (JSON), slash commands and interactions (forms) to one Request URL. Bolt
checks ``X-Slack-Signature`` against the signing secret and the timestamp's age (older than 5
minutes is refused): a request that fails is answered 401 and reaches no listener. Bolt also
answers Slack's ``url_verification`` challenge and ``ssl_check``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from starlette.requests import Request
from starlette.responses import Response


def bolt_endpoint(app: AsyncApp) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint handing each request to ``app`` and returning Bolt's answer."""

    async def endpoint(request: Request) -> Response:
        body = (await request.body()).decode("utf-8", errors="replace")
        bolt_request = AsyncBoltRequest(body=body, query=request.url.query,
                                        headers={k: v for k, v in request.headers.items()})  # fmt: skip
        answer = await app.async_dispatch(bolt_request)
        headers: dict[str, Any] = {
            k: v[0] for k, v in answer.headers.items() if v and k.lower() != "content-length"
        }
        return Response(answer.body, status_code=answer.status, headers=headers)

    return endpoint
