import pytest

from app.config import DestinationConfig
from app.destinations.attentive import DESTINATION
from app.destinations.base import ItemInvalid, Reply

CONFIG = DestinationConfig("http://attentive.test/v1", "tok", {"sign_up_source_id": "SRC-CFG"})
A = DESTINATION.actions
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def envelope(ids=None, occurred_at="2027-01-15T07:00:00Z"):
    return {"event_id": "ev-1", "type": "loyalty_action.points_earned", "source": "annex",
            "occurred_at": occurred_at,
            "identities": ids if ids is not None else {
                "customer_id": "C1", "phone": "+14155550100", "email": "a@example.com"},
            "attributes": {"points": 50}, "payload": {"action": "points_earned"}, "trace": {}}


def prep(name, params, env=None):
    return A[name].prepare({"delivery_id": "d", "action": name, "params": params,
                            "envelope": env or envelope()}, CONFIG)


def test_limits_and_batching():
    assert DESTINATION.limits == {"default": 150, "subscribe": 10, "unsubscribe": 5}
    assert all(a.max_batch == 1 for a in A.values())
    assert A["subscribe"].limit == "subscribe" and A["unsubscribe"].limit == "unsubscribe"


@pytest.mark.parametrize("name,params", [
    ("subscribe", {}), ("unsubscribe", {}), ("custom_event", {"type": "x"}),
    ("custom_attributes", {"properties": {"a": 1}})])
def test_phone_must_be_e164(name, params):
    with pytest.raises(ItemInvalid, match="E.164"):
        prep(name, params, envelope({"phone": "0912345678"}))
    with pytest.raises(ItemInvalid):
        prep(name, params, envelope({"customer_id": "C1"}))


def subscribe_send(subscribed, calls, status=202):
    """Eligibility as Attentive (and the sandbox) answer it: isEligible = can be messaged."""
    async def send(req):
        calls.append(req)
        if req.method == "GET":
            return Reply(200, {}, {"subscriptionEligibilities": [
                {"subscription": {"type": "MARKETING", "channel": ch},
                 "eligibility": {"isEligible": ch in subscribed}}
                for ch in ("TEXT", "EMAIL")]})
        return Reply(status, {}, {"subscriptionResponses": [
            {"subscription": {"type": "MARKETING", "channel": "TEXT"},
             "subscriptionCreationStatus": "NEWLY_CREATED"}]})
    return send


async def test_subscribe_checks_eligibility_then_subscribes():
    calls = []
    item = prep("subscribe", {})
    (result,) = await A["subscribe"].perform(subscribe_send(set(), calls), [item], CONFIG)
    assert result.status == "delivered"
    get, post = calls
    assert get.method == "GET" and get.path == "/subscriptions"
    assert dict(get.params) == {"phone": "+14155550100", "email": "a@example.com"}
    assert post.path == "/subscriptions" and post.limit == "subscribe"
    assert post.json == {"user": {"phone": "+14155550100", "email": "a@example.com"},
                         "signUpSourceId": "SRC-CFG",
                         "externalIdentifiers": {"clientUserId": "C1"}}


async def test_subscribe_skips_already_subscribed_without_posting():
    calls = []
    (result,) = await A["subscribe"].perform(subscribe_send({"TEXT", "EMAIL"}, calls),
                                             [prep("subscribe", {})], CONFIG)
    assert (result.status, result.reason) == ("skipped", "already_subscribed")
    assert [c.method for c in calls] == ["GET"]


async def test_subscribe_never_resends_the_subscribed_phone():
    calls = []
    (result,) = await A["subscribe"].perform(subscribe_send({"TEXT"}, calls),
                                             [prep("subscribe", {})], CONFIG)
    assert result.status == "delivered"
    assert calls[1].json["user"] == {"email": "a@example.com"}


async def test_subscribe_channel_param_limits_the_check():
    calls = []
    item = prep("subscribe", {"channel": "text"})
    assert item["body"]["user"] == {"phone": "+14155550100"}
    (result,) = await A["subscribe"].perform(subscribe_send({"TEXT"}, calls), [item], CONFIG)
    assert result.status == "skipped" and len(calls) == 1
    with pytest.raises(ItemInvalid):
        prep("subscribe", {"channel": "PUSH"})
    with pytest.raises(ItemInvalid):
        prep("subscribe", {"channel": "TEXT"}, envelope({"email": "a@example.com"}))


