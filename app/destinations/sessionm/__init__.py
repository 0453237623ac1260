"""SessionM: tags for Braze segment members, and the offer wallet look-up.

Action ``tag`` (one user per call) reads params ``tags`` (a list, or a path to one; each entry
may itself be a `"$.a.b"` path) and optional ``ttl`` (seconds; without it the tag is a counter).
The user is identities.sessionm_user_id (``.../users/{id}/tags``), else the external id
customer_id (``.../external/users/{id}/tags``). Auth: ``Basic base64(api_key:api_secret)``.

`get_user_offers(send, config, user_id)` reads the live offer wallet from the Connect host
(``config.extra["connect_url"]``, ``Authorization: Basic <config.extra["offers_auth"]>``). The
request carries its own Authorization header, which must take precedence over the core's
`auth_headers` for that call.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from app.destinations.base import (
    Action,
    Destination,
    HttpRequest,
    ItemInvalid,
    Reply,
    Send,
    classify,
)
from app.destinations.mapping import resolve

OFFERS_PATH = "/offers/api/2.0/offers/get_user_offers"


class Tag(Action):
    name = "tag"
    idempotent = True
    max_batch = 1
    limit = "default"

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        tags = resolve(params.get("tags"), envelope)
        if isinstance(tags, str):
            tags = [tags]
        if not isinstance(tags, list):
            raise ItemInvalid("tags must be a list of names")
        tags = [str(t) for t in tags if t not in (None, "")]
        if not tags:
            raise ItemInvalid("no tag names")
        body: dict[str, Any] = {"tags": tags}
        ttl = resolve(params.get("ttl"), envelope)
        if ttl not in (None, ""):
            try:
                ttl = int(ttl)
            except (TypeError, ValueError):
                raise ItemInvalid("ttl must be a whole number of seconds") from None
            if ttl <= 0:
                raise ItemInvalid("ttl must be positive")
            body["ttl"] = ttl
        ids = envelope.get("identities") or {}
        if ids.get("sessionm_user_id"):
            user_path = f"/users/{quote(str(ids['sessionm_user_id']), safe='')}/tags"
        elif ids.get("customer_id"):
            user_path = f"/external/users/{quote(str(ids['customer_id']), safe='')}/tags"
        else:
            raise ItemInvalid("no SessionM user id or customer id")
        return {"user_path": user_path, "body": body}

    def request(self, items, config) -> HttpRequest:
        api_key = quote(str((config.extra or {}).get("api_key", "")), safe="")
        item = items[0]
        return HttpRequest("POST", f"/priv/v1/apps/{api_key}{item['user_path']}",
                           json=item["body"], limit=self.limit)


class OffersError(Exception):
    """The offer wallet could not be read; `result` says whether a retry may help."""

    def __init__(self, reply: Reply):
        self.result = classify(reply)
        super().__init__(self.result.reason or "offers_unreadable")


def offers_request(config, user_id: str, take: int = 1000) -> HttpRequest:
    extra = config.extra or {}
    body = {"retailer_id": extra.get("retailer_id", ""), "user_id": str(user_id), "skip": 0,
            "take": take, "include_pending_extended_data": False, "culture": "en-US"}
    return HttpRequest("POST", str(extra.get("connect_url", "")).rstrip("/") + OFFERS_PATH,
                       json=body, headers={"Authorization": f"Basic {extra.get('offers_auth', '')}"},
                       limit="default")


async def get_user_offers(send: Send, config, user_id: str) -> dict[str, Any]:
    """The user's offer wallet (SessionM's ``payload``: user_offers, points, ...).

    An unknown user (404) yields an empty wallet; other failures raise `OffersError`."""
    reply = await send(offers_request(config, user_id))
    if reply.status == 404:
        return {"user_id": str(user_id), "user_offers": [], "total_records": 0}
    body = reply.body if isinstance(reply.body, Mapping) else {}
    if not reply.ok or body.get("status", "ok") != "ok":
        raise OffersError(reply if not reply.ok else Reply(502, reply.headers, reply.body))
    payload = body.get("payload")
    return dict(payload) if isinstance(payload, Mapping) else {}


def auth_headers(config) -> dict[str, str]:
    raw = f"{(config.extra or {}).get('api_key', '')}:{config.token}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


DESTINATION = Destination(
    name="sessionm",
    actions={"tag": Tag()},
    limits={"default": 50.0},
    auth_headers=auth_headers,
)
