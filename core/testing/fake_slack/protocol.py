"""Slack Web API wire format: request parameters (query, form, JSON, multipart) and error answers.

Slack answers almost every failure with HTTP 200 and ``{"ok": false, "error": "<code>"}``; only
rate limiting uses a real status (429 with ``Retry-After``). slack_sdk sends some methods as a
JSON body, some as a query string (``params=``) and uploads as multipart, always with
``Authorization: Bearer <token>``; older clients put ``token`` in the form instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile


class SlackError(Exception):
    """A Slack error answer: ``{"ok": false, "error": code, ...extra}`` with ``status``.

    ``extra`` carries Slack's additional fields (``needed``/``provided`` for scope errors,
    ``response_metadata.messages`` for ``invalid_arguments``); ``headers`` is used by 429s.
    """

    def __init__(
        self,
        error: str,
        *,
        status: int = 200,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body Slack sends for this error."""
        return {"ok": False, "error": self.error, **self.extra}


def invalid_arguments(*messages: str) -> SlackError:
    """Slack's answer for a missing/malformed required argument."""
    return SlackError("invalid_arguments", extra={"response_metadata": {"messages": list(messages)}})


def missing_argument(name: str) -> SlackError:
    """``invalid_arguments`` naming one missing field, worded as Slack words it."""
    return invalid_arguments(f"[ERROR] missing required field: {name}")


@dataclass(frozen=True, slots=True)
class Upload:
    """A file sent in a multipart request."""

    data: bytes
    filename: str
    mime_type: str


class Params:
    """The arguments of one Web API call, whatever encoding the client used.

    Values from forms and query strings are strings; JSON bodies keep their types. Structured
    arguments (``blocks``, ``files``, ``chunks``) arrive JSON-encoded in forms: :meth:`get_json`
    accepts both shapes.
    """

    __slots__ = ("files", "values")

    def __init__(self, values: dict[str, Any], files: dict[str, Upload] | None = None) -> None:
        self.values = values
        self.files = files or {}

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def get_str(self, name: str, default: str | None = None) -> str | None:
        """A string argument (numbers and booleans from JSON are converted); ``""`` is kept."""
        value = self.values.get(name)
        if value is None:
            return default
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if isinstance(value, int | float) else json.dumps(value)

    def require(self, name: str) -> str:
        """A required non-empty string argument, else ``invalid_arguments``."""
        value = self.get_str(name)
        if not value:
            raise missing_argument(name)
        return value

    def get_int(self, name: str, default: int | None = None) -> int | None:
        """An integer argument; malformed -> ``invalid_arguments``."""
        value = self.values.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except (TypeError, ValueError):
            raise invalid_arguments(f"[ERROR] invalid integer for field: {name}") from None

    def get_bool(self, name: str, default: bool = False) -> bool:
        """``true``/``1`` (forms) or a JSON boolean."""
        value = self.values.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("true", "1")

    def get_json(self, name: str, *, error: str = "invalid_arguments") -> Any:
        """A structured argument: JSON values as they are, strings decoded (else ``error``)."""
        value = self.values.get(name)
        if not isinstance(value, str):
            return value
        if value == "":
            return None
        try:
            return json.loads(value)
        except ValueError:
            if error == "invalid_arguments":
                raise invalid_arguments(f"[ERROR] invalid JSON for field: {name}") from None
            raise SlackError(error) from None


def bearer_token(request: Any) -> str | None:
    """The token from ``Authorization: Bearer …`` (None when absent or not a bearer token)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def read_params(request: Any) -> Params:
    """Build :class:`Params` from a Starlette request (query string merged with the body)."""
    values: dict[str, Any] = dict(request.query_params)
    files: dict[str, Upload] = {}
    if request.method != "POST":
        return Params(values)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        body = await request.body()
        if body:
            try:
                decoded = json.loads(body)
            except ValueError:
                raise SlackError("invalid_json") from None
            if not isinstance(decoded, dict):
                raise SlackError("json_not_object")
            values.update(decoded)
        return Params(values)
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        async with request.form(max_files=16, max_fields=1000, max_part_size=1 << 30) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    files[key] = Upload(
                        await value.read(),
                        value.filename or key,
                        value.content_type or "application/octet-stream",
                    )
                else:
                    values[key] = value
    return Params(values, files)
