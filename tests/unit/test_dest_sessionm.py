import base64

import pytest

from app.config import DestinationConfig
from app.destinations import sessionm
from app.destinations.base import ItemInvalid, Reply

CONFIG = DestinationConfig("http://sm.test/core", "secret", {
    "api_key": "KEY", "connect_url": "http://sm.test/connect", "offers_auth": "b2ZmZXJz",
    "retailer_id": "R-1"})
TAG = sessionm.DESTINATION.actions["tag"]


def envelope(ids):
    return {"event_id": "ev-1", "type": "audience.entered", "source": "audience",
            "occurred_at": "2026-11-22T10:00:00.000Z", "identities": ids,
            "attributes": {}, "payload": {"segment": "vip"}, "trace": {}}


def prep(params, ids=None):
    return TAG.prepare({"delivery_id": "d", "action": "tag", "params": params,
                        "envelope": envelope(ids or {"sessionm_user_id": "sm 1",
                                                     "customer_id": "C1"})}, CONFIG)


def test_auth_and_limit():
    header = sessionm.DESTINATION.auth_headers(CONFIG)["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")) == b"KEY:secret"
    assert sessionm.DESTINATION.limits == {"default": 50}


def test_tag_by_sessionm_user_with_ttl():
    req = TAG.request([prep({"tags": ["vip_$", "$.payload.segment"], "ttl": "86400"})], CONFIG)
    assert req.method == "POST" and req.path == "/priv/v1/apps/KEY/users/sm%201/tags"
    assert req.json == {"tags": ["vip_$", "vip"], "ttl": 86400}


def test_tag_by_external_id_without_ttl():
    req = TAG.request([prep({"tags": "braze_vip"}, {"customer_id": "C/1"})], CONFIG)
    assert req.path == "/priv/v1/apps/KEY/external/users/C%2F1/tags"
    assert req.json == {"tags": ["braze_vip"]}


@pytest.mark.parametrize("params,ids", [
    ({"tags": []}, None), ({}, None), ({"tags": ["a"], "ttl": "soon"}, None),
    ({"tags": ["a"], "ttl": 0}, None), ({"tags": ["a"]}, {"email": "a@example.com"})])
def test_tag_invalid(params, ids):
    with pytest.raises(ItemInvalid):
        prep(params, ids)


@pytest.mark.parametrize("status,expected", [
    (200, "delivered"), (404, "failed"), (422, "failed"), (429, "retry"), (503, "retry")])
def test_tag_statuses(status, expected):
    (result,) = TAG.interpret(Reply(status, {}, None), [{}])
    assert result.status == expected


async def test_get_user_offers():
    seen = []

    async def send(req):
        seen.append(req)
        return Reply(200, {}, {"status": "ok", "payload": {
            "user_id": "u1", "user_offers": [{"offer_id": "o1"}], "available_points": 30}})

    wallet = await sessionm.get_user_offers(send, CONFIG, "u1")
    assert wallet["user_offers"] == [{"offer_id": "o1"}] and wallet["available_points"] == 30
    (req,) = seen
    assert req.path == "http://sm.test/connect/offers/api/2.0/offers/get_user_offers"
    assert req.headers["Authorization"] == "Basic b2ZmZXJz"
    assert req.json["retailer_id"] == "R-1" and req.json["user_id"] == "u1"
    assert req.json["take"] == 1000 and req.json["skip"] == 0


async def test_get_user_offers_failures():
    async def missing(req):
        return Reply(404, {}, None)

    assert (await sessionm.get_user_offers(missing, CONFIG, "u"))["user_offers"] == []

    async def broken(req):
        return Reply(500, {}, None)

    with pytest.raises(sessionm.OffersError) as err:
        await sessionm.get_user_offers(broken, CONFIG, "u")
    assert err.value.result.status == "retry"
