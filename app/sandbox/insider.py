"""Insider UCD Unification API emulator: `POST /api/user/v1/upsert`.

Why: Insider reports validation failures inside a 200 (`fail{count, errors{"users.<i>.<field>":
[...]}}`) and only those users failed, so the relay's feedback sink must read the body, not just the
status. Auth is `X-PARTNER-NAME` (the partner name, exactly, lowercase) plus `X-REQUEST-TOKEN`; a bad
pair is 403 (Insider's "stop and alert"). Whole-request limits: 1..1,000 users and 5 MB, else 400;
25,000 requests per minute, else 429 `{"error": "rejected: too many requests"}`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from aiohttp import web

from app.sandbox.core import (
    Ctx,
    Emulator,
    Endpoint,
    Invalid,
    Result,
    is_e164,
    is_email,
    need_dict,
    parse_time,
)

MAX_USERS = 1000
MAX_BYTES = 5 * 1024 * 1024
EVENT_NAME = re.compile(r"^[a-z0-9][a-zA-Z0-9._-]*$")
OPTINS = ("email_optin", "sms_optin", "whatsapp_optin")
STRINGS = ("name", "surname", "gender", "language", "country", "city", "email")


def _user_errors(user: Any) -> dict[str, list[str]]:
    """Field path (relative to the user) -> messages; empty when the user is valid."""
    if not isinstance(user, dict):
        return {"": ["must be an object"]}
    errors: dict[str, list[str]] = {}
    ids = user.get("identifiers")
    if ids is None and not user.get("insider_id"):
        errors["identifiers"] = ["identifiers or insider_id is required"]
    elif ids is not None:
        if not isinstance(ids, dict):
            errors["identifiers"] = ["must be an object"]
        else:
            if not any(ids.get(k) for k in ("email", "phone_number", "uuid", "custom")) \
                    and not user.get("insider_id"):
                errors["identifiers"] = ["at least one identifier is required"]
            if "phone_number" in ids and not is_e164(ids["phone_number"]):
                errors["identifiers.phone_number"] = ["must be in E.164 format"]
            if "email" in ids and not is_email(ids["email"]):
                errors["identifiers.email"] = ["must be a valid e-mail address"]
            if "custom" in ids and not isinstance(ids["custom"], dict):
                errors["identifiers.custom"] = ["must be an object"]
    attrs, events = user.get("attributes"), user.get("events")
    if not attrs and not events:
        errors["attributes"] = ["attributes or events is required"]
    if attrs is not None:
        if not isinstance(attrs, dict):
            errors["attributes"] = ["must be an object"]
        else:
            errors.update(_attribute_errors(attrs))
    if events is not None:
        if not isinstance(events, list):
            errors["events"] = ["must be an array"]
        else:
            for i, event in enumerate(events):
                errors.update(_event_errors(i, event))
    return errors


def _attribute_errors(attrs: dict) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for key in OPTINS:
        if key in attrs and not isinstance(attrs[key], bool):
            errors[f"attributes.{key}"] = ["must be a boolean"]
    for key in STRINGS:
        if key in attrs and not isinstance(attrs[key], str):
            errors[f"attributes.{key}"] = ["must be a string"]
    if "birthday" in attrs and not (
        isinstance(attrs["birthday"], str) and attrs["birthday"].endswith("Z")
        and parse_time(attrs["birthday"]) is not None
    ):
        errors["attributes.birthday"] = ["must be an RFC 3339 date-time in UTC ('Z')"]
    if "custom" in attrs and not isinstance(attrs["custom"], dict):
        errors["attributes.custom"] = ["must be an object"]
    return errors


def _event_errors(i: int, event: Any) -> dict[str, list[str]]:
    if not isinstance(event, dict):
        return {f"events.{i}": ["must be an object"]}
    errors: dict[str, list[str]] = {}
    name = event.get("event_name")
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        errors[f"events.{i}.event_name"] = ["must match ^[a-z0-9][a-zA-Z0-9._-]*$"]
    if parse_time(event.get("timestamp"), require_zone=True) is None:
        errors[f"events.{i}.timestamp"] = ["must be an RFC 3339 date-time"]
    if "event_params" in event and not isinstance(event["event_params"], dict):
        errors[f"events.{i}.event_params"] = ["must be an object"]
    return errors


class Insider(Emulator):
    name = "insider"
    prefix = "/insider"
    buckets: ClassVar[dict[str, tuple[int, float]]] = {"insider.upsert": (25_000, 60.0)}

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("upsert", "POST", "/api/user/v1/upsert", self.upsert, ("insider.upsert",))]

    def authorized(self, request: web.Request, tail: str, raw: bytes) -> bool:
        return (request.headers.get("X-PARTNER-NAME") == self.hub.keys["INSIDER_PARTNER"]
                and request.headers.get("X-REQUEST-TOKEN") == self.hub.keys["INSIDER_TOKEN"])

    def auth_status(self) -> int:
        return 403

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}

    def rate_limited_message(self) -> str:
        return "rejected: too many requests"

    async def upsert(self, ctx: Ctx) -> Result:
        if not ctx.request.content_type == "application/json":
            raise Invalid(400, "Content-Type must be application/json")
        if len(ctx.raw) > MAX_BYTES:
            raise Invalid(400, "request body exceeds 5 MB")
        users = need_dict(ctx.body).get("users")
        if not isinstance(users, list) or not users:
            raise Invalid(400, "users must be a non-empty array")
        if len(users) > MAX_USERS:
            raise Invalid(400, f"at most {MAX_USERS} users per request")
        errors: dict[str, list[str]] = {}
        flags = []
        for i, user in enumerate(users):
            found = _user_errors(user)
            flags.append(not found)
            for field, messages in found.items():
                errors[f"users.{i}.{field}" if field else f"users.{i}"] = messages
        failed = len(flags) - sum(flags)
        data = {"successful": {"count": sum(flags)}, "fail": {"count": failed, "errors": errors}}
        return Result(200, {"data": data}, accepted=flags)
