"""The pure parts of the LINE feedback loop (app/feedback): outcome -> feedback record, the send
memory join for first opens, the routing of feedback records, and the topic-report records."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from app import feedback
from app.config import DestinationConfig, load_settings
from app.delivery.core import Outcome
from app.destinations.registry import get_action
from app.normalize import maac as maac_normalizer
from app.routing import load_rules, plan

ROOT = Path(__file__).resolve().parents[2]
UID = "U" + "0123456789abcdef" * 2
SETTINGS = load_settings({})
RULES = load_rules(str(ROOT / "topics" / "routes.yaml"))
CONFIG = DestinationConfig("http://insider.test", "tok", {"partner": "p"})


def schema(name: str):
    return jsonschema.Draft202012Validator(json.loads((ROOT / "topics" / "schemas" / name).read_text()))


def journey_delivery(uid=UID, **params):
    env = {"event_id": "6b0c8a52-8d8e-5a55-9d62-6f3f8f7a3c11", "type": "journey.cart_abandoned",
           "source": "journey", "occurred_at": "2026-11-22T10:00:00.000Z",
           "customer_key": "customer_id:C1",
           "identities": {"customer_id": "C1", "email": "a@example.com",
                          **({"line_uid": uid} if uid else {})},
           "attributes": {"journey_name": "Cart Abandoned", "journey_step": "1h"},
           "payload": {"journey": {"id": "j1", "name": "Cart Abandoned"},
                       "step": {"id": "s1", "name": "1h"}, "template_id": 2048,
                       "maac_event_id": 77, "variables": {}},
           "trace": {}}
    return {"delivery_id": f"maac:push:{env['event_id']}:journey-line-push", "destination": "maac",
            "action": "push", "event_id": env["event_id"], "customer_key": "customer_id:C1",
            "route": "journey-line-push", "params": params, "envelope": env}


def test_delivered_push_becomes_line_sent_with_journey_template_and_event():
    record = feedback.from_outcome(Outcome(journey_delivery(), "delivered"), "delivered", 77)
    assert record["type"] == "line.sent" and record["customer_key"] == "customer_id:C1"
    assert record["payload"]["journey"] == "Cart Abandoned"
    assert record["payload"]["template_id"] == 2048 and record["payload"]["maac_event_id"] == 77
    assert record["attributes"]["line_reachable"] is True
    assert feedback.is_feedback(record)
    schema("feedback.insider.json").validate(record)
    # stable: the same delivery always yields the same feedback event (the ledger's key)
    again = feedback.from_outcome(Outcome(journey_delivery(), "delivered"), "delivered", 77)
    assert again["event_id"] == record["event_id"] != journey_delivery()["event_id"]


@pytest.mark.parametrize("reason", ["no LINE uid", "Failed to send messages; blocked"])
def test_unreachable_outcome_becomes_line_unreachable(reason):
    record = feedback.from_outcome(Outcome(journey_delivery(None), "unreachable", reason),
                                   "unreachable", 77)
    assert record["type"] == "line.unreachable"
    assert record["payload"]["reason"] == reason
    assert record["attributes"]["line_reachable"] is False


@pytest.mark.parametrize("status,final", [
    ("failed", "dead_lettered"),  # bad template variable: the relay's problem, not LINE's
    ("retry", "dead_lettered"),
    ("skipped", "skipped"),
])
def test_other_outcomes_give_no_feedback(status, final):
    outcome = Outcome(journey_delivery(), status, "invalid: variable 'img' must be a .jpg")
    assert feedback.from_outcome(outcome, final, 77) is None


def test_non_maac_actions_give_no_feedback():
    delivery = {**journey_delivery(), "action": "upsert"}
    assert feedback.from_outcome(Outcome(delivery, "delivered"), "delivered", None) is None


def first_open(uid=UID, event_id=77, customer_id=None, key="k-1"):
    body = {"timestamp": "2026-11-22T10:05:00Z", "topic": "message.first_open",
            "data": {"message_type": "openapi", "message_id": event_id, "line_uid": uid,
                     **({"customer_id": customer_id} if customer_id else {})}}
    [env] = maac_normalizer.normalize(body, {"CrescLab-Idempotency-Key": key}, SETTINGS)
    return env


def test_first_open_joins_the_push_it_answers():
    memory = feedback.SendMemory()
    memory.remember(feedback.from_outcome(Outcome(journey_delivery(), "delivered"), "delivered", 77))
    record = feedback.from_result(first_open(), memory)
    assert record["type"] == "line.opened"
    assert record["customer_key"] == "customer_id:C1"
    assert record["identities"]["email"] == "a@example.com"
    assert record["payload"]["journey"] == "Cart Abandoned"
    assert record["payload"]["template_id"] == 2048 and record["payload"]["maac_event_id"] == 77
    assert record["trace"]["parent_event_id"] == first_open()["event_id"]
    # an open for another event id of the same uid is not joined to this push
    other = feedback.from_result(first_open(event_id=78, customer_id="C1"), memory)
    assert "journey" not in other["payload"] and "email" not in other["identities"]


def test_feedback_rules_map_to_insider_events_and_attributes():
    memory = feedback.SendMemory()
    sent = feedback.from_outcome(Outcome(journey_delivery(), "delivered"), "delivered", 77)
    memory.remember(sent)
    opened = feedback.from_result(first_open(), memory)
    unreachable = feedback.from_outcome(
        Outcome(journey_delivery(None), "unreachable", "no LINE uid"), "unreachable", 77)
    users = {}
    for record in (sent, opened, unreachable):
        [delivery] = plan(RULES, record)
        assert (delivery["destination"], delivery["action"]) == ("insider", "upsert")
        users[record["type"]] = get_action("insider", "upsert").prepare(delivery, CONFIG)["user"]
    opened_user = users["line.opened"]
    [event] = opened_user["events"]
    assert event["event_name"] == "line_message_opened"
    assert event["event_params"]["custom"]["journey"] == "Cart Abandoned"
    assert event["event_params"]["custom"]["template_id"] == 2048
    assert event["event_params"]["custom"]["maac_event_id"] == 77
    assert opened_user["attributes"]["custom"]["line_last_opened_at"] == "2026-11-22T10:05:00.000Z"
    assert opened_user["identifiers"]["custom"]["customer_id"] == "C1"
    assert users["line.sent"]["events"][0]["event_name"] == "line_message_sent"
    assert users["line.unreachable"]["attributes"]["custom"]["line_reachable"] is False
    assert UID not in json.dumps(users)  # Insider users are named by customer, never LINE uid


def test_raw_line_results_are_not_routed_by_the_route_stage():
    assert plan(RULES, first_open()) == []


def test_report_aggregates_name_no_customer_and_give_no_feedback():
    counts = {"opens": 3, "clicks": 2, "unique_clicks": 1}
    record = feedback.report_record(77, counts, "2026-11-19", "2026-11-22", now=1795000000.0)
    schema("maac.results.json").validate(record)
    [env] = maac_normalizer.normalize(record, {}, SETTINGS)
    assert env["type"] == "line.clicked" and env["identities"] == {}
    assert env["payload"]["maac_event_id"] == 77 and env["payload"]["clicks"] == 2
    assert feedback.from_result(env, feedback.SendMemory()) is None
    assert plan(RULES, env) == []
    same = feedback.report_record(77, counts, "2026-11-19", "2026-11-22", now=1795000100.0)
    assert same["idempotency_key"] == record["idempotency_key"]  # unchanged counts, same id


def test_line_bound_feedback_keeps_the_binding_for_insider():
    body = {"timestamp": "2026-11-22T10:05:00Z", "topic": "line.bound",
            "data": {"line_uid": UID, "customer_id": "C9"}}
    [env] = maac_normalizer.normalize(body, {}, SETTINGS)
    record = feedback.from_result(env)
    assert record["customer_key"] == "customer_id:C9"
    [delivery] = plan(RULES, record)
    user = get_action("insider", "upsert").prepare(delivery, CONFIG)["user"]
    assert user["attributes"]["custom"]["line_reachable"] is True


def test_report_helpers():
    now = 1795000000.0
    start, end = feedback.report_window(now, 3)
    assert start < end and len(end) == 10
    recent = {1: now - 10, 2: now - 10_000, 3: now - 5}
    assert feedback.due_event_ids(recent, now, 60) == [3, 1]
    assert feedback.report_counts({"opens": 1, "clicks": 0, "urls": []}) == {"opens": 1, "clicks": 0}
    assert feedback.report_counts({"detail": "Not found."}) is None


def test_send_memory_is_bounded():
    memory = feedback.SendMemory(size=2)
    for event_id in (1, 2, 3):
        memory.remember({"identities": {"line_uid": UID}, "payload": {"maac_event_id": event_id}})
    assert len(memory) == 2 and memory.lookup(1, UID) is None and memory.lookup(3, UID)


def test_open_by_an_unknown_line_user_gives_no_feedback():
    assert feedback.from_result(first_open(), feedback.SendMemory()) is None
    record = feedback.from_result(first_open(customer_id="C7"), feedback.SendMemory())
    assert record["customer_key"] == "customer_id:C7"
