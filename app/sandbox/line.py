"""LINE Messaging API emulator: `POST /line/v2/bot/message/push`.

Why: LINE's own idempotency is the `X-Line-Retry-Key` header (a UUID): the first accepted request
with a key is remembered for 24 hours and any repeat gets 409 with `x-line-accepted-request-id`
(the id of the accepted request), which the relay must read as "already delivered". A request that
failed (fault, 4xx) does not consume the key. Recipients whose id starts with "Ublocked" have
blocked the account: 400 with LINE's `{"message", "details"}`. Bodies over 2 MB are 413; more than
2,000 requests/s is 429 without Retry-After, as LINE does.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar

from aiohttp import web

from app.sandbox.core import Ctx, Emulator, Endpoint, Invalid, Result, bearer_ok, need_dict

RETRY_KEY_TTL_S = 24 * 3600
MAX_BODY = 2 * 1024 * 1024
MESSAGE_TYPES = {"text", "sticker", "image", "video", "audio", "location", "imagemap",
                 "template", "flex", "textV2"}


def blocked(uid: str) -> bool:
    return uid.startswith("Ublocked")


class Line(Emulator):
    name = "line"
    prefix = "/line"
    buckets: ClassVar[dict[str, tuple[int, float]]] = {"line.push": (2000, 1.0)}

    def __init__(self, hub) -> None:
        super().__init__(hub)
        self.retry_keys: dict[str, tuple[str, float, list[dict]]] = {}
        self.reset_stats()

    def reset_stats(self) -> None:
        self.counts = {"retry_key_conflicts": 0, "blocked": 0}

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("push", "POST", "/v2/bot/message/push", self.push, ("line.push",))]

    def authorized(self, request: web.Request, tail: str, raw: bytes) -> bool:
        return bearer_ok(request, self.hub.keys["LINE_CHANNEL_TOKEN"])

    def error_body(self, status: int, message: str) -> Any:
        return {"message": message}

    def rate_limited_message(self) -> str:
        return "The API rate limit has been exceeded. Try again later."

    async def push(self, ctx: Ctx) -> Result:
        if len(ctx.raw) > MAX_BODY:
            raise Invalid(413, "Request entity too large")
        key = ctx.request.headers.get("X-Line-Retry-Key")
        now = time.monotonic()
        if key is not None:
            try:
                uuid.UUID(key)
            except ValueError:
                raise Invalid(400, "The value for the 'X-Line-Retry-Key' header is invalid"
                              ) from None
            seen = self.retry_keys.get(key)
            if seen and now - seen[1] < RETRY_KEY_TTL_S:
                self.counts["retry_key_conflicts"] += 1
                raise Invalid(409, "retry key accepted", body={
                    "message": "The retry key is already accepted", "sentMessages": seen[2],
                }, headers={"x-line-accepted-request-id": seen[0]})
        body = need_dict(ctx.body)
        to = body.get("to")
        if not isinstance(to, str) or len(to) != 33 or to[0] not in "UCR":
            raise Invalid(400, "The request body has 1 error(s)", body={
                "message": "The request body has 1 error(s)",
                "details": [{"message": "Invalid user ID", "property": "to"}]})
        messages = body.get("messages")
        if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
            raise Invalid(400, "The request body has 1 error(s)", body={
                "message": "The request body has 1 error(s)",
                "details": [{"message": "Size must be between 1 and 5", "property": "messages"}]})
        for i, msg in enumerate(messages):
            problem = _message_error(msg)
            if problem:
                raise Invalid(400, "The request body has 1 error(s)", body={
                    "message": "The request body has 1 error(s)",
                    "details": [{"message": problem, "property": f"messages[{i}]"}]})
        if blocked(to):
            self.counts["blocked"] += 1
            raise Invalid(400, "Failed to send messages", body={
                "message": "Failed to send messages",
                "details": [{"message": "The user has blocked the account or is not a friend",
                             "property": "to"}]})
        request_id = self.hub.uuid4()
        sent = [{"id": str(10**17 + int(self.hub.rng.random() * 10**16)),
                 "quoteToken": self.hub.uuid4()} for _ in messages]
        if key is not None:
            self.retry_keys[key] = (request_id, now, sent)
        return Result(200, {"sentMessages": sent}, headers={"x-line-request-id": request_id})

    def extra_stats(self) -> dict[str, Any]:
        return dict(self.counts)


def _message_error(msg: Any) -> str | None:
    if not isinstance(msg, dict) or msg.get("type") not in MESSAGE_TYPES:
        return "Invalid message type"
    if msg["type"] == "text":
        text = msg.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= 5000:
            return "text must be 1 to 5000 characters"
    return None
