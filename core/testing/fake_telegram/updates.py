"""Incoming updates: the queue behind ``getUpdates`` long polling and webhook delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relaybot.core.testing.fake_telegram.protocol import ApiError, bad_request

_log = logging.getLogger(__name__)

#: Telegram leaves these out unless ``allowed_updates`` names them explicitly.
_OPT_IN = frozenset({"chat_member", "message_reaction", "message_reaction_count"})


@dataclass(slots=True)
class WebhookDelivery:
    """One POST of an update to the webhook URL (``status`` 0 when the connection failed)."""

    t: float
    url: str
    update_id: int
    status: int


def update_type(update: dict[str, Any]) -> str:
    """The update's kind: its one key besides ``update_id`` (``message``, ``callback_query``...)."""
    return next((key for key in update if key != "update_id"), "")


class UpdateQueue:
    """Pending updates in order, served by long polling or pushed to a webhook.

    Like Telegram: ``getUpdates`` with ``offset`` confirms (drops) every update below it; a
    newer ``getUpdates`` ends an older one still waiting with 409 Conflict; while a webhook is
    set ``getUpdates`` answers 409 and a single worker POSTs updates in order, retrying until
    the receiver answers 2xx.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._pending: deque[dict[str, Any]] = deque()
        self._next_id = 1
        # replaced on every push, so each waiter sees exactly the wake-up it waited for
        self._wake = asyncio.Event()
        self._poll_generation = 0
        self._closing = False
        self.waiting = 0  # long polls currently held open
        self.allowed_updates: list[str] | None = None
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        self.webhook_max_connections = 40
        self.last_error_date: int | None = None
        self.last_error_message: str | None = None
        self.deliveries: list[WebhookDelivery] = []
        self._client: Any = None
        self._worker: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the webhook HTTP client and delivery worker."""
        import httpx  # lazy: part of the testing kit only

        self._closing = False
        self._client = httpx.AsyncClient(timeout=10.0)
        self._worker = asyncio.create_task(self._deliver_forever(), name="fake-telegram-webhook")

    async def stop(self) -> None:
        """Release long polls (they answer an empty list) and stop webhook delivery."""
        self._closing = True
        self._signal()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- producing -------------------------------------------------------------------------

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Assign the next ``update_id`` and queue the update; wake pollers/the webhook worker."""
        full = {"update_id": self._next_id, **{k: v for k, v in update.items() if k != "update_id"}}
        self._next_id += 1
        self._pending.append(full)
        self._signal()
        return full

    def _signal(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    @property
    def pending_count(self) -> int:
        """Updates not yet confirmed (polling) or delivered (webhook)."""
        return len(self._pending)

    def drop_pending(self) -> None:
        """Forget every pending update (``drop_pending_updates=True``)."""
        self._pending.clear()

    # -- long polling ----------------------------------------------------------------------

    async def get_updates(
        self, offset: int | None, limit: int, timeout: float, allowed: list[str] | None
    ) -> list[dict[str, Any]]:
        """Answer ``getUpdates``: wait up to ``timeout`` seconds for at least one update."""
        if self.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        if allowed is not None:
            self.allowed_updates = allowed
        if offset is not None:
            self._confirm(offset)
        self._poll_generation += 1
        generation = self._poll_generation
        self._signal()  # an older poll still waiting wakes up and ends with 409
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            ready = self._deliverable(limit)
            if ready or self._closing:
                return ready
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            wake = self._wake
            self.waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), remaining)
            finally:
                self.waiting -= 1
            if generation != self._poll_generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )

    def _confirm(self, offset: int) -> None:
        pending = self._pending
        if offset < 0:  # Telegram: keep only the last -offset updates
            while len(pending) > -offset:
                pending.popleft()
            return
        while pending and pending[0]["update_id"] < offset:
            pending.popleft()

    def _allowed(self, update: dict[str, Any]) -> bool:
        kind = update_type(update)
        if self.allowed_updates:
            return kind in self.allowed_updates
        return kind not in _OPT_IN

    def _deliverable(self, limit: int) -> list[dict[str, Any]]:
        # updates of a kind the bot did not ask for are never delivered: drop them
        if any(not self._allowed(u) for u in self._pending):
            self._pending = deque(u for u in self._pending if self._allowed(u))
        return [self._pending[k] for k in range(min(limit, len(self._pending)))]

    # -- webhook ---------------------------------------------------------------------------

    def set_webhook(
        self,
        url: str,
        *,
        secret: str | None,
        allowed: list[str] | None,
        drop_pending: bool,
        max_connections: int | None,
    ) -> None:
        """Switch to webhook mode (an empty ``url`` switches back to polling)."""
        if url and not url.startswith(("http://", "https://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if secret is not None and (
            not 1 <= len(secret) <= 256 or not all(c.isascii() and (c.isalnum() or c in "_-") for c in secret)
        ):
            raise bad_request("bad webhook: secret token contains unallowed characters")
        if drop_pending:
            self.drop_pending()
        if allowed is not None:
            self.allowed_updates = allowed
        self.webhook_url = url
        self.webhook_secret = secret if url else None
        self.webhook_max_connections = max_connections or 40
        self.last_error_date = self.last_error_message = None
        self._poll_generation += 1  # a waiting long poll ends with 409
        self._signal()

    def webhook_info(self) -> dict[str, Any]:
        """The Bot API ``WebhookInfo`` object."""
        info: dict[str, Any] = {
            "url": self.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._pending),
        }
        if self.webhook_url:
            info["max_connections"] = self.webhook_max_connections
            if self.allowed_updates:
                info["allowed_updates"] = list(self.allowed_updates)
            if self.last_error_date is not None:
                info["last_error_date"] = self.last_error_date
                info["last_error_message"] = self.last_error_message
        return info

    async def _deliver_forever(self) -> None:
        failures = 0
        while not self._closing:
            wake = self._wake
            if not self.webhook_url or not self._deliverable(1):
                await wake.wait()
                continue
            update = self._pending[0]
            url = self.webhook_url
            headers = {"Content-Type": "application/json"}
            if self.webhook_secret:
                headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook_secret
            status = 0
            try:
                response = await self._client.post(url, json=update, headers=headers)
                status = response.status_code
                error = None if 200 <= status < 300 else f"Wrong response from the webhook: {status}"
            except Exception as exc:  # any failure is reported the way Telegram does
                error = f"Connection failed: {type(exc).__name__}"
            self.deliveries.append(WebhookDelivery(self._clock(), url, update["update_id"], status))
            if error is None:
                failures = 0
                if self._pending and self._pending[0] is update:
                    self._pending.popleft()
                continue
            failures += 1
            self.last_error_date = int(time.time())  # a Unix date, like Telegram's
            self.last_error_message = error
            _log.debug("fake Telegram webhook delivery failed: %s", error)
            # retry soon (tests are short) but back off so a dead receiver costs little
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(2.0, 0.05 * 2**failures))
