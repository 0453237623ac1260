"""MAAC webhook delivery (`message.first_open`), signed and retried the way MAAC does it.

Why: the relay's `/webhooks/maac` endpoint must verify `CrescLab-Signature` (hex HMAC-SHA256 of the
raw body with the share secret) and de-duplicate on `CrescLab-Idempotency-Key`, because MAAC retries
after 1 s, 2 s and 4 s with the same key when the reply is not 2xx or the call times out. The body
is serialised once and every attempt sends the same bytes, key and signature.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import structlog

if TYPE_CHECKING:
    from app.sandbox.server import Hub

log = structlog.get_logger(__name__)
ATTEMPT_TIMEOUT_S = 5.0


def sign_webhook(body: bytes, secret: str) -> str:
    """Hex HMAC-SHA256 of the raw body with the endpoint's share secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def first_open_body(event_id: int, line_uid: str, customer_id: Any) -> bytes:
    return orjson.dumps({
        "timestamp": int(time.time() * 1000),
        "topic": "message.first_open",
        "data": {"message_type": "openapi", "message_id": event_id, "line_uid": line_uid,
                 "customer_id": customer_id},
    })


class WebhookSender:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.reset_stats()

    def reset_stats(self) -> None:
        self.counts = {"scheduled": 0, "delivered": 0, "failed": 0, "attempts": 0}

    def first_open(self, delay_s: float, event_id: int, line_uid: str, customer_id: Any) -> None:
        """Schedule one `message.first_open` webhook, if a webhook URL is configured."""
        if not self.hub.webhook_url:
            return
        self.counts["scheduled"] += 1
        self.hub.spawn(self._deliver(delay_s, event_id, line_uid, customer_id))

    async def _deliver(self, delay_s: float, event_id: int, line_uid: str, customer_id: Any) -> None:
        await asyncio.sleep(delay_s)
        body = first_open_body(event_id, line_uid, customer_id)
        headers = {
            "Content-Type": "application/json",
            "CrescLab-Idempotency-Key": self.hub.uuid4(),
            "CrescLab-Signature": sign_webhook(body, self.hub.webhook_secret),
        }
        for wait in (0.0, *self.hub.webhook_retry_delays):
            if wait:
                await asyncio.sleep(wait)
            self.counts["attempts"] += 1
            if await self._attempt(body, headers):
                self.counts["delivered"] += 1
                return
        self.counts["failed"] += 1
        log.warning("sandbox.maac.webhook_gave_up", attempts=len(self.hub.webhook_retry_delays) + 1)

    async def _attempt(self, body: bytes, headers: dict[str, str]) -> bool:
        session = self.hub.http
        if session is None:
            return False
        try:
            timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
            async with session.post(self.hub.webhook_url, data=body, headers=headers,
                                    timeout=timeout) as resp:
                await resp.read()
                return 200 <= resp.status < 300
        except (TimeoutError, aiohttp.ClientError):
            return False
