import pytest

from app.config import DestinationConfig
from app.destinations import maac
from app.destinations.base import ItemInvalid, Reply

CONFIG = DestinationConfig("http://maac.test", "tok", {"poll_interval_s": "0", "poll_max": "3"})
PUSH = maac.DESTINATION.actions["push"]
MULTI = maac.DESTINATION.actions["multicast"]
UID = "U" + "0123456789abcdef" * 2
UID2 = "U" + "f" * 32


def envelope(uid=UID, **payload):
    base = {"template_id": 101, "maac_event_id": 55,
            "variables": {"name": "Amy", "coupon": "C-10"}}
    base.update(payload)
    return {"event_id": "ev-1", "type": "journey.cart_abandoned", "source": "journey",
            "occurred_at": "2026-11-22T10:00:00.000Z",
            "identities": {"customer_id": "C1", **({"line_uid": uid} if uid else {})},
            "attributes": {}, "payload": base, "trace": {}}


def delivery(params, env=None, action="push"):
    return {"delivery_id": "d", "action": action, "params": params, "envelope": env or envelope()}


def prep(params, env=None, action=PUSH):
    return action.prepare(delivery(params, env, action.name), CONFIG)


def test_limits():
    assert maac.DESTINATION.limits == {"push": 170, "multicast": 10, "default": 10}
    assert PUSH.limit == "push" and MULTI.limit == "multicast" and MULTI.max_batch == 150
    assert maac.DESTINATION.auth_headers(CONFIG) == {"Authorization": "Bearer tok"}


def test_push_falls_back_to_payload_and_merges_variables():
    item = prep({"variables": {"coupon": "C-20", "points": 5}})
    req = PUSH.request([item], CONFIG)
    assert req.method == "POST" and req.path == "/openapi/v1/direct_message/push/"
    assert req.json == {"template_id": 101, "event_id": 55, "data": {
        "line_uid": UID, "name": "Amy", "coupon": "C-20", "points": "5"}}


def test_push_params_from_paths_like_the_routes():
    item = prep({"template_id": "$.payload.template_id", "event_id": "$.payload.maac_event_id",
                 "variables": "$.payload.variables"})
    assert item["template_id"] == 101 and item["event_id"] == 55
    assert item["data"]["coupon"] == "C-10"


def test_push_without_event_id_omits_it():
    env = envelope()
    del env["payload"]["maac_event_id"]
    req = PUSH.request([prep({}, env)], CONFIG)
    assert "event_id" not in req.json


@pytest.mark.parametrize("env,params", [
    (envelope(template_id=None), {}),
    (envelope(template_id="abc"), {}),
    (envelope(), {"variables": {"hero_image": "https://cdn.test/a.gif"}}),
    (envelope(), {"variables": {"image_url": "not a url"}}),
    (envelope(), {"variables": {"banner": "https://cdn.test/b.webp?x=1"}}),
])
def test_push_invalid(env, params):
    with pytest.raises(ItemInvalid):
        prep(params, env)


@pytest.mark.parametrize("uid,reason", [(None, "no LINE uid"), ("not-a-uid", "LINE uid malformed")])
async def test_no_or_bad_line_uid_is_unreachable_without_a_request(uid, reason):
    calls = []

    async def send(req, *ids):
        calls.append(req)
        return Reply(200, {}, {"id": 1, "result": "success"})

    for action in (PUSH, MULTI):
        item = prep({}, envelope(uid=uid), action)
        (result,) = await action.perform(send, [item], CONFIG)
        assert (result.status, result.reason) == ("unreachable", reason)
        with pytest.raises(ItemInvalid, match="unreachable: "):  # what `relay inspect` shows
            action.request([item], CONFIG)
    assert calls == []


def test_valid_image_variables_pass():
    item = prep({"variables": {"hero_image": "https://cdn.test/A.JPG?w=1",
                               "link": "https://shop.test/cart"}})
    assert item["data"]["hero_image"].endswith("A.JPG?w=1")


@pytest.mark.parametrize("body,status,unanswered", [
    ({"id": 1, "event": 55, "result": "success"}, "delivered", False),
    ({"id": 1, "result": "timeout"}, "retry", True),  # LINE may have delivered it
    ({"id": 1, "result": "error"}, "retry", False),
])
def test_push_results(body, status, unanswered):
    (result,) = PUSH.interpret(Reply(200, {}, body), [{}])
    assert (result.status, result.unanswered) == (status, unanswered)


def test_line_error_reason_from_text_or_object():
    assert maac.line_error_reason('{"message": "Not found"}') == "Not found"
    assert maac.line_error_reason(f"bad {UID}") == "bad <line_uid>"
    assert maac.line_error_reason(None) == "LINE error"


