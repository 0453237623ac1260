"""LINE results -> feedback records for Insider (pure parts; the stage is app/agents/feedback.py).

A feedback record is a canonical envelope of type `line.*` on `feedback.insider`, keyed by the
customer, with ``trace.feedback = "insider"``: the LINE rules in topics/routes.yaml only match
envelopes carrying that mark, so the route stage never delivers a raw `line.opened` itself and
the feedback stage plans and settles every LINE result exactly once.

- `line.sent` / `line.unreachable`: from the MAAC sink's outcomes (`from_outcome`). Unreachable
  = no or malformed LINE uid, or a LINE error in MAAC's 200 result / multicast fail_info.
- `line.opened`: from `message.first_open` webhooks; journey, template and the customer's other
  identifiers are joined from the push that caused it (`SendMemory`, per worker process).
- `line.clicked`: only when it names a customer; the topic report's aggregates (per MAAC event
  id, no customer) are campaign-level results kept on `events.normalized`.
- `line.bound`: LINE attributes for Insider segments (`line_reachable`).

Feedback event ids are derived from the cause's id, so replays and redeliveries land on the same
ledger entries. Nothing here logs or returns LINE uids outside the envelope itself.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from app.envelope import customer_key_of, event_id_for
from app.pipeline import now_iso

MARK = "insider"
SOURCE = "relay"
TAP_TYPES = ("line.opened", "line.clicked", "line.bound")
MAAC_ACTIONS = ("push", "multicast")
# Identifiers an Insider upsert can name a user by (app/destinations/insider).
INSIDER_IDS = ("customer_id", "email", "phone", "insider_uuid")
REPORT_COUNTS = ("opens", "clicks", "unique_clicks", "adds_to_cart", "transactions",
                 "transaction_revenue")


def is_feedback(envelope: Mapping[str, Any]) -> bool:
    return (envelope.get("trace") or {}).get("feedback") == MARK


def feedback_id(cause: str) -> str:
    """A stable event id for the feedback record of `cause` (a delivery id or an event id)."""
    return event_id_for(SOURCE, f"feedback:{cause}")


def _journey_payload(envelope: Mapping[str, Any]) -> dict[str, Any]:
    payload = envelope.get("payload") or {}
    attrs = envelope.get("attributes") or {}
    journey = payload.get("journey") if isinstance(payload.get("journey"), Mapping) else {}
    step = payload.get("step") if isinstance(payload.get("step"), Mapping) else {}
    out = {
        "journey": journey.get("name") or attrs.get("journey_name") or journey.get("id"),
        "journey_id": journey.get("id") or attrs.get("journey_id"),
        "step": step.get("name") or attrs.get("journey_step") or step.get("id"),
    }
    return {k: v for k, v in out.items() if v not in (None, "")}


def from_outcome(outcome: Any, final_status: str, event_id: int | None = None
                 ) -> dict[str, Any] | None:
    """The `line.sent` / `line.unreachable` record for a MAAC sink outcome, or None.

    Failures that are not about reachability (bad template variable, 4xx, retries exhausted)
    are the relay's problem, not the customer's: they produce no feedback."""
    delivery = outcome.delivery
    if delivery.get("action") not in MAAC_ACTIONS:
        return None
    status, reason = outcome.status, outcome.reason or ""
    if final_status == "delivered" and status == "delivered":
        kind = "line.sent"
    elif status == "unreachable":
        kind = "line.unreachable"
    else:
        return None
    envelope = delivery.get("envelope") or {}
    params = delivery.get("params") or {}
    template = params.get("template_id")
    if not isinstance(template, int):
        template = (envelope.get("payload") or {}).get("template_id")
    payload: dict[str, Any] = {**_journey_payload(envelope), "template_id": template,
                               "maac_event_id": event_id, "journey_event_id": envelope.get(
                                   "event_id")}
    attributes: dict[str, Any] = {"line_reachable": kind == "line.sent"}
    now = now_iso()
    if kind == "line.sent":
        attributes["line_last_sent_at"] = now
    else:
        payload["reason"] = reason[:200]
    return _record(delivery, kind, feedback_id(delivery["delivery_id"]), now, attributes,
                   payload)


def _record(delivery: Mapping[str, Any], kind: str, event_id: str, occurred_at: str,
            attributes: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """A feedback record about one delivery, in the customer's own identifiers."""
    envelope = delivery.get("envelope") or {}
    identities = dict(envelope.get("identities") or {})
    return {
        "event_id": event_id,
        "type": kind,
        "source": SOURCE,
        "occurred_at": occurred_at,
        "customer_key": delivery.get("customer_key") or customer_key_of(identities),
        "identities": identities,
        "attributes": attributes,
        "payload": {k: v for k, v in payload.items() if v not in (None, "")},
        "trace": {"feedback": MARK, "parent_event_id": envelope.get("event_id"),
                  "delivery_id": delivery["delivery_id"]},
    }


