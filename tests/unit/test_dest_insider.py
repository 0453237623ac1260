import pytest

from app.config import DestinationConfig
from app.destinations.base import ItemInvalid, Reply
from app.destinations.insider import DESTINATION

CONFIG = DestinationConfig("http://insider.test", "tok", {"partner": "MyBrand"})
UPSERT = DESTINATION.actions["upsert"]


def envelope(**over):
    env = {"event_id": "ev-1", "type": "line.opened", "source": "maac",
           "occurred_at": "2026-11-22T10:00:00.000Z",
           "identities": {"customer_id": "C1", "email": "a@example.com", "phone": "+886912345678",
                          "insider_uuid": "U-1", "line_uid": "U" + "a" * 32},
           "attributes": {"line_reachable": True}, "payload": {"message_id": 77}, "trace": {}}
    env.update(over)
    return env


def prep(params, env=None):
    return UPSERT.prepare({"delivery_id": "d", "action": "upsert", "params": params,
                           "envelope": env or envelope()}, CONFIG)


def test_headers_and_limit():
    assert DESTINATION.auth_headers(CONFIG)["X-PARTNER-NAME"] == "mybrand"
    assert DESTINATION.auth_headers(CONFIG)["X-REQUEST-TOKEN"] == "tok"
    assert DESTINATION.limits["upsert"] == pytest.approx(25_000 / 60)
    assert UPSERT.max_batch == 1000 and UPSERT.max_bytes <= 5_000_000


def test_identifiers_event_and_attributes():
    item = prep({"event_name": "line_message_opened",
                 "event_params": {"message_id": "$.payload.message_id", "url": "https://x.test"},
                 "attributes": {"line_reachable": "$.attributes.line_reachable",
                                "line_last_opened_at": "$.occurred_at", "language": "zh"}})
    user = item["user"]
    assert user["identifiers"] == {"email": "a@example.com", "phone_number": "+886912345678",
                                   "uuid": "U-1", "custom": {"customer_id": "C1"}}
    assert user["attributes"] == {"language": "zh", "custom": {
        "line_reachable": True, "line_last_opened_at": "2026-11-22T10:00:00.000Z"}}
    (event,) = user["events"]
    assert event["event_name"] == "line_message_opened"
    assert event["timestamp"] == "2026-11-22T10:00:00.000Z"
    assert event["event_params"] == {"url": "https://x.test",
                                     "custom": {"message_id": 77, "event_id": "ev-1"}}
    assert item["size"] > 50
    req = UPSERT.request([item, item], CONFIG)
    assert req.path == "/api/user/v1/upsert" and len(req.json["users"]) == 2


def test_non_e164_phone_is_dropped_from_identifiers():
    env = envelope(identities={"phone": "0912345678", "customer_id": "C1"})
    assert "phone_number" not in prep({"event_name": "x"}, env)["user"]["identifiers"]


@pytest.mark.parametrize("params,ids", [
    ({"event_name": "Bad Name"}, None),
    ({"event_name": "_under"}, None),
    ({}, None),
    ({"attributes": {"a": "$.attributes.nothing"}}, None),
    ({"event_name": "ok"}, {"line_uid": "U" + "a" * 32}),
])
def test_invalid_items(params, ids):
    env = envelope() if ids is None else envelope(identities=ids)
    with pytest.raises(ItemInvalid):
        prep(params, env)


def test_partial_failure_fails_only_named_users():
    items = [{"user": {}, "size": 10}] * 3
    reply = Reply(200, {}, {"data": {"successful": {"count": 1}, "fail": {"count": 2, "errors": {
        "users.0.identifiers.email": ["invalid"], "users.2.events.0.event_name": ["bad"]}}}})
    results = UPSERT.interpret(reply, items)
    assert [r.status for r in results] == ["failed", "delivered", "failed"]
    assert "identifiers.email" in results[0].reason


@pytest.mark.parametrize("status,expected", [
    (403, "auth"), (400, "failed"), (429, "retry"), (500, "retry")])
def test_whole_request_statuses(status, expected):
    results = UPSERT.interpret(Reply(status, {}, {"error": "x"}), [{}, {}])
    assert [r.status for r in results] == [expected, expected]


async def test_perform_splits_by_bytes_and_count():
    sent = []

    async def send(req):
        sent.append(req)
        n = len(req.json["users"])
        return Reply(200, {}, {"data": {"successful": {"count": n}, "fail": {
            "count": 1, "errors": {"users.0.attributes": ["x"]}}}})

    big = UPSERT.max_weight // 3
    items = [{"user": {"i": i}, "size": big} for i in range(5)]
    results = await UPSERT.perform(send, items, CONFIG)
    assert [len(r.json["users"]) for r in sent] == [2, 2, 1]
    # index 0 of each request failed: items 0, 2 and 4
    assert [r.status for r in results] == ["failed", "delivered", "failed", "delivered", "failed"]
    sent.clear()
    await UPSERT.perform(send, [{"user": {}, "size": 5}] * 1500, CONFIG)
    assert [len(r.json["users"]) for r in sent] == [1000, 500]
