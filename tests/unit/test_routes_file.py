from pathlib import Path

import pytest
import yaml

from app.config import DestinationConfig
from app.destinations.base import ItemInvalid
from app.destinations.registry import DESTINATIONS, get_action

ROUTES = Path(__file__).resolve().parents[2] / "topics" / "routes.yaml"
DOC = yaml.safe_load(ROUTES.read_text())
CONFIG = DestinationConfig("http://x.test", "tok", {
    "sign_up_source_id": "1", "api_key": "k", "partner": "p", "client_id": "c"})
UID = "U" + "ab" * 16


def targets():
    return [(r["name"], t) for r in DOC["routes"] for t in r["deliver"]]


def test_routes_parse_with_unique_names():
    names = [r["name"] for r in DOC["routes"]]
    assert len(names) == len(set(names)) and len(names) >= 15
    assert all(r["when"]["type"] and r["deliver"] for r in DOC["routes"])


@pytest.mark.parametrize("route,target", targets(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_named_action_exists(route, target):
    action = get_action(target["destination"], target["action"])
    assert action.name == target["action"]


def test_registry_lookup_errors():
    assert set(DESTINATIONS) == {"maac", "braze", "attentive", "sessionm", "insider", "air"}
    with pytest.raises(KeyError):
        get_action("braze", "nope")
    with pytest.raises(KeyError):
        get_action("nope", "push")


def test_every_destination_and_flow_is_used():
    used = {(t["destination"], t["action"]) for _, t in targets()}
    assert {d for d, _ in used} == set(DESTINATIONS)
    types = {r["when"]["type"] for r in DOC["routes"]}
    for expected in ("loyalty.tier.moved", "loyalty.programme.joined", "loyalty.points.earned",
                     "loyalty.coupon.redeemed", "pos.transaction.settled", "journey.*",
                     "line.opened", "line.clicked", "line.sent", "line.unreachable",
                     "audience.entered", "sessionm.*", "loyalty_action.*",
                     "membership.subscribed", "membership.unsubscribed"):
        assert expected in types


def envelope(type_, source, attributes=None, payload=None, **ids):
    return {"event_id": "ev-1", "type": type_, "source": source,
            "occurred_at": "2099-01-01T00:00:00.000Z", "customer_key": "customer_id:C1",
            "identities": {"customer_id": "C1", "email": "a@example.com",
                           "phone": "+14155550100", **ids},
            "attributes": attributes or {}, "payload": payload or {}, "trace": {}}


SAMPLES = [
    (envelope("loyalty.tier.moved", "air", {"tier": "GOLD", "tier_direction": "up",
                                            "tier_expiry": "2027-12-31", "points_balance": 10},
              line_uid=UID),
     {("braze", "track_attributes"), ("braze", "track_event"), ("insider", "upsert"),
      ("maac", "push"), ("attentive", "custom_event")}),
    (envelope("loyalty.tier.moved", "air", {"tier": "SILVER", "tier_direction": "down"},
              line_uid=UID),
     {("braze", "track_attributes"), ("braze", "track_event"), ("insider", "upsert"),
      ("attentive", "custom_event")}),
    (envelope("pos.transaction.settled", "air", {"total_spend": 12},
              {"basket": [{"upc": "1", "unit_cost": 250, "quantity": 2}], "currency": "TWD"}),
     {("braze", "track_purchase"), ("attentive", "custom_event"), ("insider", "upsert")}),
    (envelope("journey.cart_abandoned", "journey", payload={
        "template_id": 1, "maac_event_id": 2, "variables": {"name": "A"}}, line_uid=UID),
     {("maac", "push")}),
    # LINE results reach Insider through the feedback stage (app/agents/feedback.py), which
    # marks its records; the route stage delivers nothing for a raw line.opened.
    ({**envelope("line.opened", "maac", payload={"maac_event_id": 5}),
      "trace": {"feedback": "insider"}}, {("insider", "upsert")}),
    (envelope("line.opened", "maac", payload={"maac_event_id": 5}), set()),
    (envelope("audience.entered", "audience", payload={
        "audience": {"id": "seg-late-delivery"}, "audience_id": "seg-late-delivery"}),
     {("air", "trigger")}),
    (envelope("audience.entered", "audience", payload={
        "audience_id": "seg-vip", "platform": "braze"}),
     {("sessionm", "segment_tag")}),
    (envelope("sessionm.offer_issued", "sessionm", payload={"campaign_id": "c", "offer_id": "o"}),
     {("braze", "campaign_trigger")}),
    (envelope("sessionm.points_awarded", "sessionm", payload={"canvas_id": "v", "campaign_id": "c"}),
     {("braze", "canvas_trigger")}),
    (envelope("loyalty_action.points_earned", "annex", payload={"action_type": "points_earned"}),
     {("attentive", "custom_event")}),
    (envelope("membership.subscribed", "annex"), {("attentive", "subscribe")}),
]


@pytest.mark.parametrize("env,expected", SAMPLES,
                         ids=lambda v: v.get("type", "") if isinstance(v, dict) else "")
def test_sample_events_plan_and_prepare(env, expected):
    routing = pytest.importorskip("app.routing")
    rules = routing.parse_rules(DOC)
    planned = routing.plan(rules, env)
    assert {(d["destination"], d["action"]) for d in planned} == expected
    for delivery in planned:
        action = get_action(delivery["destination"], delivery["action"])
        try:
            action.prepare(delivery, CONFIG)
        except ItemInvalid as exc:  # pragma: no cover - shows which rule is broken
            pytest.fail(f"{delivery['route']}: {exc}")
