"""MAAC (LINE) results (`maac.results`) -> envelopes.

Records are the MAAC webhook envelope as published by our webhook endpoint,
`{"timestamp", "topic", "data"}`, with Kafka headers that may carry `CrescLab-Idempotency-Key`
(or the key in an `idempotency_key` field of the value), plus our own report-poller and binding
records:

- `message.first_open` -> `line.opened` (data{message_type, message_id, line_uid, customer_id})
- `report.clicks` -> `line.clicked` (data{event_id, opens, clicks, unique_clicks, window_start,
  window_end}); an aggregate per MAAC message topic, without a customer
- `line.bound` -> `line.bound` (data{line_uid, customer_id})

Other topics are rejected as `unsupported`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.config import Settings
from app.envelope import Rejected, make_envelope, utc_iso
from app.normalize.common import (
    Identities,
    as_dict,
    drop_empty,
    first,
    header,
    is_mapping,
    number,
    require_time,
    text,
    time_or_none,
)

SOURCE = "maac"
IDEMPOTENCY_HEADER = "CrescLab-Idempotency-Key"


def _number_or_text(raw: Any) -> Any:
    value = number(raw)
    return value if value is not None else text(raw)


def _line_ids(data: Mapping[str, Any], settings: Settings) -> Identities:
    ids = Identities(settings.default_region)
    ids.add("line_uid", first(data, "line_uid", "lineUid", "line_user_id"))
    ids.add("customer_id", first(data, "customer_id", "customerId"))
    return ids


def normalize(value: Any, headers: Mapping[str, str], settings: Settings) -> list[dict]:
    if not is_mapping(value):
        raise Rejected("not_an_object", "MAAC record must be a JSON object")
    topic = text(first(value, "topic", "event", "type"))
    if not topic:
        raise Rejected("missing_field", "topic")
    data = value.get("data")
    if not is_mapping(data):
        raise Rejected("missing_field", "data")
    key = header(headers, IDEMPOTENCY_HEADER) or text(
        first(value, "idempotency_key", "idempotencyKey"))
    trace = drop_empty({"maac_topic": topic, "idempotency_key": key})

    if topic == "message.first_open":
        ids = _line_ids(data, settings)
        if "line_uid" not in ids.ids:
            raise Rejected("missing_field", "data.line_uid")
        message_id = _number_or_text(first(data, "message_id", "messageId", "event_id"))
        occurred = require_time(first(value, "timestamp", "time", "occurred_at"), "timestamp")
        source_id = key or f"{topic}:{message_id}:{ids.ids['line_uid']}"
        payload = drop_empty({"maac_event_id": message_id,
                              "message_type": text(data.get("message_type"))})
        attributes = {"line_reachable": True, "line_last_opened_at": utc_iso(occurred)}
        return [make_envelope(source=SOURCE, type="line.opened", source_id=source_id,
                              occurred_at=occurred, identities=ids.ids, attributes=attributes,
                              payload=payload, trace=trace)]

    if topic == "report.clicks":
        event_id = _number_or_text(first(data, "event_id", "eventId", "topic_id"))
        if event_id is None:
            raise Rejected("missing_field", "data.event_id")
        window_start = time_or_none(first(data, "window_start", "start", "start_date"))
        window_end = time_or_none(first(data, "window_end", "end", "end_date"))
        occurred = window_end or require_time(value.get("timestamp"), "data.window_end")
        counts = {name: number(data.get(name)) for name in (
            "opens", "clicks", "unique_clicks", "adds_to_cart", "transactions",
            "transaction_revenue")}
        payload = drop_empty({
            "maac_event_id": event_id,
            "window_start": utc_iso(window_start) if window_start else None,
            "window_end": utc_iso(window_end) if window_end else None,
            **{k: v for k, v in counts.items() if v is not None},
        })
        for name in ("opens", "clicks", "unique_clicks"):
            payload.setdefault(name, 0)
        source_id = key or f"{topic}:{event_id}:{payload.get('window_start')}:{utc_iso(occurred)}"
        return [make_envelope(source=SOURCE, type="line.clicked", source_id=source_id,
                              occurred_at=occurred, identities={}, attributes={},
                              payload=payload, trace=trace)]

    if topic == "line.bound":
        ids = _line_ids(data, settings)
        if "line_uid" not in ids.ids:
            raise Rejected("missing_field", "data.line_uid")
        if len(ids.ids) < 2:
            raise Rejected("missing_field", "data.customer_id")
        occurred = require_time(first(value, "timestamp", "time", "occurred_at")
                                or first(data, "bound_at", "occurred_at"), "timestamp")
        source_id = key or f"{topic}:{ids.ids['line_uid']}:{ids.ids['customer_id']}"
        extra = as_dict(data.get("attributes"))
        return [make_envelope(source=SOURCE, type="line.bound", source_id=source_id,
                              occurred_at=occurred, identities=ids.ids,
                              attributes={"line_reachable": True, **extra}, payload={},
                              trace=trace)]

    raise Rejected("unsupported", "unknown MAAC topic")
