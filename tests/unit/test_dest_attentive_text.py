"""Attentive `text`: a template text to an active TEXT subscriber, never for stale actions."""

import pytest

from app.config import DestinationConfig
from app.destinations.attentive import DESTINATION
from app.destinations.base import ItemInvalid, Reply

CONFIG = DestinationConfig("http://attentive.test/v1", "tok", {})
TEXT = DESTINATION.actions["text"]
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
PARAMS = {"template": "You earned {points} points, {name}.",
          "variables": {"points": "$.payload.points", "name": "$.payload.member.first_name"}}


def delivery(params=PARAMS, phone="+14155550100", occurred_at="2027-01-15T07:00:00Z"):
    ids = {"customer_id": "C1", "email": "a@example.com"}
    if phone:
        ids["phone"] = phone
    env = {"event_id": "ev-1", "type": "loyalty_action.points_earned", "source": "annex",
           "occurred_at": occurred_at, "identities": ids, "attributes": {},
           "payload": {"points": 50, "member": {"first_name": "Mei"}}, "trace": {}}
    return {"delivery_id": "d", "action": "text", "params": params, "envelope": env}


def send_with(subscribed: bool, calls: list, status=202):
    async def send(req):
        calls.append(req)
        if req.method == "GET":
            return Reply(200, {}, {"subscriptionEligibilities": [
                {"subscription": {"type": "MARKETING", "channel": "TEXT"},
                 "eligibility": {"isEligible": subscribed}}]})
        return Reply(status, {}, {"messageId": "m"})
    return send


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    monkeypatch.setattr(type(TEXT), "clock", staticmethod(lambda: NOW))


def test_renders_template_into_the_body():
    item = TEXT.prepare(delivery(), CONFIG)
    req = TEXT.request([item], CONFIG)
    assert req.method == "POST" and req.path == "/text/send"
    assert req.json == {"user": {"phone": "+14155550100"}, "text": "You earned 50 points, Mei."}
    assert TEXT.idempotent is False  # it messages a person


@pytest.mark.parametrize("params,phone,reason", [
    ({"template": "Hi {missing}", "variables": {}}, "+14155550100", "template variable 'missing'"),
    ({"template": ""}, "+14155550100", "template missing"),
    ({"template": "Hi {", "variables": {}}, "+14155550100", "malformed"),
    (PARAMS, None, "no phone"),
    (PARAMS, "0912345678", "not E.164"),
])
def test_invalid_items_name_the_reason(params, phone, reason):
    with pytest.raises(ItemInvalid, match=reason):
        TEXT.prepare(delivery(params, phone), CONFIG)


async def test_sends_to_a_subscriber_after_the_check():
    calls = []
    (result,) = await TEXT.perform(send_with(True, calls), [TEXT.prepare(delivery(), CONFIG)],
                                   CONFIG)
    assert result.status == "delivered"
    assert [c.method for c in calls] == ["GET", "POST"]
    assert dict(calls[0].params) == {"phone": "+14155550100"}


async def test_skips_a_non_subscriber():
    calls = []
    (result,) = await TEXT.perform(send_with(False, calls), [TEXT.prepare(delivery(), CONFIG)],
                                   CONFIG)
    assert (result.status, result.reason) == ("skipped", "not_subscribed")
    assert [c.method for c in calls] == ["GET"]


async def test_skips_actions_older_than_12h_without_calls():
    calls = []
    old = TEXT.prepare(delivery(occurred_at="2027-01-14T19:59:00Z"), CONFIG)
    (result,) = await TEXT.perform(send_with(True, calls), [old], CONFIG)
    assert (result.status, result.reason) == ("skipped", "older_than_12h") and calls == []


async def test_failed_check_is_classified():
    async def send(req):
        return Reply(503, {}, None)

    (result,) = await TEXT.perform(send, [TEXT.prepare(delivery(), CONFIG)], CONFIG)
    assert result.status == "retry"
