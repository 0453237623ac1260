"""Explicit checks of the AIR normalizer on the fields routes and destinations rely on."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from app.config import Settings
from app.envelope import Rejected, event_id_for
from app.normalize import SOURCES, air
from app.normalize.air import object_type, parse_body
from app.samples import AIR_EVENT_NAMES, realistic_air

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "air"
SETTINGS = Settings()


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def one(doc: dict, settings: Settings = SETTINGS) -> dict:
    envelopes = air.normalize(doc, {}, settings)
    assert envelopes
    return envelopes[0]


def test_tier_move_complete():
    doc = realistic_air("TIER.MEMBERSHIP.MOVE", tier_before="1001", tier_after="1003",
                        customer_id="C1", email=" Mei@Example.COM", phone="0912345678",
                        wallet_id="555", event_id="ev-1", event_date="2026-11-20T10:00:00")
    env = one(doc)
    assert env["type"] == "loyalty.tier.moved"
    assert env["source"] == "air"
    assert env["event_id"] == event_id_for("air", "ev-1")
    assert env["occurred_at"] == "2026-11-20T10:00:00.000Z"
    ids = env["identities"]
    assert ids["customer_id"] == "C1"
    assert ids["email"] == "mei@example.com"
    assert ids["air_wallet_id"] == "555"
    assert ids["air_identity:CUSTOMER_ID"] == "C1"
    assert env["customer_key"] == "customer_id:C1"
    p = env["payload"]
    assert p["tier_before"] == "1001" and p["tier_after"] == "1003"
    assert p["direction"] == "up"
    assert set(p["balances"]) == {"points", "spend", "transactions"}
    assert p["expiry_date"] == "2027-12-31T23:59:59.000Z"
    assert p["tier_membership_id"]
    assert p["transaction_type"] == "UPGRADE"
    a = env["attributes"]
    assert a["tier"] == "1003" and a["tier_before"] == "1001"
    assert a["tier_direction"] == "up"
    assert a["tier_expiry"] == p["expiry_date"]
    assert a["tier_points_balance"] == p["balances"]["points"]
    t = env["trace"]
    assert t["eesEventId"] == "ev-1" and t["eventName"] == "TIER.MEMBERSHIP.MOVE"
    for key in ("eesMasterEventId", "unitId", "clientId", "eesApiVersion"):
        assert t[key]


def test_tier_move_down_and_named_tiers():
    assert one(load("tier_move_down"))["attributes"]["tier_direction"] == "down"
    env = one(load("tier_move_named_tiers"))
    assert env["payload"]["tier_before"] == "GOLD" and env["payload"]["tier_after"] == "SILVER"
    assert env["payload"]["direction"] == "down"


def test_tier_direction_hints():
    assert air.direction_of("2", "1", ["UPGRADE"]) == "down"  # numbers win
    assert air.direction_of("GOLD", "PLATINUM", ["UPGRADE"]) == "up"
    assert air.direction_of("A", "B", ["TIER_DOWNGRADE"]) == "down"
    assert air.direction_of("A", "B", [None]) == "unknown"
    assert air.direction_of("1", "1", []) == "unknown"


def test_accounts_create_complete():
    doc = realistic_air("SERVICE.WALLET.ACCOUNTS.CREATE", customer_id="C7", wallet_id="777",
                        event_id="ev-join", points_balance=150, first_name="Mei",
                        last_name="Chen", language="zh-TW", marketing_optin=False,
                        event_date="2026-11-20T08:00:00", tier_after="1001")
    env = one(doc)
    assert env["type"] == "loyalty.programme.joined"
    p = env["payload"]
    assert p["wallet_id"] == "777"
    types = {a["type"] for a in p["accounts"]}
    assert {"POINTS", "ECOUPON"} <= types
    for account in p["accounts"]:
        assert {"account_id", "type", "client_type", "status", "balances"} <= set(account)
    assert p["tier"] == "1001"
    consumer = p["consumer"]
    assert consumer["name"] == "Mei Chen" and consumer["language"] == "zh-TW"
    assert {c["type"] for c in consumer["contacts"]} == {"email", "phone"}
    assert consumer["marketing_optin"] is False
    a = env["attributes"]
    assert a["member_since"] == env["occurred_at"] == "2026-11-20T08:00:00.000Z"
    assert a["tier"] == "1001"
    assert a["points_balance"] == 150
    assert a["marketing_optin"] is False
    assert env["identities"]["customer_id"] == "C7"
    assert env["identities"]["air_wallet_id"] == "777"


def test_accounts_create_upper_snake_object_types():
    env = one(load("messy_upper_snake_object_types"))
    assert env["type"] == "loyalty.programme.joined"
    assert env["payload"]["tier"]  # tier membership objectValue was a JSON string
    assert env["attributes"]["points_balance"] is not None
    assert env["payload"]["consumer"]["contacts"]


def test_object_type_spellings():
    for raw in ("walletAccountTransactionEntity", "WALLET_ACCOUNT_TRANSACTION_ENTITY",
                "WalletAccountTransactionEntity", "wallet_account_transaction_entity"):
        assert object_type(raw) == "walletAccountTransactionEntity"
    assert object_type("LOYALTY_PASSPORT_ENTITY") == "loyaltyPassportEntity"


def test_bodies_string_object_null_text():
    assert parse_body('{"a": 1}') == {"a": 1}
    assert parse_body({"a": 1}) == {"a": 1}
    assert parse_body(None) is None
    assert parse_body("OK, done") == "OK, done"
    assert one(load("messy_object_bodies"))["payload"]["reference"]
    assert one(load("messy_text_and_null_bodies"))["type"] == "loyalty.action.fired"


def test_identities_from_wallet_identity_entity_only():
    env = one(load("messy_enrichment_empty_list"))
    assert env["type"] == "loyalty.programme.left"
    assert env["identities"]["customer_id"] == "C100042"
    assert env["identities"]["air_wallet_id"] == "150000294"


def test_identities_nonstandard_map_and_missing_enrichment():
    env = one(load("messy_identities_map"))
    assert env["identities"]["customer_id"] == "C100042"
    assert env["identities"]["email"] == "mei@example.com"
    env = one(load("messy_no_enrichment"))
    assert env["identities"]["air_wallet_id"] == "150000294"
    assert env["type"] == "pos.spend.locked"


def test_configured_customer_identity():
    doc = realistic_air("TIER.MEMBERSHIP.MOVE")
    doc["enrichmentData"] = {"identities": {"CARD": "CARD-9", "CUSTOMER_ID": "C5"}}
    env = one(doc, Settings(air_customer_identity="CARD"))
    assert env["identities"]["customer_id"] == "CARD-9"
    assert env["identities"]["air_identity:CUSTOMER_ID"] == "C5"


def test_invalid_phone_is_dropped_and_noted():
    env = one(load("messy_invalid_mobile"))
    assert "phone" not in env["identities"]
    assert env["trace"]["rejected_identifiers"] == ["phone: invalid"]
    assert '"12345"' not in json.dumps(env["trace"])


def test_dates_without_zone_and_master_id_fallback():
    doc = load("messy_space_date_master_id")
    env = one(doc)
    assert env["occurred_at"] == "2026-11-20T10:15:00.000Z"
    assert env["event_id"] == event_id_for("air", doc["headers"]["eesMasterEventId"])
    assert env["type"] == "loyalty.consumer.updated"


def test_points_last_balance_wins_and_coupon_redemption():
    envs = air.normalize(load("settle_points_and_coupon"), {}, SETTINGS)
    settle = envs[0]
    assert settle["type"] == "pos.transaction.settled"
    assert settle["attributes"]["points_balance"] == 4321
    redeemed_ids = [c["account_id"] for c in settle["payload"]["coupons_redeemed"]]
    assert "8800000001" in redeemed_ids
    assert settle["payload"]["store_id"] and settle["payload"]["reference"]
    lines = settle["payload"]["basket"]
    assert lines and {"upc", "unit_cost", "quantity"} <= set(lines[0])
    assert settle["attributes"]["total_spend"] == settle["payload"]["totals"]["basket_value"]
    assert settle["payload"]["points_earned"] > 0
    redeemed = [e for e in envs if e["type"] == "loyalty.coupon.redeemed"]
    assert len(redeemed) == len(redeemed_ids)
    assert len({e["event_id"] for e in envs}) == len(envs)


def test_unknown_event_and_object_type_are_kept():
    env = one(load("unknown_event_name"))
    assert env["type"] == "air.unmapped"
    assert env["payload"]["event_name"] == "WALLET.STAMP.CARD.SHUFFLE"
    env = one(load("unknown_object_type"))
    assert env["type"] == "pos.transaction.opened"
    assert env["payload"]["extra"]["objects"]["loyaltyPassportEntity"][0]["value"]["stamps"] == 3


EXPECTED_TYPES = {
    "SERVICE.WALLET.CREATE": "loyalty.wallet.created",
    "SERVICE.WALLET.ACCOUNTS.CREATE": "loyalty.programme.joined",
    "WALLET.CONSUMER.CREATE": "loyalty.consumer.created",
    "WALLET.CONSUMER.UPDATE": "loyalty.consumer.updated",
    "WALLET.ACCOUNT.CREATE.SCHEME": "loyalty.account.created",
    "WALLET.ACCOUNT.CREATE.CAMPAIGN": "loyalty.coupon.issued",
    "WALLET.ACCOUNT.CREATE.PLAN": "loyalty.plan.joined",
    "WALLET.ACCOUNT.UPDATE": "loyalty.plan.cancelled",
    "SERVICE.WALLET.DELETE": "loyalty.programme.left",
    "POSCONNECT.WALLET.OPEN": "pos.transaction.opened",
    "POSCONNECT.WALLET.SETTLE": "pos.transaction.settled",
    "POSCONNECT.WALLET.FULFIL": "pos.transaction.fulfilled",
    "POSCONNECT.WALLET.REFUND": "pos.transaction.refunded",
    "POSCONNECT.WALLET.SPEND": "pos.spend.locked",
    "POSCONNECT.WALLET.SPEND.VOID": "pos.spend.voided",
    "SERVICE.TRIGGER": "loyalty.action.fired",
    "TIER.MEMBERSHIP.CREATE": "loyalty.tier.created",
    "TIER.MEMBERSHIP.CREDIT": "loyalty.tier.credited",
    "TIER.MEMBERSHIP.DEBIT": "loyalty.tier.debited",
    "TIER.MEMBERSHIP.MOVE": "loyalty.tier.moved",
    "TIER.MEMBERSHIP.ADJUST": "loyalty.tier.adjusted",
    "WALLET.ACCOUNT.TRANSACTION.REDEEM": "loyalty.coupon.redeemed",
}


@pytest.mark.parametrize("name", AIR_EVENT_NAMES)
def test_every_event_name(name: str):
    doc = realistic_air(name, customer_id="C9", wallet_id="99", phone="+81 90-1234-5678")
    env = one(doc)
    assert env["type"] == EXPECTED_TYPES[name]
    assert env["identities"]["customer_id"] == "C9"
    assert env["identities"]["air_wallet_id"] == "99"
    assert env["occurred_at"].endswith("Z")
    if "phone" in env["identities"]:
        assert env["identities"]["phone"] == "+819012345678"


def test_points_events_of_account_transactions():
    doc = realistic_air("POSCONNECT.WALLET.SETTLE")
    doc["headers"]["eventName"] = "WALLET.ACCOUNT.TRANSACTION.EARN"
    env = one(doc)
    assert env["type"] == "loyalty.points.earned"
    assert env["payload"]["points"] > 0


@pytest.mark.parametrize("mutate,code", [
    (lambda d: d.pop("headers"), "missing_field"),
    (lambda d: d.__setitem__("headers", "x"), "missing_field"),
    (lambda d: d["headers"].pop("eventName"), "missing_field"),
    (lambda d: [d["headers"].pop(k, None) for k in ("eesEventId", "eesMasterEventId",
                                                    "externalMessageId")], "missing_field"),
])
def test_rejections(mutate, code):
    doc = copy.deepcopy(realistic_air("TIER.MEMBERSHIP.MOVE"))
    mutate(doc)
    with pytest.raises(Rejected) as info:
        SOURCES["air"][1](doc, {}, SETTINGS)
    assert info.value.code == code


def test_garbage_operations_do_not_crash():
    doc = realistic_air("POSCONNECT.WALLET.SETTLE")
    doc["atomicOperations"] += [None, 5, "x", {"objectType": None}, {"objectValue": [1, 2]},
                                {"objectType": "walletTransactionEntity", "objectValue":
                                 {"basket": "not json", "location": [1]}}]
    doc["enrichmentData"] = {"walletEntity_1": None, "x": [None, {"identities": 3}]}
    doc["request"] = "weird"
    env = one(doc)
    assert env["type"] == "pos.transaction.settled"
