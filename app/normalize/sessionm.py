"""SessionM-initiated messages (`sessionm.messages`) -> envelopes for Braze triggers.

Our own ingress schema (topics/schemas/sessionm.messages.json)::

    {"message_id": "...", "kind": "offer_issued" | "points_awarded" | "campaign_message",
     "campaign_id": "..." | "canvas_id": "...", "broadcast": false,
     "customer": {"user_id", "external_id", "email"},
     "offer": {"offer_id", "title", "user_offer_id", "description", "terms", "logo_url",
               "pos_discount_id", "expiration_date"},
     "points": {"amount", "account_name"},
     "campaign": {"runtime", "id", "name", "custom_data"}, "occurred_at": "..."}

`user_id` is the SessionM user id, `external_id` the retailer's customer id. Types:
`sessionm.offer_issued`, `sessionm.points_awarded`, `sessionm.campaign_message`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.config import Settings
from app.envelope import Rejected, make_envelope
from app.normalize.common import (
    alias_table,
    as_dict,
    boolean,
    customer_identities,
    drop_empty,
    first,
    is_mapping,
    iso_or_raw,
    number,
    occurred_at_of,
    snake_case,
    snake_keys,
    source_id_of,
    text,
)

SOURCE = "sessionm"

KINDS = {
    "offer_issued": "offer_issued", "offer": "offer_issued", "offer_issue": "offer_issued",
    "points_awarded": "points_awarded", "points": "points_awarded", "points_award": "points_awarded",
    "campaign_message": "campaign_message", "campaign": "campaign_message",
    "message": "campaign_message",
}

ALIASES = {
    "sessionm_user_id": ("user_id", "userId", "sessionm_user_id"),
    "customer_id": ("external_id", "externalId", "customer_id", "customerId"),
}
IDS = alias_table(ALIASES)


def normalize(value: Any, headers: Mapping[str, str], settings: Settings) -> list[dict]:
    if not is_mapping(value):
        raise Rejected("not_an_object", "SessionM message must be a JSON object")
    source_id = source_id_of(value, "message_id", "messageId", "id", "event_id",
                             field="message_id")
    raw_kind = snake_case(first(value, "kind", "type", "message_type", "messageType"))
    if not raw_kind:
        raw_kind = ("offer_issued" if is_mapping(value.get("offer")) else
                    "points_awarded" if is_mapping(value.get("points")) else "")
    kind = KINDS.get(raw_kind)
    if not kind:
        raise Rejected("unsupported" if raw_kind else "missing_field",
                       "kind must be offer_issued, points_awarded or campaign_message"
                       if raw_kind else "kind")
    occurred = occurred_at_of(value)
    ids = customer_identities(value, settings.default_region, "customer", "user",
                              aliases=IDS)
    broadcast = bool(boolean(value.get("broadcast")))
    offer_raw = as_dict(value.get("offer"))
    offer = drop_empty({
        "offer_id": text(first(offer_raw, "offer_id", "offerId", "id")),
        "title": text(offer_raw.get("title")),
        "user_offer_id": text(first(offer_raw, "user_offer_id", "userOfferId")),
        "description": text(offer_raw.get("description")),
        "terms": text(offer_raw.get("terms")),
        "logo_url": text(first(offer_raw, "logo_url", "logoUrl", "logo")),
        "pos_discount_id": text(first(offer_raw, "pos_discount_id", "posDiscountId")),
        "expiration_date": iso_or_raw(first(offer_raw, "expiration_date", "expirationDate",
                                            "expires_at")),
    })
    points_raw = value.get("points")
    points_raw = points_raw if is_mapping(points_raw) else {"amount": points_raw}
    points = drop_empty({
        "amount": number(first(points_raw, "amount", "points", "value")),
        "account_name": text(first(points_raw, "account_name", "accountName", "account")),
    })
    campaign_raw = as_dict(value.get("campaign"))
    campaign = drop_empty({
        "runtime": text(campaign_raw.get("runtime")),
        "id": text(first(campaign_raw, "id", "campaign_id")),
        "name": text(campaign_raw.get("name")),
        "custom_data": snake_keys(first(campaign_raw, "custom_data", "customData")),
    })
    campaign_id = text(first(value, "campaign_id", "campaignId", "braze_campaign_id"))
    canvas_id = text(first(value, "canvas_id", "canvasId", "braze_canvas_id"))
    if not broadcast and not ids.ids:
        if ids.rejected:
            raise Rejected("invalid_value", "customer has no valid identifier")
        raise Rejected("missing_field", "customer")
    payload = drop_empty({
        "kind": kind,
        "campaign_id": campaign_id,
        "canvas_id": canvas_id,
        "offer": offer,
        "points": points,
        "campaign": campaign,
    })
    payload["broadcast"] = broadcast
    attributes = drop_empty({"last_offer_id": offer.get("offer_id"),
                             "last_points_awarded": points.get("amount")})
    trace = drop_empty({"message_id": source_id, "campaign_id": campaign_id,
                        "canvas_id": canvas_id}) | ids.trace()
    return [make_envelope(source=SOURCE, type=f"sessionm.{kind}", source_id=source_id,
                          occurred_at=occurred, identities=ids.ids, attributes=attributes,
                          payload=payload, trace=trace)]
