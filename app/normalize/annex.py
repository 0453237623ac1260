"""Annex Cloud loyalty actions (`loyalty.actions`) -> envelopes.

Our own ingress schema (topics/schemas/loyalty.actions.json)::

    {"action_id": "...", "action_type": "points_earned", "member": {"member_id", "email",
     "phone", "first_name", "last_name"}, "points": 120, "points_balance": 940,
     "reward": {...}, "tier": "gold", "occurred_at": "...", "channel": "sms"}

Types: `loyalty_action.<action type, snake_case>`; subscription opt-in/opt-out become
`membership.subscribed` / `membership.unsubscribed`, which need the member's phone (Attentive's
key) unless an e-mail is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.config import Settings
from app.envelope import Rejected, make_envelope
from app.normalize.common import (
    ID_ALIASES,
    alias_table,
    customer_identities,
    drop_empty,
    first,
    is_mapping,
    number,
    occurred_at_of,
    snake_case,
    snake_keys,
    source_id_of,
    text,
)

SOURCE = "annex"

SUBSCRIBE = {"subscription_opt_in", "subscription_optin", "subscribe", "subscribed", "opt_in",
             "optin", "membership_subscribed", "sms_opt_in", "email_opt_in", "join"}
UNSUBSCRIBE = {"subscription_opt_out", "subscription_optout", "unsubscribe", "unsubscribed",
               "opt_out", "optout", "membership_unsubscribed", "sms_opt_out", "email_opt_out"}

MEMBER_ALIASES = {"annex_member_id": ("member_id", "memberId", "annex_member_id", "user_id",
                                      "userId")}
MEMBER_IDS = alias_table(MEMBER_ALIASES)

KNOWN = {"action_id", "actionId", "id", "action_type", "actionType", "type", "action", "member",
         "customer", "user", "points", "points_balance", "pointsBalance", "balance", "reward",
         "tier", "channel", "occurred_at", "occurredAt", "timestamp", "time", "created_at",
         "createdAt"} | {a for names in ID_ALIASES.values() for a in names}


def normalize(value: Any, headers: Mapping[str, str], settings: Settings) -> list[dict]:
    if not is_mapping(value):
        raise Rejected("not_an_object", "loyalty action must be a JSON object")
    source_id = source_id_of(value, "action_id", "actionId", "id", "event_id", field="action_id")
    action = snake_case(first(value, "action_type", "actionType", "type", "action"))
    if not action:
        raise Rejected("missing_field", "action_type")
    occurred = occurred_at_of(value)
    member = first(value, "member", "customer", "user", default={})
    member = member if is_mapping(member) else {}
    subscription = action in SUBSCRIBE or action in UNSUBSCRIBE
    ids = customer_identities(value, settings.default_region, "member", "customer", "user",
                              aliases=MEMBER_IDS)
    if subscription and "phone" not in ids.ids and "email" not in ids.ids:
        if ids.rejected and "phone: invalid" in ids.rejected:
            raise Rejected("invalid_value", "phone is not a valid number")
        raise Rejected("missing_field", "member.phone")
    channel = text(first(value, "channel", default=None)) or text(member.get("channel"))
    payload = drop_empty({
        "action_id": source_id,
        "action_type": action,
        "points": number(value.get("points")),
        "points_balance": number(first(value, "points_balance", "pointsBalance", "balance")),
        "reward": snake_keys(value.get("reward")) if is_mapping(value.get("reward"))
        else text(value.get("reward")),
        "tier": text(value.get("tier")),
        "channel": channel.lower() if channel else None,
        "member": drop_empty({
            "first_name": text(first(member, "first_name", "firstName")),
            "last_name": text(first(member, "last_name", "lastName")),
        }),
        "extra": {snake_case(k): v for k, v in value.items() if k not in KNOWN},
    })
    attributes = drop_empty({
        "first_name": payload.get("member", {}).get("first_name"),
        "last_name": payload.get("member", {}).get("last_name"),
        "loyalty_tier": payload.get("tier"),
        "loyalty_points_balance": payload.get("points_balance"),
    })
    if action in SUBSCRIBE:
        kind = "membership.subscribed"
        attributes["subscribed"] = True
    elif action in UNSUBSCRIBE:
        kind = "membership.unsubscribed"
        attributes["subscribed"] = False
    else:
        kind = f"loyalty_action.{action}"
    trace = {"action_id": source_id} | ids.trace()
    return [make_envelope(source=SOURCE, type=kind, source_id=source_id, occurred_at=occurred,
                          identities=ids.ids, attributes=attributes, payload=payload,
                          trace=trace)]
