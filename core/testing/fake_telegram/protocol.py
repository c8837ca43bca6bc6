"""Bot API wire format: request parameters (form, multipart, JSON, query) and error answers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile


class ApiError(Exception):
    """A Bot API error answer: ``{"ok": false, "error_code": status, "description": ...}``.

    ``description`` is the full Telegram text, e.g. ``"Bad Request: message is too long"``.
    ``parameters`` becomes the ``ResponseParameters`` object (``retry_after``,
    ``migrate_to_chat_id``) that PTB turns into ``RetryAfter`` / ``ChatMigrated``.
    """

    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        """The JSON body Telegram sends for this error."""
        body: dict[str, Any] = {
            "ok": False, "error_code": self.status, "description": self.description
        }  # fmt: skip
        if self.parameters:
            body["parameters"] = self.parameters
        return body


def bad_request(detail: str) -> ApiError:
    """A 400 with Telegram's ``"Bad Request: "`` prefix."""
    return ApiError(400, f"Bad Request: {detail}")


@dataclass(frozen=True, slots=True)
class Upload:
    """A file sent in a multipart request."""

    data: bytes
    filename: str
    mime_type: str


class Params:
    """The parameters of one Bot API call, whatever encoding the client used.

    PTB sends ``application/x-www-form-urlencoded`` (strings raw, everything else JSON-encoded)
    or ``multipart/form-data`` when uploading; other clients send a JSON body or a query string.
    The getters accept both shapes and raise the 400 Telegram would for a malformed value.
    """

    __slots__ = ("_files", "_values")

    def __init__(self, values: dict[str, Any], files: dict[str, Upload] | None = None) -> None:
        self._values = values
        self._files = files or {}

    def __contains__(self, name: str) -> bool:
        return name in self._values or name in self._files

    def raw(self, name: str) -> Any:
        """The value as received (str from forms, any JSON type from JSON bodies), or None."""
        return self._values.get(name)

    def get_str(self, name: str, default: str | None = None) -> str | None:
        """A string parameter (numbers from JSON bodies are converted)."""
        value = self._values.get(name)
        if value is None:
            return default
        return value if isinstance(value, str) else json.dumps(value)

    def get_int(self, name: str, *, required: bool = False, empty: str | None = None) -> int | None:
        """An integer parameter; ``required`` raises 400 ``<empty or "<name> is empty">``."""
        value = self._values.get(name)
        if value is None or value == "":
            if required:
                raise bad_request(empty or f"{name} is empty")
            return None
        if isinstance(value, bool):
            raise bad_request(f"invalid {name} specified")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad_request(f"invalid {name} specified") from None

    def chat_id(self) -> int | str:
        """``chat_id``: an integer, or ``@username`` of a public chat."""
        value = self._values.get("chat_id")
        if value is None or value == "":
            raise bad_request("chat_id is empty")
        if isinstance(value, str) and value.startswith("@"):
            return value
        return self.get_int("chat_id", required=True)  # type: ignore[return-value]

    def get_bool(self, name: str, default: bool = False) -> bool:
        """A boolean parameter (``true``/``false``/``1``/``0`` in forms)."""
        value = self._values.get(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("true", "1")

    def get_json(self, name: str) -> Any:
        """A structured parameter (arrays/objects arrive JSON-encoded in forms)."""
        value = self._values.get(name)
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(f"can't parse {name} JSON object") from None

    def get_file(self, name: str) -> Upload | str | None:
        """An uploaded file, or the string (file_id / URL / ``attach://x``) sent instead."""
        if name in self._files:
            return self._files[name]
        value = self.get_str(name)
        if value and value.startswith("attach://"):
            attached = self._files.get(value.removeprefix("attach://"))
            if attached is None:
                raise bad_request(f"wrong file identifier/HTTP URL specified for {name}")
            return attached
        return value


async def read_params(request: Any) -> Params:
    """Build :class:`Params` from a Starlette request (query string, JSON, form or multipart)."""
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
                raise bad_request("can't parse JSON request body") from None
            if not isinstance(decoded, dict):
                raise bad_request("JSON request body must be an object")
            values.update(decoded)
        return Params(values)
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        # uploads up to the 50 MB Bot API limit (plus slack) stay in memory: it is a test fake
        async with request.form(max_files=64, max_fields=1000, max_part_size=64 << 20) as form:
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
