"""Audience/segment membership changes (`audience.membership`) -> envelopes.

Our own ingress schema (topics/schemas/audience.membership.json)::

    {"membership_id": "...", "platform": "braze" | "insider" | "other",
     "audience": {"id", "name"}, "action": "entered" | "exited",
     "customer": {"customer_id", "external_id", "email", "phone", ...}, "occurred_at": "..."}

Aliases: `event_id` for the id, `segment_id`/`segment` for the audience, added/removed,
enter/exit, join/leave for the action. A record without an id gets a stable id derived from its
content. Types: `audience.entered`, `audience.exited`. Payload: platform, audience {id, name},
audience_id (= audience.id), membership_id, action.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.config import Settings
from app.envelope import Rejected, make_envelope, utc_iso
from app.normalize.common import (
    alias_table,
    content_id,
    customer_identities,
    drop_empty,
    first,
    is_mapping,
    occurred_at_of,
    snake_case,
    text,
)

SOURCE = "audience"

ENTER = {"entered", "enter", "added", "add", "join", "joined", "in", "true"}
EXIT = {"exited", "exit", "removed", "remove", "leave", "left", "out", "false"}
PLATFORMS = {"braze", "insider", "sessionm", "attentive", "maac"}
# A platform's own spellings of its user id, read before the shared ones.
PLATFORM_ALIASES = {
    "braze": {"braze_external_id": ("external_id", "externalId", "external_user_id")},
    "insider": {"insider_uuid": ("uuid", "user_id", "userId")},
    "sessionm": {"sessionm_user_id": ("user_id", "userId")},
}
_PLATFORM_IDS = {platform: alias_table(aliases) for platform, aliases in PLATFORM_ALIASES.items()}


def normalize(value: Any, headers: Mapping[str, str], settings: Settings) -> list[dict]:
    if not is_mapping(value):
        raise Rejected("not_an_object", "audience membership must be a JSON object")
    raw_action = first(value, "action", "change", "event", "membership", "status")
    if isinstance(raw_action, bool):
        raw_action = "entered" if raw_action else "exited"
    action = snake_case(raw_action)
    if not action:
        raise Rejected("missing_field", "action")
    if action in ENTER:
        kind = "audience.entered"
    elif action in EXIT:
        kind = "audience.exited"
    else:
        raise Rejected("invalid_value", "action must be entered or exited")
    audience_raw = first(value, "audience", "segment")
    if is_mapping(audience_raw):
        audience = drop_empty({"id": text(first(audience_raw, "id", "audience_id", "segment_id")),
                               "name": text(first(audience_raw, "name", "audience_name",
                                                  "segment_name"))})
    else:
        audience = drop_empty({
            "id": text(first(value, "audience_id", "audienceId", "segment_id", "segmentId")),
            "name": text(audience_raw) or text(first(value, "audience_name", "audienceName",
                                                      "segment_name", "segmentName")),
        })
    if not audience:
        raise Rejected("missing_field", "audience.id")
    platform = snake_case(first(value, "platform", "source", default="other")) or "other"
    platform = platform if platform in PLATFORMS else "other"
    ids = customer_identities(value, settings.default_region, "customer", "user", "identifiers",
                              aliases=_PLATFORM_IDS.get(platform))
    if not ids.ids:
        if ids.rejected:
            raise Rejected("invalid_value", "phone is not a valid number")
        raise Rejected("missing_field", "customer")
    occurred = occurred_at_of(value)
    source_id = text(first(value, "membership_id", "membershipId", "event_id", "eventId", "id"))
    if not source_id:
        source_id = "content:" + content_id(platform, audience, sorted(ids.ids.items()), kind,
                                            utc_iso(occurred))
    # `audience_id` repeats audience.id flat: rules written against either path keep matching.
    payload = drop_empty({"platform": platform, "audience": audience,
                          "audience_id": audience.get("id"),
                          "membership_id": text(first(value, "membership_id", "membershipId")),
                          "action": kind.rsplit(".", 1)[1]})
    attributes = {}
    if audience.get("id"):
        attributes[f"audience_{snake_case(audience['id'])}"] = kind == "audience.entered"
    trace = drop_empty({"membership_id": source_id, "platform": platform}) | ids.trace()
    return [make_envelope(source=SOURCE, type=kind, source_id=source_id, occurred_at=occurred,
                          identities=ids.ids, attributes=attributes, payload=payload,
                          trace=trace)]
