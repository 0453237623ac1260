"""Insider UCD: the feedback loop (LINE results and reachability -> Insider events/attributes).

Action ``upsert`` reads params (strings `"$.a.b"` are envelope paths):

- ``event_name`` (optional; must match ``^[a-z0-9][a-zA-Z0-9._-]*$``), ``event_params``
  {name: spec} (standard Insider keys at top level, the rest under ``custom``);
- ``attributes`` {name: spec} (standard attributes at top level, the rest under ``custom``).

At least one of the event or an attribute value is needed. Identifiers come from the envelope:
``email``, ``phone_number`` (E.164 only), ``uuid`` = insider_uuid, ``custom.customer_id``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from app.destinations.base import (
    Action,
    Destination,
    HttpRequest,
    ItemInvalid,
    ItemResult,
    Reply,
    classify,
    pack,
    short,
)
from app.destinations.mapping import resolve, resolve_present

MAX_USERS = 1000
MAX_BYTES = 5_000_000
EVENT_NAME = re.compile(r"^[a-z0-9][a-zA-Z0-9._-]*$")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
STANDARD_ATTRIBUTES = frozenset({
    "email_optin", "sms_optin", "whatsapp_optin", "name", "surname", "birthday", "gender",
    "language", "country", "city", "email", "phone_number",
})
STANDARD_EVENT_PARAMS = frozenset({
    "product_id", "name", "taxonomy", "currency", "unit_price", "unit_sale_price", "url",
    "product_image_url", "quantity", "event_group_id",
})
_USER_ERROR = re.compile(r"^users\.(\d+)(?:\.(.*))?$")


def _split(values: Mapping[str, Any], standard: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    for key, value in values.items():
        (out if key in standard else custom)[key] = value
    if custom:
        out["custom"] = custom
    return out


def _size(obj: Any) -> int:
    return len(orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS))  # as sent (orjson, UTF-8)


class Upsert(Action):
    """``POST /api/user/v1/upsert`` with up to 1,000 users and 5 MB per request.

    Size cap: `prepare` measures each user's JSON size (``item["size"]``; a single user above
    ``max_bytes`` is ItemInvalid) and `perform` splits the batch it receives into requests of at
    most ``max_batch`` users and ``max_bytes`` bytes (with a per-item margin for the sandbox's
    ``_relay_ids``). The delivery core packs chunks by ``weight`` up to ``max_weight``
    (= ``max_bytes``), so each `perform` call is exactly one request.
    ``fail.errors`` keys ``users.<i>.<field>`` fail only user ``i`` of that request.
    """

    name = "upsert"
    max_batch = MAX_USERS
    max_bytes = MAX_BYTES - 100_000  # headroom for the envelope keys and sandbox ids
    max_weight = max_bytes
    per_item_margin = 200
    limit = "upsert"

    def weight(self, item: Mapping[str, Any]) -> int:
        """Bytes the item adds to a request body (its JSON plus a margin)."""
        return item["size"] + self.per_item_margin

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        ids = envelope.get("identities") or {}
        identifiers: dict[str, Any] = {}
        if ids.get("email"):
            identifiers["email"] = ids["email"]
        phone = ids.get("phone")
        if phone and E164.match(str(phone)):
            identifiers["phone_number"] = phone
        if ids.get("insider_uuid"):
            identifiers["uuid"] = ids["insider_uuid"]
        if ids.get("customer_id"):
            identifiers["custom"] = {"customer_id": str(ids["customer_id"])}
        if not identifiers:
            raise ItemInvalid("no Insider identifier (email, E.164 phone, uuid or customer id)")
        user: dict[str, Any] = {"identifiers": identifiers}

        attributes = params.get("attributes") or {}
        if not isinstance(attributes, Mapping):
            raise ItemInvalid("param 'attributes' must be a mapping")
        attributes = resolve_present(attributes, envelope)
        if attributes:
            user["attributes"] = _split(attributes, STANDARD_ATTRIBUTES)

        event_name = resolve(params.get("event_name"), envelope)
        if event_name:
            if not isinstance(event_name, str) or not EVENT_NAME.match(event_name):
                raise ItemInvalid("event_name does not match ^[a-z0-9][a-zA-Z0-9._-]*$")
            event_params = params.get("event_params") or {}
            if not isinstance(event_params, Mapping):
                raise ItemInvalid("param 'event_params' must be a mapping")
            values = resolve_present(event_params, envelope)
            values["event_id"] = envelope.get("event_id")
            user["events"] = [{"event_name": event_name, "timestamp": envelope.get("occurred_at"),
                               "event_params": _split(values, STANDARD_EVENT_PARAMS)}]
        if "attributes" not in user and "events" not in user:
            raise ItemInvalid("neither attributes nor an event to upsert")
        size = _size(user)
        if size + self.per_item_margin > self.max_bytes:
            raise ItemInvalid("user record larger than the 5 MB request limit")
        return {"user": user, "size": size}

    def request(self, items, config) -> HttpRequest:
        return HttpRequest("POST", "/api/user/v1/upsert",
                           json={"users": [item["user"] for item in items]}, limit=self.limit)

    def interpret(self, reply: Reply, items: Sequence[Any]) -> list[ItemResult]:
        if not reply.ok:
            return [classify(reply)] * len(items)
        body = reply.body if isinstance(reply.body, Mapping) else {}
        data = body.get("data") if isinstance(body.get("data"), Mapping) else body
        fail = data.get("fail") if isinstance(data.get("fail"), Mapping) else {}
        errors = fail.get("errors") if isinstance(fail.get("errors"), Mapping) else {}
        failed: dict[int, list[str]] = {}
        for key in errors:
            match = _USER_ERROR.match(str(key))
            if match:
                failed.setdefault(int(match.group(1)), []).append(match.group(2) or "user")
        results = []
        for index in range(len(items)):
            if index in failed:
                fields = sorted(set(failed[index]))
                results.append(ItemResult("failed", "validation: " + ",".join(fields)[:150],
                                          reply.status, detail=short(fields)))
            else:
                results.append(ItemResult("delivered", "", reply.status))
        return results

    async def perform(self, send, items, config) -> list[ItemResult]:
        results: list[ItemResult] = []
        for chunk in pack(items, self.weight, self.max_weight, self.max_batch):
            reply = await send(self.request(chunk, config))
            results.extend(self.interpret(reply, chunk))
        return results


def auth_headers(config) -> dict[str, str]:
    return {"X-PARTNER-NAME": str(config.extra.get("partner", "")).lower(),
            "X-REQUEST-TOKEN": config.token, "Content-Type": "application/json"}


DESTINATION = Destination(
    name="insider",
    actions={"upsert": Upsert()},
    limits={"upsert": 25_000 / 60},
    auth_headers=auth_headers,
)
