import pytest

from app.config import DestinationConfig
from app.destinations.base import ItemInvalid, Reply, pack
from app.destinations.braze import DESTINATION

CONFIG = DestinationConfig("http://braze.test", "key")
ACTIONS = DESTINATION.actions


def envelope(**over):
    env = {
        "event_id": "ev-1", "type": "loyalty.tier.moved", "source": "air",
        "occurred_at": "2026-11-22T10:00:00.000Z",
        "identities": {"customer_id": "C1", "email": "a@example.com"},
        "attributes": {"tier": "GOLD", "points_balance": 1200, "tier_expiry": "2027-12-31"},
        "payload": {}, "trace": {},
    }
    env.update(over)
    return env


def delivery(action, params, env=None, event_id="ev-1"):
    return {"delivery_id": f"braze:{action}:{event_id}", "destination": "braze", "action": action,
            "event_id": event_id, "params": params, "envelope": env or envelope()}


def prep(action, params, env=None, event_id="ev-1"):
    return ACTIONS[action].prepare(delivery(action, params, env, event_id), CONFIG)


def test_limits_and_auth():
    assert DESTINATION.limits["track"] == 1000
    assert DESTINATION.limits["broadcast"] == pytest.approx(250 / 60)
    assert DESTINATION.limits["trigger"] == pytest.approx(250_000 / 3600)
    assert DESTINATION.auth_headers(CONFIG) == {"Authorization": "Bearer key"}


def test_track_attributes_maps_paths_and_drops_missing():
    item = prep("track_attributes", {"attributes": {
        "loyalty_tier": "$.attributes.tier", "points": "$.attributes.points_balance",
        "gone": "$.attributes.nope", "programme": "ee"}})
    (obj,) = item["objects"]
    assert obj == {"external_id": "C1", "loyalty_tier": "GOLD", "points": 1200, "programme": "ee"}
    req = ACTIONS["track_attributes"].request([item], CONFIG)
    assert req.method == "POST" and req.path == "/users/track" and req.limit == "track"
    assert req.json == {"attributes": [obj]}


def test_user_identifier_priority_and_fallbacks():
    env = envelope(identities={"braze_external_id": "B9", "customer_id": "C1"})
    assert prep("track_attributes", {"attributes": {"a": 1}}, env)["objects"][0]["external_id"] == "B9"
    env = envelope(identities={"email": "x@example.com", "phone": "+886912345678"})
    assert prep("track_attributes", {"attributes": {"a": 1}}, env)["objects"][0]["email"] == \
        "x@example.com"
    env = envelope(identities={"phone": "+886912345678"})
    assert prep("track_attributes", {"attributes": {"a": 1}}, env)["objects"][0]["phone"] == \
        "+886912345678"
    with pytest.raises(ItemInvalid):
        prep("track_attributes", {"attributes": {"a": 1}}, envelope(identities={}))


def test_track_attributes_without_values_is_invalid():
    with pytest.raises(ItemInvalid):
        prep("track_attributes", {"attributes": {"x": "$.attributes.missing"}})


def test_track_event_has_time_and_event_id():
    item = prep("track_event", {"name": "tier_moved", "properties": {"tier": "$.attributes.tier"}})
    (obj,) = item["objects"]
    assert obj["name"] == "tier_moved" and obj["time"] == "2026-11-22T10:00:00.000Z"
    assert obj["properties"] == {"tier": "GOLD", "event_id": "ev-1"}
    with pytest.raises(ItemInvalid):
        prep("track_event", {})


def basket_env(lines):
    return envelope(type="pos.transaction.settled", payload={"basket": lines, "currency": "GBP"})


def test_track_purchase_one_object_per_line_and_quantity_split():
    env = basket_env([{"upc": "111", "itemUnitCost": 250, "itemUnitCount": 2},
                      {"upc": "222", "itemUnitCost": 100, "itemUnitCount": 250}])
    item = prep("track_purchase", {"currency": "$.payload.currency", "price_divisor": 100}, env)
    objs = item["objects"]
    assert [(o["product_id"], o["quantity"]) for o in objs] == [
        ("111", 2), ("222", 100), ("222", 100), ("222", 50)]
    assert all(o["currency"] == "GBP" and o["time"] == env["occurred_at"] for o in objs)
    assert objs[0]["price"] == 2.5 and objs[0]["properties"]["event_id"] == "ev-1"
    assert all(o["quantity"] <= 100 for o in objs)


