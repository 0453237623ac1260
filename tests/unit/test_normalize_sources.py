"""Key fields of the non-AIR normalizers, the shared helpers and `normalize_bytes`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config import Settings
from app.envelope import Rejected, event_id_for
from app.normalize import SOURCES, normalize_bytes
from app.normalize.common import clean_email, clean_phone, dig, snake_case

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SETTINGS = Settings()
LINE_UID = "U4af4980629a1b2c3d4e5f6a7b8c9d0e1"


def run(source: str, name: str, headers: dict | None = None) -> list[dict]:
    raw = (FIXTURES / source / f"{name}.json").read_bytes()
    return normalize_bytes(source, raw, headers or {}, SETTINGS)


def test_sources_table():
    assert {s: t for s, (t, _) in SOURCES.items()} == {
        "air": "air.outbound", "annex": "loyalty.actions", "journey": "journey.triggers",
        "audience": "audience.membership", "identity": "identity.updates",
        "sessionm": "sessionm.messages", "maac": "maac.results"}


def test_helpers():
    assert snake_case("Cart Abandoned") == "cart_abandoned"
    assert snake_case("browseAbandonment") == "browse_abandonment"
    assert snake_case("REWARD-UNLOCKED") == "reward_unlocked"
    assert clean_email("  Mei.Chen@Example.COM ") == "mei.chen@example.com"
    assert clean_email("not an email") is None
    assert clean_phone("0912-345-678", "TW") == "+886912345678"
    assert clean_phone("+81 90-1234-5678", "TW") == "+819012345678"
    assert clean_phone("(415) 412-3456", "US") == "+14154123456"
    assert clean_phone("12345", "TW") is None
    assert dig({"a": [{"b": 1}]}, "a", 0, "b") == 1
    assert dig({"a": None}, "a", "b", default=3) == 3


def test_journey_cart_abandoned():
    [env] = run("journey", "cart_abandoned")
    assert env["type"] == "journey.cart_abandoned"
    assert env["event_id"] == event_id_for("journey", "trg-0001")
    assert env["identities"]["line_uid"] == LINE_UID
    assert env["identities"]["phone"] == "+886912345678"
    assert env["identities"]["email"] == "mei.chen@example.com"
    p = env["payload"]
    assert p["journey"] == {"id": "j-cart-01", "name": "Cart Abandoned"}
    assert p["step"]["id"] == "step-2"
    assert p["template_id"] == 1042 and p["maac_event_id"] == 507
    assert p["variables"]["image_url"].endswith(".jpg")
    assert p["stale_after_s"] == 7200


def test_journey_camel_case_flat():
    [env] = run("journey", "camel_case_flat")
    assert env["type"] == "journey.browse_abandonment"
    assert env["identities"]["customer_id"] == "C100042"
    assert env["identities"]["phone"] == "+819012345678"
    assert env["payload"]["template_id"] == 1043
    assert env["payload"]["maac_event_name"] == "browse"


def test_annex():
    [env] = run("annex", "points_earned")
    assert env["type"] == "loyalty_action.points_earned"
    assert env["payload"]["points"] == 200
    assert env["payload"]["extra"] == {"order_id": "SO-55"}
    [env] = run("annex", "reward_unlocked")
    assert env["type"] == "loyalty_action.reward_unlocked"
    [env] = run("annex", "subscription_opt_in")
    assert env["type"] == "membership.subscribed"
    assert env["identities"]["phone"] == "+886912345678"
    assert env["payload"]["channel"] == "sms"
    [env] = run("annex", "subscription_opt_out_email_bad_phone")
    assert env["type"] == "membership.unsubscribed"
    assert env["identities"] == {"annex_member_id": "M2", "email": "bob@example.com"}
    assert env["trace"]["rejected_identifiers"] == ["phone: invalid"]
    with pytest.raises(Rejected) as info:
        run("annex", "bad_opt_in_invalid_phone")
    assert (info.value.code, info.value.detail) == ("invalid_value", "phone is not a valid number")


def test_audience():
    [env] = run("audience", "braze_entered")
    assert env["type"] == "audience.entered"
    assert env["identities"]["braze_external_id"] == "C100042"
    assert env["payload"]["audience"] == {"id": "seg-late-delivery", "name": "Late delivery"}
    assert env["payload"]["platform"] == "braze"
    [env] = run("audience", "insider_removed_aliases")
    assert env["type"] == "audience.exited"
    assert env["payload"]["audience"] == {"id": "seg-vip", "name": "VIP"}
    assert env["identities"]["insider_uuid"]
    assert env["occurred_at"] == "2026-11-20T02:11:00.000Z"
    first = run("audience", "no_id_flat")
    assert first == run("audience", "no_id_flat")  # content-derived id is stable


def test_identity_update():
    [env] = run("identity", "crm_update")
    assert env["type"] == "identity.updated"
    ids = env["identities"]
    assert ids["email"] == "mei.chen@example.com" and ids["phone"] == "+886912345678"
    assert ids["loyalty_card"] == "LC-998877"
    assert env["attributes"]["address_city"] == "Taipei"
    assert env["attributes"]["email_optin"] is True and env["attributes"]["sms_optin"] is False
    [env] = run("identity", "camel_invalid_phone")
    assert env["identities"] == {"customer_id": "C100043"}
    assert env["trace"]["rejected_identifiers"] == ["phone: invalid"]


def test_sessionm():
    [env] = run("sessionm", "offer_issued")
    assert env["type"] == "sessionm.offer_issued"
    assert env["identities"]["sessionm_user_id"].startswith("3d2c1b0a")
    assert env["identities"]["customer_id"] == "C100042"
    assert env["payload"]["offer"]["pos_discount_id"] == "D123"
    assert env["payload"]["campaign_id"] == "braze-camp-9"
    assert env["payload"]["broadcast"] is False
    [env] = run("sessionm", "points_awarded")
    assert env["type"] == "sessionm.points_awarded"
    assert env["payload"]["points"] == {"amount": 250, "account_name": "default"}
    assert env["payload"]["canvas_id"] == "braze-canvas-4"
    [env] = run("sessionm", "campaign_broadcast")
    assert env["payload"]["broadcast"] is True and env["identities"] == {}


def test_maac():
    key = "5d1f6c1e-3c0e-4d7b-9a57-3f1c2b9d8e70"
    [env] = run("maac", "first_open", {"cresclab-idempotency-key": key})
    assert env["type"] == "line.opened"
    assert env["event_id"] == event_id_for("maac", key)
    assert env["identities"] == {"line_uid": LINE_UID, "customer_id": "C100042"}
    assert env["payload"] == {"maac_event_id": 507, "message_type": "openapi"}
    [env] = run("maac", "first_open_value_key")
    assert env["event_id"] == event_id_for("maac", "idem-42")
    [a] = run("maac", "first_open_no_key")
    [b] = run("maac", "first_open_no_key")
    assert a["event_id"] == b["event_id"] == event_id_for(
        "maac", f"message.first_open:507:{LINE_UID}")
    [env] = run("maac", "report_clicks")
    assert env["type"] == "line.clicked"
    assert env["payload"]["clicks"] == 33 and env["payload"]["maac_event_id"] == 507
    [env] = run("maac", "line_bound")
    assert env["type"] == "line.bound" and env["identities"]["customer_id"] == "C100042"
    with pytest.raises(Rejected) as info:
        run("maac", "bad_unknown_topic")
    assert info.value.code == "unsupported"


@pytest.mark.parametrize("raw,code", [
    (b"not json", "invalid_json"), (b"", "invalid_json"), (None, "invalid_json"),
    (b"[1, 2]", "not_an_object"), (b'"x"', "not_an_object"), (b"{}", "missing_field"),
])
def test_normalize_bytes_rejections(raw, code):
    for source in SOURCES:
        with pytest.raises(Rejected) as info:
            normalize_bytes(source, raw, {}, SETTINGS)
        assert info.value.code == code


def test_unknown_source():
    with pytest.raises(Rejected) as info:
        normalize_bytes("nope", b"{}", {}, SETTINGS)
    assert info.value.code == "unsupported"


def test_rejection_details_carry_no_personal_data():
    secrets = ("12345", "0912345678", "mei.chen", "C100042", LINE_UID)
    for source in SOURCES:
        for path in (FIXTURES / source).glob("bad_*.json"):
            if path.name.endswith(".headers.json"):
                continue
            with pytest.raises(Rejected) as info:
                normalize_bytes(source, path.read_bytes(), {}, SETTINGS)
            assert not any(s in str(info.value) for s in secrets), path.name
            assert info.value.code in {"invalid_json", "not_an_object", "missing_field",
                                       "invalid_value", "unsupported"}


def test_fixture_headers_files_are_json():
    for path in FIXTURES.glob("*/*.headers.json"):
        assert isinstance(json.loads(path.read_text()), dict)
