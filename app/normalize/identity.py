"""Third-party CRM/CDP identity and profile updates (`identity.updates`) -> `identity.updated`.

Our own ingress schema (topics/schemas/identity.updates.json)::

    {"update_id": "...", "source": "<crm name>",
     "identifiers": {"customer_id", "email", "phone", "line_uid", "braze_external_id",
                     "sessionm_user_id", "insider_uuid", ...any other typed id},
     "attributes": {...}, "consents": {"email": true, "sms": false}, "updated_at": "..."}

Unknown identifier names are kept (snake_case). A record without an id gets a stable id derived
from its content. At least one readable identifier is required.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.config import Settings
from app.envelope import Rejected, make_envelope, utc_iso
from app.normalize.common import (
    EMPTY,
    boolean,
    content_id,
    customer_identities,
    drop_empty,
    first,
    is_mapping,
    occurred_at_of,
    snake_case,
    text,
)

SOURCE = "identity"


def flatten(doc: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{snake_case(key) or key}"
        if is_mapping(value) and depth < 2:
            flat.update(flatten(value, f"{name}_", depth + 1))
        elif value is not None:
            flat[name] = value
    return flat


def consents_of(raw: Any) -> dict[str, bool]:
    consents: dict[str, bool] = {}
    if is_mapping(raw):
        for channel, value in raw.items():
            if is_mapping(value):
                value = first(value, "granted", "optin", "opt_in", "status", "value")
            flag = boolean(value)
            if flag is not None:
                consents[snake_case(channel)] = flag
    elif isinstance(raw, list):
        for item in raw:
            if is_mapping(item):
                channel = snake_case(first(item, "channel", "type", "name"))
                flag = boolean(first(item, "granted", "optin", "opt_in", "status", "value"))
                if channel and flag is not None:
                    consents[channel] = flag
    return consents


def normalize(value: Any, headers: Mapping[str, str], settings: Settings) -> list[dict]:
    if not is_mapping(value):
        raise Rejected("not_an_object", "identity update must be a JSON object")
    ids = customer_identities(value, settings.default_region, "identifiers", "identities",
                              keep_unknown=True)
    ids.add_from(value.get("customer"))
    if not ids.ids:
        if ids.rejected:
            raise Rejected("invalid_value", "phone is not a valid number")
        raise Rejected("missing_field", "identifiers")
    occurred = occurred_at_of(value, "updated_at", "updatedAt")
    crm = text(first(value, "source", "crm", "system")) or "unknown"
    source_id = text(first(value, "update_id", "updateId", "id", "event_id"))
    if not source_id:
        source_id = "content:" + content_id(crm, sorted(ids.ids.items()), utc_iso(occurred),
                                            value.get("attributes"))
    raw_attributes = first(value, "attributes", "profile", "traits", default={})
    attributes = flatten(raw_attributes) if is_mapping(raw_attributes) else {}
    attributes = {k: v for k, v in attributes.items() if v not in EMPTY}
    consents = consents_of(first(value, "consents", "consent", "optins"))
    for channel, flag in consents.items():
        attributes.setdefault(f"{channel}_optin", flag)
    payload = drop_empty({"source": crm, "consents": consents,
                          "identifier_types": sorted(ids.ids)})
    trace = {"update_id": source_id, "crm": crm} | ids.trace()
    return [make_envelope(source=SOURCE, type="identity.updated", source_id=source_id,
                          occurred_at=occurred, identities=ids.ids, attributes=attributes,
                          payload=payload, trace=trace)]