async def test_subscribe_unknown_person_404_still_subscribes():
    calls = []

    async def send(req):
        calls.append(req)
        return Reply(404, {}, None) if req.method == "GET" else Reply(202, {}, {})

    (result,) = await A["subscribe"].perform(send, [prep("subscribe", {})], CONFIG)
    assert result.status == "delivered" and len(calls) == 2


async def test_subscribe_eligibility_failure_is_classified():
    async def send(req):
        return Reply(500, {}, None)

    (result,) = await A["subscribe"].perform(send, [prep("subscribe", {})], CONFIG)
    assert result.status == "retry"


def test_subscribe_source_param_beats_config_and_is_required():
    assert prep("subscribe", {"sign_up_source_id": "P1"})["body"]["signUpSourceId"] == "P1"
    bare = DestinationConfig("http://a.test", "tok")
    with pytest.raises(ItemInvalid):
        A["subscribe"].prepare({"params": {}, "envelope": envelope()}, bare)


def test_unsubscribe_request():
    item = prep("unsubscribe", {"subscriptions": [{"type": "MARKETING", "channel": "TEXT"}]})
    req = A["unsubscribe"].request([item], CONFIG)
    assert req.path == "/subscriptions/unsubscribe" and req.limit == "unsubscribe"
    assert req.json["subscriptions"] == [{"type": "MARKETING", "channel": "TEXT"}]
    with pytest.raises(ItemInvalid):
        prep("unsubscribe", {"subscriptions": [{"type": "MARKETING"}]})


def test_custom_event_body():
    item = prep("custom_event", {"type": "Points Earned",
                                 "properties": {"points": "$.attributes.points"}})
    req = A["custom_event"].request([item], CONFIG)
    assert req.path == "/events/custom"
    assert req.json["type"] == "Points Earned" and req.json["properties"] == {"points": 50}
    assert req.json["externalEventId"] == "ev-1"
    assert req.json["occurredAt"] == "2027-01-15T07:00:00Z"
    assert req.json["user"]["phone"] == "+14155550100"


@pytest.mark.parametrize("bad", ["a,b", "x(y)", "q'", 'd"q', "p|q", "s[1]", "b\\s", "{x}"])
def test_custom_event_type_forbidden_chars(bad):
    with pytest.raises(ItemInvalid):
        prep("custom_event", {"type": bad})


async def test_custom_event_older_than_12h_skipped_without_call(monkeypatch):
    action = A["custom_event"]
    monkeypatch.setattr(action, "clock", lambda: NOW)
    calls = []

    async def send(req):
        calls.append(req)
        return Reply(200, {}, {})

    old = prep("custom_event", {"type": "x"}, envelope(occurred_at="2027-01-14T19:59:00Z"))
    fresh = prep("custom_event", {"type": "x"}, envelope(occurred_at="2027-01-14T20:01:00Z"))
    assert (await action.perform(send, [old], CONFIG))[0].reason == "older_than_12h"
    assert (await action.perform(send, [old], CONFIG))[0].status == "skipped"
    assert calls == []
    assert (await action.perform(send, [fresh], CONFIG))[0].status == "delivered"
    assert len(calls) == 1


def test_custom_attributes():
    item = prep("custom_attributes", {"properties": {"tier": "Gold", "pts": "$.attributes.points"}})
    req = A["custom_attributes"].request([item], CONFIG)
    assert req.path == "/attributes/custom" and req.json["properties"] == {"tier": "Gold", "pts": 50}
    with pytest.raises(ItemInvalid):
        prep("custom_attributes", {"properties": {"nested": {"a": 1}}})
    with pytest.raises(ItemInvalid):
        prep("custom_attributes", {"properties": {}})


@pytest.mark.parametrize("status,expected", [
    (200, "delivered"), (400, "failed"), (401, "auth"), (429, "retry"), (500, "retry")])
def test_statuses(status, expected):
    (result,) = A["custom_event"].interpret(Reply(status, {}, {"error": {"id": "1"}}), [{}])
    assert result.status == expected
