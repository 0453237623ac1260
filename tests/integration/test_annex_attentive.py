"""Flow 6 through a real worker and the sandbox: Annex Cloud subscription changes and loyalty
actions -> Attentive subscribe (eligibility first), custom events (12 h limit), template texts,
and rejection of invalid phone numbers with a reason."""

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from app.config import load_settings
from app.localstack import produce
from app.normalize.annex import normalize
from tests.integration.conftest import policy_file, wait_until
from tests.integration.test_sessionm_braze import outcomes, read_all

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(start_worker, tmp_path_factory):
    # These tests are about Attentive's own rules (eligibility, 12 h, subscribers only): the
    # relay's screening (tests/integration/test_messaging_safety.py) stays out of their way.
    def edit(policy: dict) -> None:
        policy["caps"] = []
        for channel in policy["channels"].values():
            channel.pop("quiet_hours", None)
        policy["channels"]["sms"]["consent"] = "opt_out"

    return start_worker(SINK_BATCH_WINDOW_S="0.2", RETRY_BASE_S="0.05",
                        MESSAGING_FILE=policy_file(tmp_path_factory, edit))


def phone() -> str:
    return f"+1415555{uuid.uuid4().int % 10000:04d}"


def action(kind: str, member: dict, ago: timedelta = timedelta(0), **fields) -> dict:
    return {"action_id": f"ax-{uuid.uuid4().hex[:10]}", "action_type": kind, "member": member,
            "occurred_at": (datetime.now(UTC) - ago).isoformat(), **fields}


def publish(broker, *docs: dict) -> None:
    asyncio.run(produce(broker.bootstrap, [
        ("loyalty.actions", (d["member"].get("member_id") or "").encode(), orjson.dumps(d))
        for d in docs]))


def event_id(doc: dict) -> str:
    return normalize(doc, {}, load_settings({}))[0]["event_id"]


def attentive_calls(sandbox, endpoint: str) -> list[dict]:
    return [c for c in sandbox.calls("attentive") if c["endpoint"] == endpoint]


def test_subscribe_skipped_for_an_already_subscribed_member(broker, sandbox, worker):
    known, new = phone(), phone()
    creds = sandbox.credentials()
    httpx.post(f"{creds['ATTENTIVE_BASE_URL']}/subscriptions", timeout=10,
               headers={"Authorization": f"Bearer {creds['ATTENTIVE_API_KEY']}"},
               json={"user": {"phone": known}, "signUpSourceId": "1"}).raise_for_status()
    publish(broker, action("subscription_opt_in", {"member_id": "M1", "phone": known}),
            action("subscription_opt_in", {"member_id": "M2", "phone": new}))
    wait_until(lambda: any(c["body"]["user"].get("phone") == new
                           for c in attentive_calls(sandbox, "subscriptions")), 60,
               what="subscribe of the new member")
    skipped = wait_until(lambda: [o for o in outcomes(broker.bootstrap, "attentive", "skipped")
                                  if o.get("reason") == "already_subscribed"], 30)
    assert len(skipped) == 1 and skipped[0]["action"] == "subscribe"
    posts = [c["body"] for c in attentive_calls(sandbox, "subscriptions")]
    assert sum(b["user"].get("phone") == known for b in posts) == 1  # only the test's own setup
    assert sandbox.sandbox.stats()["attentive"]["repeat_subscribe_texts"] == 0
    new_post = next(b for b in posts if b["user"].get("phone") == new)
    assert new_post["signUpSourceId"] == "417302"  # from the routing rule

    publish(broker, action("subscription_opt_out", {"member_id": "M2", "phone": new}))
    wait_until(lambda: any(c["body"]["user"].get("phone") == new
                           for c in attentive_calls(sandbox, "subscriptions/unsubscribe")), 30,
               what="unsubscribe")
    assert sandbox.sandbox.emulator("attentive").subscribed[("TEXT", new)] is False


def test_loyalty_actions_events_texts_and_12h_limit(broker, sandbox, worker):
    subscriber, stranger = phone(), phone()
    sandbox.sandbox.emulator("attentive").subscribed[("TEXT", subscriber)] = True
    fresh = action("points_earned", {"member_id": "M3", "phone": subscriber,
                                     "first_name": "Mei"}, points=100, points_balance=900)
    stale = action("points_earned", {"member_id": "M4", "phone": subscriber},
                   ago=timedelta(hours=13), points=50, points_balance=950)
    unsubscribed = action("points_earned", {"member_id": "M5", "phone": stranger},
                          points=10, points_balance=10)
    unconfigured = action("profile_viewed", {"member_id": "M6", "phone": subscriber})
    publish(broker, fresh, stale, unsubscribed, unconfigured)

    events = wait_until(lambda: (e := [c["body"] for c in attentive_calls(sandbox, "events/custom")
                                       if c["body"]["properties"].get("action_id")
                                       in (fresh["action_id"], unsubscribed["action_id"])])
                        and len(e) == 2 and e, 60, what="custom events")
    mine = next(e for e in events if e["properties"]["action_id"] == fresh["action_id"])
    assert mine["type"] == "points_earned" and mine["externalEventId"] == event_id(fresh)
    assert mine["user"]["phone"] == subscriber
    assert mine["properties"]["points"] == 100 and mine["properties"]["first_name"] == "Mei"

    texts = wait_until(lambda: [c["body"] for c in attentive_calls(sandbox, "text/send")], 30,
                       what="text message")
    assert texts == [{"user": {"phone": subscriber},
                      "text": "You earned 100 points. Your balance is now 900. "
                              "Reply STOP to opt out."}]
    reasons = wait_until(lambda: (r := sorted(o["reason"] for o in outcomes(
        broker.bootstrap, "attentive", "skipped") if event_id(stale) in o["delivery_id"]
        or event_id(unsubscribed) in o["delivery_id"])) and len(r) >= 3 and r, 30)
    assert reasons == ["not_subscribed", "older_than_12h", "older_than_12h"]
    all_events = [c["body"] for c in attentive_calls(sandbox, "events/custom")]
    assert not [e for e in all_events if e["externalEventId"] in (event_id(stale),
                                                                  event_id(unconfigured))]
    assert sandbox.sandbox.stats()["attentive"]["texts_to_unsubscribed"] == 0


def test_invalid_phone_numbers_rejected_with_a_reason(broker, sandbox, worker):
    opt_in = action("subscription_opt_in", {"member_id": "M7", "phone": "12345"})
    earned = action("points_earned", {"member_id": "M8", "phone": "555-not-a-number"},
                    points=5, points_balance=5)
    publish(broker, opt_in, earned)

    def ingress_reason():
        for record in read_all(broker.bootstrap, "ingress.dlq"):
            value = orjson.loads(base64.b64decode(record["value"]))
            if value.get("action_id") == opt_in["action_id"]:
                return record
        return None

    dead = wait_until(ingress_reason, 60, what="ingress.dlq record")
    assert dead["reason_code"] == "invalid_value" and "phone" in dead["reason"]
    assert "12345" not in dead["reason"]

    def delivery_reason():
        return [r for r in read_all(broker.bootstrap, "deliveries.dlq")
                if r["delivery"]["event_id"] == event_id(earned)] or None

    dead_deliveries = wait_until(delivery_reason, 60, what="deliveries.dlq record")
    assert {r["reason"] for r in dead_deliveries} == {"invalid: no phone or e-mail for Attentive"}
    assert not [c for c in sandbox.calls("attentive")
                if (c["body"] or {}).get("properties", {}).get("action_id") == earned["action_id"]]