def test_push_line_error_is_unreachable_without_uid():
    body = {"id": 1, "result": {"message": "Failed to send messages", "details": [
        {"message": f"user {UID} blocked the account", "property": "to"}]}}
    (result,) = PUSH.interpret(Reply(200, {}, body), [{}])
    assert result.status == "unreachable"
    assert "Failed to send messages" in result.reason and UID not in result.reason


@pytest.mark.parametrize("status,expected", [(429, "retry"), (400, "failed"), (401, "auth")])
def test_push_http_errors(status, expected):
    (result,) = PUSH.interpret(Reply(status, {}, {"detail": "x"}), [{}])
    assert result.status == expected


async def test_push_with_event_name_uses_topic_cache():
    maac._TOPIC_CACHE.clear()
    env = envelope()
    del env["payload"]["maac_event_id"]
    calls = []

    async def send(req, *ids):
        calls.append((req.method, req.path))
        if req.path == maac.EVENT_PATH and req.method == "GET":
            return Reply(200, {}, {"results": [{"id": 9, "name": "other"}], "next": None})
        if req.path == maac.EVENT_PATH:
            assert req.json == {"name": "cart_abandoned"}
            return Reply(201, {}, {"id": 42, "name": "cart_abandoned"})
        assert req.json["event_id"] == 42
        return Reply(200, {}, {"id": 1, "result": "success"})

    item = prep({"event_name": "cart_abandoned"}, env)
    assert (await PUSH.perform(send, [item], CONFIG))[0].status == "delivered"
    item = prep({"event_name": "cart_abandoned"}, env)
    assert (await PUSH.perform(send, [item], CONFIG))[0].status == "delivered"
    assert [c for c in calls if c[1] == maac.EVENT_PATH] == [
        ("GET", maac.EVENT_PATH), ("POST", maac.EVENT_PATH)]


async def test_ensure_topic_finds_existing_and_reports_failure():
    maac._TOPIC_CACHE.clear()

    async def found(req, *ids):
        return Reply(200, {}, [{"id": 7, "name": "t"}])

    assert await maac.ensure_topic(found, CONFIG, "t") == 7

    async def down(req, *ids):
        return Reply(503, {}, None)

    with pytest.raises(maac.TopicUnavailable) as err:
        await maac.ensure_topic(down, CONFIG, "u")
    assert err.value.result.status == "retry"


def test_multicast_batch_key_and_request():
    d1 = delivery({}, envelope(), "multicast")
    d2 = delivery({}, envelope(UID2, template_id=102), "multicast")
    assert MULTI.batch_key(d1) != MULTI.batch_key(d2)
    assert MULTI.batch_key(d1) == MULTI.batch_key(delivery({}, envelope(UID2), "multicast"))
    items = [prep({}, envelope(), MULTI), prep({}, envelope(UID2), MULTI)]
    req = MULTI.request(items, CONFIG)
    assert req.path == "/openapi/v1/direct_message/multicast/" and req.limit == "multicast"
    assert req.json["template_id"] == 101 and req.json["event_id"] == 55
    assert [d["line_uid"] for d in req.json["data"]] == [UID, UID2]


async def test_multicast_polls_and_maps_fail_info():
    statuses = iter([{"status": "pending"}, {"status": "sending"}, {
        "status": "sent", "result": {"total_count": 2, "fail_count": 1, "fail_info": [
            {"line_uid": UID2, "mark": "C2", "response": {
                "message": "Failed to send messages",
                "details": [{"message": "blocked", "property": "to"}]}}]}}])
    calls = []

    async def send(req, *ids):
        calls.append(req.method)
        if req.method == "POST":
            return Reply(200, {}, {"id": 900, "result": "pending"})
        assert req.path == "/openapi/v1/direct_message/900/"
        return Reply(200, {}, next(statuses))

    items = [prep({}, envelope(), MULTI), prep({}, envelope(UID2), MULTI)]
    results = await MULTI.perform(send, items, CONFIG)
    assert [r.status for r in results] == ["delivered", "unreachable"]
    assert results[1].reason == "Failed to send messages; blocked"
    assert calls == ["POST", "GET", "GET", "GET"]


async def test_multicast_gives_up_polling_without_resending():
    calls = []

    async def send(req, *ids):
        calls.append(req.method)
        if req.method == "POST":
            return Reply(200, {}, {"id": 5, "result": "pending"})
        return Reply(200, {}, {"status": "sending"})

    results = await MULTI.perform(send, [prep({}, envelope(), MULTI)], CONFIG)
    assert results[0].status == "delivered" and results[0].reason == "status_unknown"
    assert calls == ["POST", "GET", "GET", "GET"]


async def test_multicast_rejected_request_classified():
    async def send(req, *ids):
        return Reply(429, {"Retry-After": "2"}, {"detail": "slow down"})

    results = await MULTI.perform(send, [prep({}, envelope(), MULTI)] * 2, CONFIG)
    assert [r.status for r in results] == ["retry", "retry"] and results[0].retry_after_s == 2


