"""Braze REST API emulator: `/users/track` and campaign/canvas trigger sends.

Why these rules: the relay's Braze sink batches up to 75 objects per array and must treat Braze's
partial success (200 + `errors[{type, input_array, index}]`) as "only the indexed items failed". The
emulator therefore accepts valid objects and names invalid ones by index, refuses a request outright
only for what Braze refuses outright (more than 75 objects: 400 "Max Input Length Exceeded"; more
than 50 recipients; both `broadcast` and `recipients`), and limits `/users/track` to 3,000 calls per
3 s, trigger sends to 250,000 per hour and broadcasts to 250 per minute, answering 429 with
`X-RateLimit-Limit/Remaining/Reset` (reset = epoch seconds).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from aiohttp import web

from app.sandbox.core import (
    Ctx,
    Emulator,
    Endpoint,
    Invalid,
    Result,
    bearer_ok,
    is_int,
    is_number,
    need_dict,
    parse_time,
)
from app.sandbox.limits import LimitState

ARRAYS = ("attributes", "events", "purchases")
MAX_PER_ARRAY = 75
MAX_RECIPIENTS = 50
MAX_ENTRY_PROPERTIES = 50 * 1024
USER_KEYS = ("external_id", "user_alias", "braze_id", "email", "phone")


def _user_error(obj: dict) -> str | None:
    present = [k for k in USER_KEYS if obj.get(k) not in (None, "")]
    if not present:
        return "Missing user identifier (external_id, user_alias, braze_id, email or phone)"
    alias = obj.get("user_alias")
    if "user_alias" in present and not (
        isinstance(alias, dict) and alias.get("alias_name") and alias.get("alias_label")
    ):
        return "Invalid user_alias: alias_name and alias_label are required"
    return None


def _object_error(kind: str, obj: Any) -> str | None:
    """Why Braze would reject one object of `kind`, or None when it is valid."""
    if not isinstance(obj, dict):
        return "Object must be a JSON object"
    problem = _user_error(obj)
    if problem:
        return problem
    if kind == "events":
        if not isinstance(obj.get("name"), str) or not obj["name"]:
            return "Event name is required"
        if parse_time(obj.get("time")) is None:
            return "Event time is required and must be ISO-8601"
        if "properties" in obj and not isinstance(obj["properties"], dict):
            return "Event properties must be an object"
    elif kind == "purchases":
        if not isinstance(obj.get("product_id"), str) or not obj["product_id"]:
            return "Purchase product_id is required"
        currency = obj.get("currency")
        if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
            return "Purchase currency must be a three-letter ISO 4217 code"
        if not is_number(obj.get("price")):
            return "Purchase price is required and must be a number"
        if parse_time(obj.get("time")) is None:
            return "Purchase time is required and must be ISO-8601"
        quantity = obj.get("quantity", 1)
        if not is_int(quantity) or not 1 <= quantity <= 100:
            return "Purchase quantity must be an integer between 1 and 100"
    return None


class Braze(Emulator):
    name = "braze"
    prefix = "/braze"
    buckets: ClassVar[dict[str, tuple[int, float]]] = {
        "braze.users_track": (3000, 3.0),
        "braze.trigger": (250_000, 3600.0),
        "braze.broadcast": (250, 60.0),
    }

    def __init__(self, hub) -> None:
        super().__init__(hub)
        self.dispatches = 0

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("users/track", "POST", "/users/track", self.track, ("braze.users_track",)),
            Endpoint("campaigns/trigger/send", "POST", "/campaigns/trigger/send",
                     self.campaign, ("braze.trigger",)),
            Endpoint("canvas/trigger/send", "POST", "/canvas/trigger/send",
                     self.canvas, ("braze.trigger",)),
        ]

    def authorized(self, request: web.Request, tail: str, raw: bytes) -> bool:
        return bearer_ok(request, self.hub.keys["BRAZE_API_KEY"])

    def error_body(self, status: int, message: str) -> Any:
        return {"message": message, "errors": []}

    def rate_limited_message(self) -> str:
        return "API rate limit exceeded"

    def limit_headers(self, state: LimitState) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(state.limit),
            "X-RateLimit-Remaining": str(state.remaining),
            "X-RateLimit-Reset": str(state.reset_epoch),
        }

    async def track(self, ctx: Ctx) -> Result:
        body = need_dict(ctx.body)
        arrays = {k: body[k] for k in ARRAYS if k in body}
        if not arrays:
            raise Invalid(400, "Request must contain attributes, events or purchases")
        for kind, items in arrays.items():
            if not isinstance(items, list):
                raise Invalid(400, f"{kind} must be an array")
            if len(items) > MAX_PER_ARRAY:
                raise Invalid(400, "Max Input Length Exceeded")
        errors, flags, processed = [], [], {}
        for kind in ARRAYS:
            ok = 0
            for index, obj in enumerate(arrays.get(kind, [])):
                problem = _object_error(kind, obj)
                flags.append(problem is None)
                if problem is None:
                    ok += 1
                else:
                    errors.append({"type": problem, "input_array": kind, "index": index})
            if kind in arrays:
                processed[f"{kind}_processed"] = ok
        reply: dict[str, Any] = {"message": "success", **processed}
        if errors:
            reply["errors"] = errors
        return Result(200, reply, accepted=flags)

    def _trigger(self, ctx: Ctx, id_field: str, props_field: str) -> Result:
        body = need_dict(ctx.body)
        if not isinstance(body.get(id_field), str) or not body[id_field]:
            raise Invalid(400, f"{id_field} is required")
        if "send_id" in body and not isinstance(body["send_id"], str):
            raise Invalid(400, "send_id must be a string")
        broadcast = body.get("broadcast", False)
        recipients = body.get("recipients")
        if broadcast and recipients:
            raise Invalid(400, "Cannot specify both broadcast and recipients")
        if not broadcast and not recipients and "audience" not in body:
            raise Invalid(400, "Must specify recipients, audience or broadcast")
        if broadcast is not False and not isinstance(broadcast, bool):
            raise Invalid(400, "broadcast must be a boolean")
        if broadcast:
            ctx.take("braze.broadcast")
        flags = [True]
        if recipients is not None:
            if not isinstance(recipients, list):
                raise Invalid(400, "recipients must be an array")
            if len(recipients) > MAX_RECIPIENTS:
                raise Invalid(400, f"recipients may contain at most {MAX_RECIPIENTS} objects")
            for index, rec in enumerate(recipients):
                problem = self._recipient_error(rec, props_field)
                if problem:
                    raise Invalid(400, f"recipients[{index}]: {problem}")
            flags = [True] * len(recipients)
        if props_field in body and len(orjson.dumps(body[props_field])) > MAX_ENTRY_PROPERTIES:
            raise Invalid(400, f"{props_field} exceeds 50 KB")
        self.dispatches += 1
        dispatch_id = f"sandbox-dispatch-{self.dispatches}-{self.hub.uuid4()[:8]}"
        return Result(201, {"dispatch_id": dispatch_id, "message": "success"}, accepted=flags)

    @staticmethod
    def _recipient_error(rec: Any, props_field: str) -> str | None:
        if not isinstance(rec, dict):
            return "must be an object"
        ext, alias = rec.get("external_user_id"), rec.get("user_alias")
        if not ext and not alias:
            return "external_user_id or user_alias is required"
        if ext and alias:
            return "use either external_user_id or user_alias"
        if alias and not (isinstance(alias, dict) and alias.get("alias_name")
                          and alias.get("alias_label")):
            return "user_alias needs alias_name and alias_label"
        props = rec.get(props_field)
        if props is not None:
            if not isinstance(props, dict):
                return f"{props_field} must be an object"
            if len(orjson.dumps(props)) > MAX_ENTRY_PROPERTIES:
                return f"{props_field} exceeds 50 KB"
        return None

    async def campaign(self, ctx: Ctx) -> Result:
        return self._trigger(ctx, "campaign_id", "trigger_properties")

    async def canvas(self, ctx: Ctx) -> Result:
        return self._trigger(ctx, "canvas_id", "canvas_entry_properties")

    def extra_stats(self) -> dict[str, Any]:
        return {"dispatches": self.dispatches}