def test_track_purchase_configurable_fields_and_path():
    env = envelope(payload={"order": {"items": [{"sku": "S", "amount": 9.5, "n": 3}]}})
    item = prep("track_purchase", {"currency": "usd", "lines_path": "$.payload.order.items",
                                    "product_id_field": "sku", "price_field": "amount",
                                    "quantity_field": "n"}, env)
    (obj,) = item["objects"]
    assert (obj["product_id"], obj["price"], obj["quantity"], obj["currency"]) == (
        "S", 9.5, 3, "USD")


@pytest.mark.parametrize("env,params", [
    (basket_env([]), {"currency": "GBP"}),
    (basket_env([{"upc": "1"}]), {"currency": "GBP"}),
    (basket_env([{"upc": "1", "price": "x"}]), {"currency": "GBP"}),
    (basket_env([{"upc": "1", "price": 1}]), {}),
    (basket_env([{"upc": "1", "price": 1, "quantity": 7600}]), {"currency": "GBP"}),
])
def test_track_purchase_invalid(env, params):
    with pytest.raises(ItemInvalid):
        prep("track_purchase", params, env)


def test_pack_respects_object_and_count_caps():
    items = [{"objects": [0] * n} for n in (40, 30, 10, 75, 1)]
    chunks = pack(items, lambda i: len(i["objects"]), 75, 75)
    assert [[len(i["objects"]) for i in c] for c in chunks] == [[40, 30], [10], [75], [1]]
    assert len(pack([{"objects": [0]}] * 80, lambda i: 1, 75, 75)) == 2


async def test_purchase_perform_splits_requests_and_maps_partial_errors():
    action = ACTIONS["track_purchase"]
    items = [{"objects": [{"n": i, "k": k} for k in range(n)]} for i, n in enumerate((50, 20, 30))]
    sent = []

    async def send(req):
        sent.append(req)
        if len(sent) == 1:  # objects 0-49 item 0, 50-69 item 1; error on object 55 -> item 1
            return Reply(200, {}, {"message": "success", "errors": [
                {"type": "bad", "input_array": "purchases", "index": 55}]})
        return Reply(202, {}, {"message": "queued"})

    results = await action.perform(send, items, CONFIG)
    assert [len(r.json["purchases"]) for r in sent] == [70, 30]
    assert [r.status for r in results] == ["delivered", "failed", "delivered"]


def test_track_partial_errors_only_fail_indexed_items():
    action = ACTIONS["track_event"]
    items = [{"objects": [{"i": i}]} for i in range(4)]
    reply = Reply(200, {}, {"message": "success", "errors": [
        {"type": "invalid", "input_array": "events", "index": 2},
        {"type": "invalid", "input_array": "attributes", "index": 0}]})
    assert [r.status for r in action.interpret(reply, items)] == [
        "delivered", "delivered", "failed", "delivered"]


def test_attributes_events_and_purchases_share_a_request_with_75_objects_per_array():
    """One /users/track request carries all three arrays; a batch used to take three."""
    attributes, event, purchase = (ACTIONS[n] for n in (
        "track_attributes", "track_event", "track_purchase"))
    assert attributes.shares == event.shares == purchase.shares
    pairs = ([({"n": f"e{i}"}, {"array": "events", "objects": [{"e": i}]}) for i in range(70)]
             + [({"n": "a0"}, {"array": "attributes", "objects": [{"a": 0}]})]
             + [({"n": "p0"}, {"array": "purchases", "objects": [{"p": k} for k in range(40)]})]
             + [({"n": f"e{i}"}, {"array": "events", "objects": [{"e": i}]}) for i in range(70, 76)])
    chunks = event.pack_requests(pairs)
    # consecutive (order kept), cut where an array would pass 75; attributes first in each
    assert [[d["n"] for d, _ in c][:2] for c in chunks] == [["a0", "e0"], ["e75"]]
    assert [len(c) for c in chunks] == [77, 1]
    request = event.request([item for _, item in chunks[0]], CONFIG)
    assert {k: len(v) for k, v in request.json.items()} == {
        "attributes": 1, "events": 75, "purchases": 40}
    items = [item for _, item in chunks[0]]
    reply = Reply(200, {}, {"message": "success", "errors": [
        {"type": "bad", "input_array": "events", "index": 3},
        {"type": "bad", "input_array": "purchases", "index": 39},
        {"type": "odd", "index": 0}]})  # no array named: index 0 of every array fails
    failed = [i for i, r in enumerate(event.interpret(reply, items)) if r.status == "failed"]
    # item 0: attributes[0]; 1: events[0]; 4: events[3]; 76: the purchase (objects 0-39)
    assert failed == [0, 1, 4, 76]