def _ok_push(calls):
    async def send(req, *ids):
        calls.append((req, list(ids[0]) if ids else None))
        if req.path == maac.MULTICAST_PATH:
            return Reply(200, {}, {"id": 77, "result": "pending"})
        if req.method == "GET":
            return Reply(200, {}, {"status": "sent", "result": {"fail_info": [
                {"line_uid": UID2, "mark": "x", "response": {"message": "blocked"}}]}})
        return Reply(200, {}, {"id": 1, "result": "success"})
    return send


def _uids(n):
    return [f"U{i:032x}" for i in range(n)]


async def test_push_group_below_threshold_goes_as_single_pushes_traced_per_request():
    calls = []
    items = [PUSH.prepare({**delivery({}, envelope(uid)), "delivery_id": f"d{i}"}, CONFIG)
             for i, uid in enumerate(_uids(3))]
    results = await PUSH.perform(_ok_push(calls), items, CONFIG)
    assert [r.status for r in results] == ["delivered"] * 3
    assert {c[0].path for c in calls} == {maac.PUSH_PATH}
    assert sorted(c[1] for c in calls) == [["d0"], ["d1"], ["d2"]]


async def test_push_group_at_threshold_goes_as_one_multicast_with_per_user_failures():
    config = DestinationConfig("http://maac.test", "tok",
                               {"poll_interval_s": "0", "poll_max": "3", "multicast_min": "4"})
    uids = [*_uids(3), UID2]
    deliveries = [{**delivery({}, envelope(uid)), "delivery_id": f"d{i}"}
                  for i, uid in enumerate(uids)]
    deliveries.append({**delivery({}, envelope(None)), "delivery_id": "nouid"})
    assert len({PUSH.batch_key(d) for d in deliveries[:4]}) == 1
    items = [PUSH.prepare(d, config) for d in deliveries]
    calls = []
    results = await PUSH.perform(_ok_push(calls), items, config)
    assert [r.status for r in results] == ["delivered"] * 3 + ["unreachable", "unreachable"]
    assert results[3].reason == "blocked" and results[4].reason == "no LINE uid"
    posts = [c for c in calls if c[0].method == "POST"]
    assert len(posts) == 1 and posts[0][0].path == maac.MULTICAST_PATH
    assert posts[0][1] == ["d0", "d1", "d2", "d3"]  # the uid-less item is not in the request
    assert maac.RECENT_EVENTS.get(55)


def test_push_batches_by_template_and_event_up_to_150():
    assert PUSH.max_batch == 150
    assert PUSH.batch_key(delivery({}, envelope())) != PUSH.batch_key(
        delivery({}, envelope(template_id=999)))


def test_event_id_of_reads_params_payload_and_topic_cache():
    assert maac.event_id_of(delivery({}, envelope())) == 55
    env = envelope()
    del env["payload"]["maac_event_id"]
    maac._TOPIC_CACHE[("http://maac.test", "cart")] = 12
    assert maac.event_id_of(delivery({"event_name": "cart"}, env), "http://maac.test") == 12
    assert maac.event_id_of(delivery({}, env)) is None


async def test_concurrent_chunks_create_a_named_topic_once():
    import asyncio

    maac._TOPIC_CACHE.clear()
    created = []

    async def send(req, *ids):
        await asyncio.sleep(0)
        if req.path == maac.EVENT_PATH and req.method == "GET":
            return Reply(200, {}, {"results": [{"id": 5, "name": n} for n in created]})
        if req.path == maac.EVENT_PATH:
            created.append(req.json["name"])
            return Reply(201, {}, {"id": 5, "name": req.json["name"]})
        return Reply(200, {}, {"id": 1, "result": "success"})

    ids = await asyncio.gather(*(maac.ensure_topic(send, CONFIG, "spring") for _ in range(3)))
    assert ids == [5, 5, 5] and created == ["spring"]


async def test_topic_created_by_another_worker_is_found_after_a_400():
    maac._TOPIC_CACHE.clear()
    lists = iter([[], [{"id": 8, "name": "t"}]])

    async def send(req, *ids):
        if req.method == "GET":
            return Reply(200, {}, {"results": next(lists)})
        return Reply(400, {}, {"detail": "A message topic with this name already exists"})

    assert await maac.ensure_topic(send, CONFIG, "t") == 8


async def test_topic_limit_reached_is_a_permanent_failure():
    maac._TOPIC_CACHE.clear()

    async def send(req, *ids):
        if req.method == "GET":
            return Reply(200, {}, {"results": []})
        return Reply(400, {}, {"detail": "At most 1000 message topics per account"})

    with pytest.raises(maac.TopicUnavailable) as err:
        await maac.ensure_topic(send, CONFIG, "new")
    assert err.value.result.status == "failed"
