"""Insider Architect journey steps asking for a LINE push (`journey.triggers`) -> envelopes.

Our own ingress schema (topics/schemas/journey.triggers.json)::

    {"trigger_id": "...", "journey": {"id", "name"}, "step": {"id", "name"},
     "customer": {"customer_id", "email", "phone", "line_uid", "insider_uuid"},
     "maac": {"template_id", "event_id" | "event_name" | "topic"},
     "variables": {...}, "occurred_at": "...", "stale_after_s": 3600}

camelCase spellings and flat customer fields are accepted too. Type: `journey.<journey name in
snake_case>`, e.g. `journey.cart_abandoned`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.config import Settings
from app.envelope import Rejected, make_envelope
from app.normalize.common import (
    as_dict,
    customer_identities,
    drop_empty,
    first,
    is_mapping,
    number,
    occurred_at_of,
    snake_case,
    source_id_of,
    text,
)

SOURCE = "journey"


def number_or_text(raw: Any) -> int | float | str | None:
    value = number(raw)
    return value if value is not None else text(raw)


# The spellings of a block's id and of its name inside it (`journey{id | journey_id | ...}`),
# spelled out once rather than formatted for each record.
_BLOCK_FIELDS = {block: (("id", f"{block}_id", f"{block}Id"),
                         ("name", f"{block}_name", f"{block}Name"))
                 for block in ("journey", "step")}


def _named(doc: Mapping[str, Any], block: str, *flat: str) -> dict:
    raw = doc.get(block)
    if is_mapping(raw):
        ids, names = _BLOCK_FIELDS[block]
        return drop_empty({"id": text(first(raw, *ids)), "name": text(first(raw, *names))})
    if isinstance(raw, str):
        return drop_empty({"name": text(raw), "id": text(first(doc, *flat[:2]))})
    return drop_empty({"id": text(first(doc, *flat[:2])), "name": text(first(doc, *flat[2:]))})


def normalize(value: Any, headers: Mapping[str, str], settings: Settings) -> list[dict]:
    if not is_mapping(value):
        raise Rejected("not_an_object", "journey trigger must be a JSON object")
    source_id = source_id_of(value, "trigger_id", "triggerId", "id", "event_id", "eventId",
                             field="trigger_id")
    journey = _named(value, "journey", "journey_id", "journeyId", "journey_name", "journeyName")
    step = _named(value, "step", "step_id", "stepId", "step_name", "stepName")
    name = snake_case(journey.get("name") or journey.get("id"))
    if not name:
        raise Rejected("missing_field", "journey.name")
    occurred = occurred_at_of(value)
    ids = customer_identities(value, settings.default_region, "customer", "user", "identities")
    maac = as_dict(value.get("maac"))
    template_id = first(maac, "template_id", "templateId") or first(
        value, "template_id", "templateId")
    maac_event_id = first(maac, "event_id", "eventId", "topic_id", "topicId") or first(
        value, "maac_event_id", "maacEventId")
    maac_event_name = first(maac, "event_name", "eventName", "topic", "topic_name") or first(
        value, "maac_event_name", "maacEventName")
    variables = first(value, "variables", "vars", "template_variables", "templateVariables",
                      default={})
    if not is_mapping(variables):
        raise Rejected("invalid_value", "variables must be an object")
    stale = number(first(value, "stale_after_s", "staleAfterS", "stale_after"))
    payload = {
        "journey": journey,
        "step": step,
        "template_id": number_or_text(template_id),
        "maac_event_id": number_or_text(maac_event_id),
        "maac_event_name": text(maac_event_name),
        "variables": dict(variables),
    }
    if stale is not None:
        payload["stale_after_s"] = stale
    payload = {k: v for k, v in payload.items() if v is not None}
    attributes = drop_empty({"journey_id": journey.get("id"), "journey_name": journey.get("name"),
                             "journey_step": step.get("name") or step.get("id")})
    trace = drop_empty({"trigger_id": source_id, "journey_id": journey.get("id"),
                        "step_id": step.get("id")}) | ids.trace()
    return [make_envelope(source=SOURCE, type=f"journey.{name}", source_id=source_id,
                          occurred_at=occurred, identities=ids.ids, attributes=attributes,
                          payload=payload, trace=trace)]
