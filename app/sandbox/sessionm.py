"""SessionM emulator: user tags (core, `/sessionm/core`) and the offer wallet (connect, `/sessionm/connect`).

Why two auth schemes: tags use `Authorization: Basic base64(api_key:api_secret)` and the api key
must also be the one in the path; the offer wallet uses a Basic string SessionM hands out
(`SESSIONM_OFFERS_AUTH`, sent as `Authorization: Basic <string>`). Response bodies and limits are
unconfirmed in the contract, so answers are plausible and stable, and no rate limit is enforced.
Offers are deterministic per user id (hash based) so personalisation tests can assert exact values;
user ids starting with "unknown" are 404.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from app.sandbox.core import (
    Ctx,
    Emulator,
    Endpoint,
    Invalid,
    Result,
    basic,
    fraction,
    is_int,
    need_dict,
)

OFFER_TYPES = ("discount", "points_multiplier", "free_item", "bonus_points")


def offers_for(user_id: str) -> list[dict[str, Any]]:
    """0-4 stable offers for a user."""
    count = int(fraction("offers", user_id) * 5)
    offers = []
    for i in range(count):
        pick = fraction("offer", user_id, i)
        offer_id = f"offer-{int(pick * 10_000):04d}"
        offers.append({
            "offer_id": offer_id,
            "user_offer_id": f"uo-{user_id[-6:]}-{i}",
            "offer_group_id": f"group-{i % 2 + 1}",
            "offer_type": OFFER_TYPES[int(pick * len(OFFER_TYPES))],
            "name": f"Sandbox offer {offer_id}",
            "description": "A sandbox offer",
            "terms": "Sandbox terms apply",
            "logo_uri": "https://sandbox.invalid/offer.png",
            "pos_discount_id": f"pos-{offer_id}",
            "expiration_date": "2099-12-31T23:59:59Z",
            "points": int(pick * 500),
        })
    return offers


class SessionM(Emulator):
    name = "sessionm"
    prefix = "/sessionm"

    def __init__(self, hub) -> None:
        super().__init__(hub)
        # (kind, user) -> tag -> {"count": n, "expires_at": epoch or None}
        self.tags: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("tags", "POST", "/core/priv/v1/apps/{api_key}/users/{user_id}/tags",
                     self.tag),
            Endpoint("tags.external", "POST",
                     "/core/priv/v1/apps/{api_key}/external/users/{user_id}/tags", self.tag),
            Endpoint("get_user_offers", "POST", "/connect/offers/api/2.0/offers/get_user_offers",
                     self.offers, items=False),
        ]

    def authorized(self, request: web.Request, tail: str, raw: bytes) -> bool:
        keys = self.hub.keys
        header = request.headers.get("Authorization", "")
        if tail.startswith("/connect/"):
            return header == f"Basic {keys['SESSIONM_OFFERS_AUTH']}"
        expected = basic(keys["SESSIONM_API_KEY"], keys["SESSIONM_API_SECRET"])
        return header == f"Basic {expected}" and request.match_info.get("api_key") == keys[
            "SESSIONM_API_KEY"]

    def error_body(self, status: int, message: str) -> Any:
        return {"status": "error", "errors": {"code": str(status), "message": message}}

    async def tag(self, ctx: Ctx) -> Result:
        body = need_dict(ctx.body)
        tags = body.get("tags")
        if not isinstance(tags, list) or not tags or not all(
            isinstance(t, str) and t for t in tags
        ):
            raise Invalid(400, "tags must be a non-empty list of names")
        ttl = body.get("ttl")
        if ttl is not None and (not is_int(ttl) or ttl <= 0):
            raise Invalid(400, "ttl must be a positive integer (seconds)")
        user_id = ctx.match["user_id"]
        if user_id.startswith("unknown"):
            raise Invalid(404, "user not found")
        kind = "external" if "/external/" in ctx.tail else "user"
        store = self.tags.setdefault((kind, user_id), {})
        now = time.time()
        for name in tags:
            entry = store.setdefault(name, {"count": 0, "expires_at": None})
            if ttl is None:
                entry["count"] += 1  # without ttl a tag is a counter
            else:
                entry["count"] = max(entry["count"], 1)
                entry["expires_at"] = now + ttl
        key = "external_id" if kind == "external" else "id"
        return Result(200, {"status": "ok", "user": {key: user_id, "tags": self.active(store)}})

    @staticmethod
    def active(store: dict[str, dict[str, Any]]) -> dict[str, int]:
        now = time.time()
        return {name: e["count"] for name, e in store.items()
                if e["expires_at"] is None or e["expires_at"] > now}

    def user_tags(self, user_id: str, external: bool = False) -> dict[str, int]:
        """Live tags of a user (for tests): name -> count."""
        return self.active(self.tags.get(("external" if external else "user", user_id), {}))

    async def offers(self, ctx: Ctx) -> Result:
        body = need_dict(ctx.body)
        if body.get("retailer_id") != self.hub.keys["SESSIONM_RETAILER_ID"]:
            raise Invalid(400, "unknown retailer_id")
        user_id = body.get("user_id")
        if not isinstance(user_id, str) or not user_id:
            raise Invalid(400, "user_id is required")
        skip, take = body.get("skip", 0), body.get("take", 1000)
        if not is_int(skip) or skip < 0 or not is_int(take) or not 1 <= take <= 1000:
            raise Invalid(400, "skip must be >= 0 and take between 1 and 1000")
        if user_id.startswith("unknown"):
            raise Invalid(404, "user not found")
        offers = offers_for(user_id)
        total = int(fraction("points", user_id) * 5000)
        payload = {
            "user": {"id": user_id, "external_id": user_id, "culture": body.get("culture")},
            "user_id": user_id,
            "user_offers": offers[skip:skip + take],
            "total_records": len(offers),
            "offer_groups": sorted({o["offer_group_id"] for o in offers}),
            "offer_categories": [],
            "total_points": total,
            "available_points": total - int(fraction("locked", user_id) * total / 4),
        }
        return Result(200, {"status": "ok", "payload": payload})
