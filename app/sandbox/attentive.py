"""Attentive API emulator (base `/attentive/v1`): subscriptions, custom events and attributes, texts.

Why it keeps state: the Annex flow checks eligibility before subscribing because re-subscribing an
existing TEXT subscriber sends that person an "already subscribed" text. The emulator remembers
subscriptions per (phone or e-mail, channel), answers eligibility from them, returns
NEWLY_CREATED / PREVIOUSLY_CREATED, and counts each repeat TEXT subscribe as an unwanted text in
the stats (`repeat_subscribe_texts`), so a test can prove the relay never causes one.
Limits: 150 calls/s for the token overall, subscribe 10/s, unsubscribe 5/s; 429 carries
`x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` (seconds). Errors are
`{"error": {"id", "message"}}`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from aiohttp import web

from app.sandbox.core import (
    Ctx,
    Emulator,
    Endpoint,
    Invalid,
    Result,
    bearer_ok,
    is_e164,
    is_email,
    need_dict,
    parse_time,
)
from app.sandbox.limits import LimitState

FORBIDDEN = set("\"'(){}[]\\|,")
CHANNELS = ("TEXT", "EMAIL")
STALE_AFTER = timedelta(hours=12)


def _user(body: dict, *, allow_external: bool = False) -> dict:
    user = body.get("user")
    if not isinstance(user, dict):
        raise Invalid(400, "user is required")
    phone, email = user.get("phone"), user.get("email")
    if phone is not None and not is_e164(phone):
        raise Invalid(400, "user.phone must be an E.164 number")
    if email is not None and not is_email(email):
        raise Invalid(400, "user.email is not a valid e-mail address")
    external = user.get("externalIdentifiers") or body.get("externalIdentifiers")
    if not phone and not email and not (allow_external and isinstance(external, dict)
                                        and external):
        raise Invalid(400, "user needs a phone or an email")
    return user


def _keys(user: dict) -> list[tuple[str, str]]:
    """(channel, contact) pairs a user addresses: TEXT by phone, EMAIL by e-mail."""
    out = []
    if user.get("phone"):
        out.append(("TEXT", user["phone"]))
    if user.get("email"):
        out.append(("EMAIL", user["email"]))
    return out


class Attentive(Emulator):
    name = "attentive"
    prefix = "/attentive/v1"
    buckets: ClassVar[dict[str, tuple[int, float]]] = {
        "attentive.all": (150, 1.0),
        "attentive.subscribe": (10, 1.0),
        "attentive.unsubscribe": (5, 1.0),
    }

    def __init__(self, hub) -> None:
        super().__init__(hub)
        self.subscribed: dict[tuple[str, str], bool] = {}  # (channel, contact) -> active
        self.reset_stats()

    def reset_stats(self) -> None:
        self.counts = {"repeat_subscribe_texts": 0, "stale_events": 0,
                       "texts_sent": 0, "texts_to_unsubscribed": 0}

    def endpoints(self) -> list[Endpoint]:
        every = ("attentive.all",)
        return [
            Endpoint("subscriptions.get", "GET", "/subscriptions", self.eligibility, every,
                     items=False),
            Endpoint("subscriptions", "POST", "/subscriptions", self.subscribe,
                     every + ("attentive.subscribe",)),
            Endpoint("subscriptions/unsubscribe", "POST", "/subscriptions/unsubscribe",
                     self.unsubscribe, every + ("attentive.unsubscribe",)),
            Endpoint("events/custom", "POST", "/events/custom", self.event, every),
            Endpoint("attributes/custom", "POST", "/attributes/custom", self.attributes, every),
            Endpoint("text/send", "POST", "/text/send", self.text, every),
        ]

    def authorized(self, request: web.Request, tail: str, raw: bytes) -> bool:
        return bearer_ok(request, self.hub.keys["ATTENTIVE_API_KEY"])

    def error_body(self, status: int, message: str) -> Any:
        return {"error": {"id": self.hub.uuid4(), "message": message}}

    def rate_limited_message(self) -> str:
        return "Too many requests"

    def limit_headers(self, state: LimitState) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(state.limit),
            "x-ratelimit-remaining": str(state.remaining),
            "x-ratelimit-reset": str(max(1, round(state.reset_s))),
        }

    async def eligibility(self, ctx: Ctx) -> Result:
        phone, email = ctx.query.get("phone"), ctx.query.get("email")
        if phone and phone.startswith(" "):  # an unescaped "+" decodes to a space
            phone = "+" + phone.lstrip()
        if not phone and not email:
            raise Invalid(400, "phone or email is required")
        if phone and not is_e164(phone):
            raise Invalid(400, "phone must be an E.164 number")
        user = {"phone": phone, "email": email}
        out = [{"subscription": {"type": "MARKETING", "channel": ch},
                "eligibility": {"isEligible": self.subscribed.get((ch, contact), False)}}
               for ch, contact in _keys(user)]
        return Result(200, {"subscriptionEligibilities": out})

    async def subscribe(self, ctx: Ctx) -> Result:
        body = need_dict(ctx.body)
        user = _user(body)
        source = body.get("signUpSourceId")
        if not isinstance(source, str) or not source:
            raise Invalid(400, "signUpSourceId is required")
        responses = []
        for ch, contact in _keys(user):
            before = self.subscribed.get((ch, contact), False)
            self.subscribed[(ch, contact)] = True
            if before and ch == "TEXT":
                self.counts["repeat_subscribe_texts"] += 1
            responses.append({
                "subscription": {"type": "MARKETING", "channel": ch},
                "subscriptionCreationStatus": "PREVIOUSLY_CREATED" if before else "NEWLY_CREATED",
            })
        return Result(202, {"user": user, "subscriptionResponses": responses})

    async def unsubscribe(self, ctx: Ctx) -> Result:
        body = need_dict(ctx.body)
        user = _user(body)
        wanted = body.get("subscriptions")
        if wanted is not None:
            if not isinstance(wanted, list) or not all(
                isinstance(s, dict) and s.get("channel") in CHANNELS for s in wanted
            ):
                raise Invalid(400, "subscriptions must be a list of {type, channel}")
            channels = {s["channel"] for s in wanted}
        else:
            channels = set(CHANNELS)
        responses = []
        for ch, contact in _keys(user):
            if ch not in channels:
                continue
            before = self.subscribed.get((ch, contact), False)
            self.subscribed[(ch, contact)] = False
            responses.append({
                "subscription": {"type": "MARKETING", "channel": ch},
                "subscriptionUnsubscribeStatus":
                    "NEWLY_UNSUBSCRIBED" if before else "PREVIOUSLY_UNSUBSCRIBED",
            })
        return Result(202, {"user": user, "subscriptionResponses": responses})

    async def event(self, ctx: Ctx) -> Result:
        body = need_dict(ctx.body)
        kind = body.get("type")
        if not isinstance(kind, str) or not kind.strip():
            raise Invalid(400, "type is required")
        if FORBIDDEN & set(kind):
            raise Invalid(400, "type contains a forbidden character")
        _user(body, allow_external=True)
        if "properties" in body and not isinstance(body["properties"], dict):
            raise Invalid(400, "properties must be an object")
        if "externalEventId" in body and not isinstance(body["externalEventId"], str):
            raise Invalid(400, "externalEventId must be a string")
        if "occurredAt" in body:
            when = parse_time(body["occurredAt"])
            if when is None:
                raise Invalid(400, "occurredAt must be ISO-8601")
            if datetime.now(UTC) - when > STALE_AFTER:
                self.counts["stale_events"] += 1  # accepted, but triggers no journey
        return Result(200, {})

    async def attributes(self, ctx: Ctx) -> Result:
        body = need_dict(ctx.body)
        _user(body, allow_external=True)
        props = body.get("properties")
        if not isinstance(props, dict) or not props:
            raise Invalid(400, "properties must be a non-empty object")
        if any(isinstance(v, (dict, list)) for v in props.values()):
            raise Invalid(400, "properties must be flat key/values")
        return Result(200, {})

    async def text(self, ctx: Ctx) -> Result:
        """Tolerant about the body (the contract gives no schema): the number comes from `to`
        (a string or `{phone}`) or `user.phone`, the text from `text`, `body` or `message`."""
        body = need_dict(ctx.body)
        to = body.get("to")
        phone = to.get("phone") if isinstance(to, dict) else to
        phone = phone or (body.get("user") or {}).get("phone")
        if not is_e164(phone):
            raise Invalid(400, "a recipient E.164 phone number is required")
        message = body.get("text") or body.get("body") or body.get("message")
        if isinstance(message, dict):
            message = message.get("body") or message.get("text")
        if not isinstance(message, str) or not message:
            raise Invalid(400, "message text is required")
        self.counts["texts_sent"] += 1
        if not self.subscribed.get(("TEXT", phone), False):
            self.counts["texts_to_unsubscribed"] += 1
        return Result(202, {"messageId": self.hub.uuid4()})

    def extra_stats(self) -> dict[str, Any]:
        return dict(self.counts)