class SendMemory:
    """(MAAC event id, LINE uid) -> what was sent (journey, template, identities), bounded.

    Lets a first-open webhook, which names only the LINE uid and the event id, become an
    Insider event with the journey and template and the customer's own identifiers."""

    def __init__(self, size: int = 200_000):
        self.size = size
        self._sent: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def remember(self, record: Mapping[str, Any]) -> None:
        uid = (record.get("identities") or {}).get("line_uid")
        event_id = (record.get("payload") or {}).get("maac_event_id")
        if not uid or event_id is None:
            return
        key = (str(event_id), str(uid))
        self._sent.pop(key, None)
        self._sent[key] = {"identities": dict(record.get("identities") or {}),
                           "customer_key": record.get("customer_key"),
                           "payload": {k: v for k, v in (record.get("payload") or {}).items()
                                       if k in ("journey", "journey_id", "step", "template_id",
                                                "journey_event_id")}}
        while len(self._sent) > self.size:
            self._sent.popitem(last=False)

    def lookup(self, event_id: Any, uid: Any) -> dict[str, Any] | None:
        return self._sent.get((str(event_id), str(uid)))

    def __len__(self) -> int:
        return len(self._sent)


def from_result(envelope: Mapping[str, Any], memory: SendMemory | None = None
                ) -> dict[str, Any] | None:
    """The feedback record for a normalized MAAC result (`line.opened/clicked/bound`), or None
    when it names no customer Insider knows: topic-report aggregates, or an open by a LINE uid
    that is bound to no customer id and that this worker did not push to.

    The join with the push (`SendMemory`) is per worker process; an open handled by another
    worker keeps the webhook's own identifiers (MAAC's `customer_id` is the bound customer id)."""
    if envelope.get("type") not in TAP_TYPES or not envelope.get("identities"):
        return None
    identities = dict(envelope["identities"])
    payload = dict(envelope.get("payload") or {})
    customer_key = envelope.get("customer_key")
    sent = memory.lookup(payload.get("maac_event_id"), identities.get("line_uid")) \
        if memory is not None and envelope["type"] != "line.bound" else None
    if sent:
        # The customer's own identifiers (from the push) beat what the webhook carries.
        identities = {**identities, **sent["identities"]}
        payload = {**sent["payload"], **payload}
        customer_key = sent.get("customer_key") or customer_key
    if not any(identities.get(kind) for kind in INSIDER_IDS):
        return None  # e.g. an open of a broadcast by a LINE user bound to no customer
    return {
        **envelope,
        "event_id": feedback_id(envelope["event_id"]),
        "customer_key": customer_key or customer_key_of(identities),
        "identities": identities,
        "payload": payload,
        "trace": {**(envelope.get("trace") or {}), "feedback": MARK,
                  "parent_event_id": envelope["event_id"]},
    }


# ---- the topic-report poller ---------------------------------------------------------------

def report_window(now: float, lookback_days: int) -> tuple[str, str]:
    """start_date/end_date (YYYY-MM-DD, UTC) covering the last `lookback_days` days."""
    today = datetime.fromtimestamp(now, UTC).date()
    return (today - timedelta(days=max(0, lookback_days))).isoformat(), today.isoformat()


def due_event_ids(recent: Mapping[int, float], now: float, max_age_s: float) -> list[int]:
    """Event ids used within `max_age_s`, most recent first."""
    return [e for e, at in sorted(recent.items(), key=lambda kv: -kv[1]) if now - at <= max_age_s]


def report_counts(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, Mapping):
        return None
    counts = {k: body.get(k) for k in REPORT_COUNTS if isinstance(body.get(k), int | float)}
    return counts or None


def report_record(event_id: int, counts: Mapping[str, Any], start: str, end: str,
                  now: float | None = None) -> dict[str, Any]:
    """A `report.clicks` record for maac.results (app/normalize/maac.py reads it)."""
    now = time.time() if now is None else now
    return {"timestamp": int(now * 1000), "topic": "report.clicks",
            "data": {"event_id": event_id, "window_start": start,
                     "window_end": datetime.fromtimestamp(now, UTC).isoformat().replace(
                         "+00:00", "Z"), **counts},
            "idempotency_key": f"report:{event_id}:{start}:{end}:" + ":".join(
                str(counts.get(k, 0)) for k in REPORT_COUNTS)}


def from_decision(delivery: Mapping[str, Any], decision: Any) -> dict[str, Any]:
    """The `message.suppressed` / `message.deferred` record for a message the relay held back
    (app/safety), so an Insider journey learns why and can pick another path."""
    envelope = delivery.get("envelope") or {}
    kind = "message.suppressed" if decision.action == "suppress" else "message.deferred"
    payload: dict[str, Any] = {
        **_journey_payload(envelope), "channel": decision.channel, "purpose": decision.purpose,
        "reason": decision.reason, "destination": delivery.get("destination"),
        "action": delivery.get("action"), "route": delivery.get("route"),
        "until": decision.until.isoformat() if decision.until else None}
    return _record(delivery, kind, feedback_id(f"{kind}:{delivery['delivery_id']}"), now_iso(),
                   {}, payload)
