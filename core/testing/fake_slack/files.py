"""Files v2 (``files.getUploadURLExternal`` → upload → ``files.completeUploadExternal``) and
authenticated downloads of ``url_private``.

Like Slack: the upload URL takes the raw bytes (or a multipart ``file`` field) and answers
``OK - <length>`` as text/plain; the file appears in a channel (or thread) only once
``completeUploadExternal`` shares it. Downloading ``url_private`` needs the bot token as
``Authorization: Bearer``; without it Slack redirects to its sign-in page and answers an HTML
page with status 200 — the classic "my image is an HTML file" bug — and the fake does the same.
Files the bot may not read (``restricted``) answer 403.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from relaybot.core.testing.fake_slack.methods import CallInfo, Handler, WebApi
from relaybot.core.testing.fake_slack.protocol import Params, SlackError, bearer_token, invalid_arguments
from relaybot.core.testing.fake_slack.store import SlackMessage, StoredFile

#: what Slack accepts in one upload (1 GB); the fake keeps files in memory, so tests stay small
MAX_UPLOAD = 1 << 30

_SIGN_IN_PAGE = (
    "<!DOCTYPE html><html><head><title>Slack</title></head>"
    "<body><h1>Sign in to Fake Team</h1></body></html>"
)


class Files:
    """The files v2 methods and the upload/download routes."""

    def __init__(self, api: WebApi, base_url: Callable[[], str], bot_tokens: Callable[[], set[str]]) -> None:
        self.api = api
        self._base_url = base_url
        self._bot_tokens = bot_tokens
        self._uploads: dict[str, StoredFile] = {}  # upload key -> pending file
        self.handlers: dict[str, Handler] = {
            "files.getUploadURLExternal": self.get_upload_url,
            "files.completeUploadExternal": self.complete_upload,
        }
        #: every download attempt: (file id or path, HTTP status)
        self.downloads: list[tuple[str, int]] = []

    async def get_upload_url(self, params: Params, call: CallInfo) -> dict[str, Any]:
        filename = params.get_str("filename")
        if not filename:
            raise invalid_arguments("[ERROR] missing required field: filename")
        length = params.get_int("length")
        if length is None:
            raise invalid_arguments("[ERROR] missing required field: length")
        if length <= 0 or length > MAX_UPLOAD:
            raise invalid_arguments("[ERROR] length must be between 1 and 1073741824")
        stored = StoredFile(self.api.ids.new("F"), filename, "application/octet-stream", b"",
                            self.api.ws.bot_user_id, completed=False, declared_length=length)  # fmt: skip
        self.api.store.files[stored.id] = stored
        key = secrets.token_urlsafe(12)
        self._uploads[key] = stored
        call.text = filename
        call.extra["file_id"] = stored.id
        return {"upload_url": f"{self._base_url()}/upload/v1/{key}", "file_id": stored.id}

    async def handle_upload(self, request: Request) -> Response:
        """``POST /upload/v1/<key>``: the bytes of a pending file (raw body or multipart)."""
        stored = self._uploads.get(request.path_params["key"])
        if stored is None:
            return PlainTextResponse("Not Found", status_code=404)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            async with request.form(max_part_size=MAX_UPLOAD) as form:
                upload = form.get("file")
                if isinstance(upload, UploadFile):
                    data, mime = await upload.read(), upload.content_type
                else:
                    data, mime = str(upload or "").encode(), None
        else:
            data, mime = await request.body(), None
        stored.data = data
        stored.mimetype = mime if mime and mime != "application/octet-stream" else _guess_mime(stored.name)
        return PlainTextResponse(f"OK - {len(data)}")

    async def complete_upload(self, params: Params, call: CallInfo) -> dict[str, Any]:
        api = self.api
        items = params.get_json("files")
        if not isinstance(items, list) or not items:
            raise invalid_arguments("[ERROR] missing required field: files")
        channel_id = params.get_str("channel_id") or None
        channels = [c for c in (params.get_str("channels") or "").split(",") if c]
        targets = [channel_id] if channel_id else channels
        for target in targets:
            api.writable_channel(target)
        thread_ts = params.get_str("thread_ts") or None
        if thread_ts and targets:
            thread_ts = api.thread_parent(targets[0], thread_ts).ts
        stored_files: list[StoredFile] = []
        for item in items:
            stored = api.store.files.get(str(item.get("id", ""))) if isinstance(item, dict) else None
            if stored is None or stored.completed or not stored.data:
                raise SlackError("file_not_found")
            stored.title = str(item.get("title") or stored.name)
            stored_files.append(stored)
        base, team = self._base_url(), api.ws.team_id
        for stored in stored_files:
            stored.completed = True
            stored.channels = list(targets)
            stored.thread_ts = thread_ts
        comment = params.get_str("initial_comment") or ""
        for target in targets:  # the share is a message from the bot, carrying the files
            message = SlackMessage(target, api.ids.ts(), api.ws.bot_user_id, True, text=comment,
                                   thread_ts=thread_ts, subtype="file_share",
                                   files=[f.to_api(base, team) for f in stored_files])  # fmt: skip
            api.store.add_message(message)
            message.history.append((api.clock(), "files.completeUploadExternal", message.visible))
            call.ts = message.ts
        call.channel = targets[0] if targets else None
        call.text = comment
        call.extra["file_ids"] = [f.id for f in stored_files]
        return {"files": [f.to_api(base, team) for f in stored_files]}

    async def handle_download(self, request: Request) -> Response:
        """``GET /files-pri/<team>-<id>/[download/]<name>``: the bytes, for the bot token only."""
        file_key = request.path_params["file_key"]
        _team, _, file_id = file_key.partition("-")
        token = bearer_token(request)
        if token is None or token not in self._bot_tokens():
            self.downloads.append((file_id, 302))
            return RedirectResponse(f"{self._base_url()}/signin?redir={request.url.path}", status_code=302)
        stored = self.api.store.files.get(file_id)
        if stored is None or not stored.completed:
            self.downloads.append((file_id, 404))
            return PlainTextResponse("File not found", status_code=404)
        if stored.restricted:
            self.downloads.append((file_id, 403))
            return PlainTextResponse("Forbidden", status_code=403)
        self.downloads.append((file_id, 200))
        return Response(stored.data, media_type=stored.mimetype,
                        headers={"Content-Disposition": f'attachment; filename="{stored.name}"'})  # fmt: skip

    async def handle_sign_in(self, request: Request) -> Response:
        """Where unauthenticated downloads end up: an HTML page with status 200."""
        return HTMLResponse(_SIGN_IN_PAGE)


def _guess_mime(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name)[0] or "application/octet-stream"