@pytest.mark.parametrize("status,expected", [
    (202, "delivered"), (400, "failed"), (401, "auth"), (429, "retry"), (503, "retry")])
def test_track_whole_request_statuses(status, expected):
    results = ACTIONS["track_event"].interpret(Reply(status, {}, {"message": "x"}),
                                               [{"objects": [{}]}] * 2)
    assert [r.status for r in results] == [expected] * 2


def test_rate_limit_reset_header_becomes_retry_after():
    reply = Reply(429, {"X-RateLimit-Reset": "7"}, {"message": "rate"})
    (result,) = ACTIONS["track_event"].interpret(reply, [{"objects": [{}]}])
    assert result.status == "retry" and result.retry_after_s == 7


def trigger_env(**payload):
    return envelope(type="sessionm.offer_issued", payload=payload)


def test_campaign_trigger_batches_recipients_by_campaign():
    action = ACTIONS["campaign_trigger"]
    params = {"campaign_id": "camp-1", "properties": {"offer_id": "$.payload.offer_id"}}
    d1 = delivery("campaign_trigger", params, trigger_env(offer_id="O1"), "e1")
    d2 = delivery("campaign_trigger", {**params, "campaign_id": "camp-2"}, trigger_env(), "e2")
    assert action.batch_key(d1) != action.batch_key(d2)
    assert action.max_batch == 50 and action.limit == "trigger"
    items = [action.prepare(d1, CONFIG), action.prepare(d1, CONFIG)]
    req = action.request(items, CONFIG)
    assert req.path == "/campaigns/trigger/send" and req.limit == "trigger"
    assert req.json["campaign_id"] == "camp-1" and "broadcast" not in req.json
    assert req.json["recipients"][0] == {"external_user_id": "C1",
                                         "trigger_properties": {"offer_id": "O1"}}


def test_broadcast_travels_alone_in_broadcast_bucket():
    action = ACTIONS["campaign_trigger"]
    d1 = delivery("campaign_trigger", {"campaign_id": "c"}, trigger_env(broadcast=True), "e1")
    d2 = delivery("campaign_trigger", {"campaign_id": "c", "broadcast": True}, trigger_env(), "e2")
    d3 = delivery("campaign_trigger", {"campaign_id": "c"}, trigger_env(), "e3")
    keys = {action.batch_key(d) for d in (d1, d2, d3)}
    assert len(keys) == 3
    req = action.request([action.prepare(d1, CONFIG)], CONFIG)
    assert req.json == {"campaign_id": "c", "broadcast": True} and req.limit == "broadcast"
    with pytest.raises(ValueError):
        action.request([action.prepare(d1, CONFIG), action.prepare(d2, CONFIG)], CONFIG)


def test_trigger_needs_external_id_and_target():
    env = trigger_env()
    env["identities"] = {"email": "a@example.com"}
    with pytest.raises(ItemInvalid):
        prep("campaign_trigger", {"campaign_id": "c"}, env)
    with pytest.raises(ItemInvalid):
        prep("campaign_trigger", {})


def test_canvas_trigger_entry_properties_and_size_cap():
    item = prep("canvas_trigger", {"canvas_id": "cv", "properties": {"points": 5}})
    req = ACTIONS["canvas_trigger"].request([item], CONFIG)
    assert req.path == "/canvas/trigger/send"
    assert req.json["recipients"][0]["canvas_entry_properties"] == {"points": 5}
    big = envelope(payload={"blob": "x" * 52_000})
    with pytest.raises(ItemInvalid):
        prep("canvas_trigger", {"canvas_id": "cv", "properties": {"b": "$.payload.blob"}}, big)


def test_trigger_queued_counts_as_delivered():
    (result,) = ACTIONS["canvas_trigger"].interpret(Reply(202, {}, {"message": "queued"}), [{}])
    assert result.status == "delivered"
