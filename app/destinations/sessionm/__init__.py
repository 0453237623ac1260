"""SessionM: tags for Braze segment members, and the offer wallet look-up.

Action ``tag`` (one user per call) reads params ``tags`` (a list, or a path to one; each entry
may itself be a `"$.a.b"` path) and optional ``ttl`` (seconds; without it the tag is a counter).
The user is identities.sessionm_user_id (``.../users/{id}/tags``), else the external id
customer_id (``.../external/users/{id}/tags``). Auth: ``Basic base64(api_key:api_secret)``.

Action ``segment_tag`` (Braze segment -> SessionM tag): reads param ``segment`` (default
``$.payload.audience_id``) and looks the tag name, TTL and exit behaviour up in the segments file
(`app.destinations.sessionm.segments`, ``config.extra["segments_file"]``). Entering tags the user
(with the TTL when configured); leaving does nothing ("skipped" / "exit_keeps_tag") unless the
segment says ``on_exit: expire`` (re-tag with a 1 s TTL). A segment without an entry is "skipped"
/ "segment_not_configured". The user: sessionm_user_id, else the external id customer_id, else
braze_external_id.

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
    ItemResult,
    Reply,
    Send,
    classify,
)
from app.destinations.mapping import resolve
from app.destinations.sessionm.segments import EXPIRE_TTL_S, load_segments

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
        return {"user_path": user_path(envelope), "body": body}

    def request(self, items, config) -> HttpRequest:
        api_key = quote(str((config.extra or {}).get("api_key", "")), safe="")
        item = items[0]
        return HttpRequest("POST", f"/priv/v1/apps/{api_key}{item['user_path']}",
                           json=item["body"], limit=self.limit)


def user_path(envelope, fallbacks: tuple[str, ...] = ("customer_id",)) -> str:
    """``/users/{sessionm id}/tags``, else ``/external/users/{external id}/tags``."""
    ids = envelope.get("identities") or {}
    if ids.get("sessionm_user_id"):
        return f"/users/{quote(str(ids['sessionm_user_id']), safe='')}/tags"
    for kind in fallbacks:
        if ids.get(kind):
            return f"/external/users/{quote(str(ids[kind]), safe='')}/tags"
    raise ItemInvalid("no SessionM user id or external id")


class SegmentTag(Tag):
    name = "segment_tag"
    idempotent = True  # tagging with a TTL again only renews the expiry

    def prepare(self, delivery, config):
        envelope, params = delivery["envelope"], delivery.get("params") or {}
        segment = resolve(params.get("segment", "$.payload.audience_id"), envelope)
        spec = load_segments(str((config.extra or {}).get("segments_file", ""))).get(
            str(segment or ""))
        if spec is None:
            return {"skip": "segment_not_configured"}
        if envelope.get("type") == "audience.exited":
            if spec.on_exit == "keep":
                return {"skip": "exit_keeps_tag"}
            body: dict[str, Any] = {"tags": [spec.tag], "ttl": EXPIRE_TTL_S}
        else:
            body = {"tags": [spec.tag]}
            if spec.ttl_s:
                body["ttl"] = spec.ttl_s
        path = user_path(envelope, ("customer_id", "braze_external_id"))
        return {"user_path": path, "body": body}

    def request(self, items, config) -> HttpRequest:
        if items[0].get("skip"):
            raise NotImplementedError("a skipped item makes no request")
        return super().request(items, config)

    async def perform(self, send, items, config) -> list[ItemResult]:
        results = []
        for item in items:
            if item.get("skip"):
                results.append(ItemResult("skipped", item["skip"]))
                continue
            reply = await send(self.request([item], config))
            results.extend(self.interpret(reply, [item]))
        return results


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
    actions={"tag": Tag(), "segment_tag": SegmentTag()},
    limits={"default": 50.0},
    auth_headers=auth_headers,
)
