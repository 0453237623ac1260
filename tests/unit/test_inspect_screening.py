"""`relay inspect --profile --at`: the screening decision for each planned message."""

from pathlib import Path

import orjson

from app.config import load_settings
from app.inspect import inspect_payload

FIXTURE = Path(__file__).parent.parent / "fixtures" / "journey" / "cart_abandoned.json"


def line_decisions(profile, at, occurred_at=None):
    doc = orjson.loads(FIXTURE.read_bytes())
    doc["occurred_at"] = occurred_at or at
    result, error = inspect_payload(load_settings({}), "journey", orjson.dumps(doc), profile, at)
    assert error is None
    return [d["decision"] for d in result["deliveries"] if d["destination"] == "maac"]


def test_a_line_push_at_night_in_taipei_is_deferred_to_eight_unless_stale_by_then():
    [decision] = line_decisions(None, "2026-11-22T22:30:00Z")  # 06:30 in Taipei
    assert decision["action"] == "defer" and decision["reason"] == "quiet_hours"
    assert decision["until"] == "2026-11-23T00:00:00+00:00"  # 08:00 in Taipei
    # the journey says stale after 2 h: a push due at 23:30 would be 8.5 h old at 08:00
    [decision] = line_decisions(None, "2026-11-22T15:30:00Z")
    assert (decision["action"], decision["reason"]) == ("suppress", "stale_in_quiet_hours")


def test_the_same_push_for_a_customer_who_blocked_the_account_is_suppressed():
    profile = {"c": {"line": {"explicit": ["out", 1795000000, "maac"]}}}
    [decision] = line_decisions(profile, "2026-11-22T03:00:00Z")  # 11:00 in Taipei
    assert (decision["action"], decision["reason"]) == ("suppress", "opted_out")


def test_at_noon_without_history_it_is_sent():
    [decision] = line_decisions({}, "2026-11-22T04:00:00Z")
    assert decision["action"] == "send" and decision["channel"] == "line"


def test_the_zone_comes_from_the_profiles_latest_phone_when_no_country_is_known():
    from app.agents.screen import zone_of
    from app.safety.policy import load_policy

    policy = load_policy(load_settings({}).messaging_file)
    latest_in_japan = {"i": {"phone": {"+886912345678": 100, "+81312345678": 200},
                             "email": {"a@example.com": 300}}}
    assert zone_of(latest_in_japan, policy).key == "Asia/Tokyo"
    assert zone_of({"a": {"country": ["TW"]}, **latest_in_japan}, policy).key == "Asia/Taipei"
    assert zone_of({"i": {}}, policy).key == zone_of(None, policy).key == policy.default_timezone
