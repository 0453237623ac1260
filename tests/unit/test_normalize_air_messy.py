"""The AIR normalizer on hand-written messy payloads (tests/fixtures/air/messy_*): the variants the
contract lists, checked field by field, plus the never-crash guarantee on mangled documents."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from app.config import Settings
from app.envelope import Rejected
from app.normalize import SOURCES, normalize_bytes
from app.normalize.air import event_name_of

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "air"
SETTINGS = Settings()
NORMALIZE = SOURCES["air"][1]


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def envs(name: str) -> list[dict]:
    return NORMALIZE(load(name), {}, SETTINGS)


def by_type(envelopes: list[dict]) -> dict[str, dict]:
    return {e["type"]: e for e in envelopes}


@pytest.mark.parametrize("raw,expected", [
    ("tier.membership.move ", "TIER.MEMBERSHIP.MOVE"),
    ("TIER_MEMBERSHIP_MOVE", "TIER.MEMBERSHIP.MOVE"),
    ("posconnect-wallet-spend-void", "POSCONNECT.WALLET.SPEND.VOID"),
    ("WALLET_ACCOUNT_TRANSACTION_REFUND_DEBIT", "WALLET.ACCOUNT.TRANSACTION.REFUND_DEBIT"),
    ("SOMETHING_NEW", "SOMETHING_NEW"),  # unknown: kept as sent
])
def test_event_name_spellings(raw, expected):
    assert event_name_of(raw) == expected


def test_lowercase_names_upper_snake_types_and_string_numbers():
    env = envs("messy_lowercase_tier_move")[0]
    assert env["type"] == "loyalty.tier.moved"
    assert env["occurred_at"] == "2026-11-21T08:00:00.123Z"  # nanoseconds, no zone -> UTC
    p = env["payload"]
    assert (p["tier_before"], p["tier_after"], p["direction"]) == ("2", "3", "up")
    assert p["balances"] == {"points": 12500, "spend": 830.5, "transactions": 14}
    assert p["expiry_date"] == "2027-12-31T23:59:59.000Z"
    assert env["identities"]["customer_id"] == "C200001"  # identity type in lower case
    assert env["identities"]["line_uid"] == "U" + "a" * 32
    # a field of a known entity nobody reads is kept
    assert p["extra"]["fields"]["tierMembershipEntity"] == [{"loyaltyYear": 2026, "id": "88"}]


def test_everything_as_json_strings_and_basket_in_request_body():
    found = by_type(envs("messy_everything_strings_pos_settle"))
    settle = found["pos.transaction.settled"]
    p = settle["payload"]
    assert settle["identities"]["customer_id"] == "C200002"
    assert p["store_id"] == "TPE-01" and p["store_parent_id"] == "TPE"
    assert [line["upc"] for line in p["basket"]] == ["4710000000017", "4710000000024"]
    assert p["basket"][0]["colour"] == "n/a"  # unknown basket field kept
    assert p["totals"] == {"basket_value": 1250, "discount": 50, "items": 3, "lines": 2}
    earned = found["loyalty.points.earned"]
    assert earned["payload"]["points"] == 125
    assert earned["payload"]["balances_before"]["current"] == 1000
    assert earned["payload"]["balances_after"]["current"] == 1125
    assert earned["attributes"]["points_balance"] == 1125
    assert earned["event_id"] != settle["event_id"]


def test_identities_map_with_lists_and_unknown_document_keys():
    env = envs("messy_identities_map_lists")[0]
    assert env["type"] == "loyalty.points.credited"
    ids = env["identities"]
    assert ids["customer_id"] == "C200003" and ids["email"] == "a.lee@example.com"
    assert ids["air_identity:CARD"] == "6330000000001"
    p = env["payload"]
    assert p["points"] == 300 and p["points_balance"] == 1300
    assert p["balances_before"]["current"] == 1000 and p["balances_after"]["current"] == 1300
    assert p["extra"]["headers"] == {"eesRegion": "APAC"}
    assert p["extra"]["document"] == {"deliveryAttempt": 2}
    assert p["extra"]["fields"]["walletAccountTransactionEntity"][0]["reasonCode"] == "GOODWILL"


def test_trigger_with_coupon_reward_and_no_request_body():
    env = envs("messy_trigger_coupon_reward")[0]
    assert env["type"] == "loyalty.action.fired"
    p = env["payload"]
    assert p["reward"] == "coupon"
    assert p["action_reference"] == "BA_APP_DOWNLOAD"  # from walletTransactionEntity.triggers
    assert p["reference"] == "evt-42"
    assert [c["account_id"] for c in p["coupons_issued"]] == ["8100000003"]
    assert "points_credited" not in p
    assert env["attributes"]["last_reward_action"] == "BA_APP_DOWNLOAD"


def test_trigger_with_points_reward():
    env = envs("service_trigger")[0]
    p = env["payload"]
    assert p["reward"] == "points" and p["points_credited"] == 200
    assert p["balances_after"]["current"] == env["attributes"]["points_balance"]


def test_partial_refund_lowercase_event_and_unredeem():
    found = by_type(envs("messy_partial_refund"))
    refund = found["pos.transaction.refunded"]
    assert refund["occurred_at"] == "2026-11-21T09:30:00.000Z"
    assert refund["payload"]["points_refunded"] == 25
    assert refund["payload"]["coupons_unredeemed"][0]["account_id"] == "8200000001"
    assert refund["payload"]["coupons_unredeemed"][0]["expiry_date"] == "2026-12-31T23:59:59.000Z"
    assert found["loyalty.points.refunded"]["payload"]["points"] == 25


def test_consumer_contacts_map_string_optins_and_unknown_fields():
    env = envs("messy_consumer_unknown_fields")[0]
    assert env["type"] == "loyalty.consumer.updated"
    assert env["identities"]["email"] == "ann.lee@example.com"
    assert env["identities"]["phone"] == "+447911123456"
    assert env["attributes"]["marketing_optin"] is True
    assert env["attributes"]["language"] == "en-GB"
    kept = env["payload"]["extra"]["fields"]["walletConsumerEntity"][0]
    assert kept["segment"] == "VIP" and kept["data.preferences"] == {"store": "TPE-01"}


def test_plan_cancelled_with_identities_only_in_identity_ops():
    env = envs("messy_plan_cancelled_identity_ops")[0]
    assert env["type"] == "loyalty.plan.cancelled"
    assert env["identities"]["customer_id"] == "C200007"
    assert env["attributes"] == {"plan_id": "500777", "plan_status": "CANCELLED"}


def test_wallet_delete_with_deleted_identities_only_in_ops():
    env = envs("messy_wallet_delete_empty_identities")[0]
    assert env["type"] == "loyalty.programme.left"
    assert env["identities"]["customer_id"] == "C200009"
    assert env["identities"]["phone"] == "+886912000111"
    assert env["payload"]["deleted"] == ["walletConsumerEntity", "walletEntity",
                                         "walletIdentityEntity"]


def test_underscore_event_name_redeem():
    env = envs("messy_underscore_redeem")[0]
    assert env["type"] == "loyalty.coupon.redeemed"
    assert env["payload"]["coupons"][0]["campaign_id"] == "500777"
    assert env["trace"]["eventName"] == "WALLET.ACCOUNT.TRANSACTION.REDEEM"


def test_unknown_event_keeps_unknown_objects():
    env = envs("unknown_event_quest_progress")[0]
    assert env["type"] == "air.unmapped"
    assert env["payload"]["event_name"] == "WALLET.QUEST.PROGRESS"
    objects = env["payload"]["extra"]["objects"]
    assert objects["questProgressEntity"][0]["value"]["objectivesMet"] == 2
    assert env["identities"]["customer_id"] == "C200008"


@pytest.mark.parametrize("name,code", [
    ("bad_headers_number", "missing_field"),
    ("bad_event_name_object", "missing_field"),
    ("bad_empty_object", "missing_field"),
    ("bad_truncated_json", "invalid_json"),
])
def test_unreadable_documents_are_rejected_with_a_reason(name, code):
    with pytest.raises(Rejected) as info:
        normalize_bytes("air", (FIXTURES / f"{name}.json").read_bytes(), {}, SETTINGS)
    assert info.value.code == code
    assert info.value.detail  # the reason travels to ingress.dlq


def _mangle(value, rng: random.Random):
    """Replace random sub-values with odd types, recursively."""
    odd = [None, "", "x", 0, -1, 1.5, True, [], {}, [None], {"a": None}, "null", "{", "[]"]
    if isinstance(value, dict):
        return {k: (rng.choice(odd) if rng.random() < 0.15 else _mangle(v, rng))
                for k, v in value.items()}
    if isinstance(value, list):
        return [rng.choice(odd) if rng.random() < 0.15 else _mangle(v, rng) for v in value]
    return value


@pytest.mark.parametrize("seed", range(40))
def test_mangled_documents_never_crash(seed):
    rng = random.Random(seed)
    names = sorted(p.stem for p in FIXTURES.glob("*.json") if not p.stem.startswith("bad_"))
    doc = _mangle(copy.deepcopy(load(rng.choice(names))), rng)
    try:
        envelopes = NORMALIZE.unguarded(doc, {}, SETTINGS)  # no safety net: a bug fails here
    except Rejected as exc:
        assert exc.code in ("missing_field", "invalid_value", "not_an_object")
        return
    assert envelopes and all(e["type"] and e["event_id"] for e in envelopes)
