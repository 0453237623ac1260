"""The AIR and audience rules of topics/routes.yaml against real normalizer output: every fixture
through `relay inspect`'s planner, and the requests each use case of the AIR contract produces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config import DestinationConfig, Settings
from app.inspect import inspect_payload

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SETTINGS = Settings().with_destinations(**{
    name: DestinationConfig(f"http://{name}.test", "tok", {
        "sign_up_source_id": "1", "api_key": "k", "partner": "p", "client_id": "c"})
    for name in ("maac", "braze", "attentive", "sessionm", "insider", "air")})
# Fixtures whose event names no customer at all (only a wallet id): the identity graph has to
# supply one at run time, so a Braze/Insider preview can't be prepared from the payload alone.
NO_CUSTOMER = {"messy_no_enrichment"}


def inspect(source: str, name: str) -> dict:
    out, err = inspect_payload(SETTINGS, source, (FIXTURES / source / f"{name}.json").read_bytes())
    assert err is None, err
    return out


def by_route(out: dict) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for d in out["deliveries"]:
        found.setdefault(d["route"], []).append(d)
    return found


def air_fixtures() -> list[str]:
    return sorted(p.stem for p in (FIXTURES / "air").glob("*.json")
                  if not p.stem.startswith("bad_") and p.stem not in NO_CUSTOMER)


@pytest.mark.parametrize("name", air_fixtures())
def test_every_planned_delivery_prepares(name):
    out = inspect("air", name)
    invalid = [(d["route"], d["action"], d["invalid"]) for d in out["deliveries"] if "invalid" in d]
    assert not invalid, invalid


def braze_body(deliveries: list[dict]) -> dict:
    (d,) = deliveries
    assert d["request"]["path"] == "/users/track", d
    return d["request"]["json"]


def test_tier_upgrade_reaches_braze_insider_attentive_and_line():
    routes = by_route(inspect("air", "messy_lowercase_tier_move"))
    attrs = braze_body(routes["air-tier-attributes-braze"])["attributes"][0]
    assert attrs["loyalty_tier"] == "3" and attrs["loyalty_tier_expiry"].startswith("2027-12-31")
    event = braze_body(routes["air-tier-moved-braze"])["events"][0]
    assert event["name"] == "tier_moved" and event["properties"]["direction"] == "up"
    assert "air-tier-moved-insider" in routes
    push = routes["air-tier-upgrade-line"][0]["request"]["json"]
    assert push["template_id"] == 20481 and push["data"]["tier"] == "3"
    assert "air-tier-moved-attentive" not in routes  # no phone in this payload


def test_tier_down_is_no_line_push():
    routes = by_route(inspect("air", "tier_move_down"))
    assert "air-tier-upgrade-line" not in routes and "air-tier-moved-braze" in routes


def test_joined_sets_member_since_and_sends_events():
    routes = by_route(inspect("air", "service_wallet_accounts_create"))
    attrs = braze_body(routes["air-programme-joined"][:1])["attributes"][0]
    assert attrs["loyalty_member_since"].endswith("Z") and "loyalty_points_balance" in attrs
    assert {d["action"] for d in routes["air-programme-joined"]} == {
        "track_attributes", "track_event", "upsert"}
    assert routes["air-programme-joined-attentive"][0]["request"]["json"]["type"] == \
        "Loyalty Joined"


def test_purchase_one_braze_purchase_per_basket_line():
    out = inspect("air", "posconnect_wallet_settle")
    settle = out["envelopes"][0]
    routes = by_route(out)
    purchases = braze_body(routes["air-pos-settled"][:1])["purchases"]
    lines = settle["payload"]["basket"]
    assert len(purchases) == len(lines)
    assert [p["product_id"] for p in purchases] == [line["upc"] for line in lines]
    assert all(p["currency"] == "TWD" for p in purchases)
    assert {d["destination"] for d in routes["air-pos-settled"]} == {"braze", "insider"}
    assert routes["air-pos-settled-attentive"][0]["request"]["json"]["type"] == "Purchase Settled"
    earned = braze_body(routes["air-points-earned"][:1])["events"][0]
    assert earned["name"] == "points_earned" and earned["properties"]["points"] > 0
    assert routes["air-coupon-redeemed"][0]["request"]["json"]["events"][0]["properties"][
        "campaign_id"]
    balance = braze_body(routes["air-points-balance-braze"])["attributes"][0]
    assert balance["loyalty_points_balance"] == settle["attributes"]["points_balance"]


def test_reward_reaches_braze_and_insider():
    routes = by_route(inspect("air", "service_trigger"))
    event = braze_body(routes["air-reward-braze"][:1])["events"][0]
    assert event["name"] == "loyalty_reward_issued"
    assert event["properties"]["points"] == 200 and event["properties"]["reward"] == "points"
    insider = routes["air-reward-braze"][1]["request"]["json"]["users"][0]
    assert insider["events"][0]["event_name"] == "loyalty_reward_issued"
    coupon = by_route(inspect("air", "messy_trigger_coupon_reward"))
    props = braze_body(coupon["air-reward-braze"][:1])["events"][0]["properties"]
    assert props["reward"] == "coupon" and props["coupon_campaign_id"] == "500777"
    assert "air-reward-points-balance-braze" not in coupon  # nothing to set without a balance


def test_audience_entered_triggers_air_with_the_event_id():
    out = inspect("audience", "braze_app_downloaded")
    (delivery,) = [d for d in out["deliveries"] if d["destination"] == "air"]
    body = delivery["request"]["json"]
    assert delivery["route"] == "audience-app-downloaded-air"
    assert body == {"identityValue": "C100042", "triggers": [{"reference": "BA_APP_DOWNLOAD"}],
                    "walletTransaction": {"reference": out["envelopes"][0]["event_id"]}}


def test_audience_exited_triggers_nothing():
    doc = json.loads((FIXTURES / "audience" / "braze_app_downloaded.json").read_text())
    doc["change"] = "removed"
    out, err = inspect_payload(SETTINGS, "audience", json.dumps(doc).encode())
    assert err is None and out["envelopes"][0]["type"] == "audience.exited"
    assert not [d for d in out["deliveries"] if d["destination"] == "air"]
