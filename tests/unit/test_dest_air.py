import json

import pytest

from app.config import DestinationConfig
from app.destinations import air
from app.destinations.base import HttpRequest, ItemInvalid, Reply

CONFIG = DestinationConfig("http://air.test/air", "s3cret", {"client_id": "client-9"})
TRIGGER = air.DESTINATION.actions["trigger"]


def prep(params, ids=None):
    env = {"event_id": "ev-1", "type": "audience.entered", "source": "audience",
           "occurred_at": "2026-11-22T10:00:00.000Z",
           "identities": ids if ids is not None else {
               "customer_id": "C1", "air_identity:CARD": "CARD-77"},
           "attributes": {}, "payload": {"audience_id": "aud-1"}, "trace": {}}
    return TRIGGER.prepare({"delivery_id": "d", "action": "trigger", "params": params,
                            "envelope": env}, CONFIG)


def test_signature_known_vector():
    assert air.air_signature("/services/trigger", b'{"identityValue":"C1"}', "s3cret") == \
        "a496b8641ea0b595578b6174f0c7b39b5323e7153e6d7934002401b8cca8e31c"


def test_sign_uses_relative_path_query_and_client_id():
    body = b'{"identityValue":"C1"}'
    headers = air.sign(CONFIG, HttpRequest("POST", "/services/trigger"), body)
    assert headers == {"X-EES-AUTH-CLIENT-ID": "client-9",
                       "X-EES-AUTH-HASH": air.air_signature("/services/trigger", body, "s3cret")}
    with_query = air.sign(CONFIG, HttpRequest("GET", "/wallet", params={"a": "1"}), b"")
    assert with_query["X-EES-AUTH-HASH"] == air.air_signature("/wallet?a=1", b"", "s3cret")
    assert air.DESTINATION.sign is air.sign


def test_trigger_body():
    item = prep({"reference": "AUDIENCE_LATE_DELIVERY"})
    req = TRIGGER.request([item], CONFIG)
    assert req.method == "POST" and req.path == "/services/trigger"
    assert req.json == {"identityValue": "C1",
                        "triggers": [{"reference": "AUDIENCE_LATE_DELIVERY"}],
                        "walletTransaction": {"reference": "ev-1"}}
    json.dumps(req.json)
    assert air.DESTINATION.limits == {"default": 50}


def test_identity_type_selects_air_identity():
    assert prep({"reference": "R", "identity_type": "card"})["identityValue"] == "CARD-77"
    assert prep({"reference": "R", "identity_type": "EMAIL"})["identityValue"] == "C1"
    assert prep({"reference": "R", "identity_type": "EMAIL"},
                {"customer_id": "C1", "email": "a@b.c"})["identityValue"] == "a@b.c"


def test_identity_fallbacks():
    params = {"reference": "R", "identity_fallbacks": ["braze_external_id"]}
    assert prep(params, {"braze_external_id": "B7", "email": "a@b.c"})["identityValue"] == "B7"
    assert prep(params, {"customer_id": "C1", "braze_external_id": "B7"})["identityValue"] == "C1"
    with pytest.raises(ItemInvalid):
        prep({"reference": "R", "identity_fallbacks": "braze_external_id"}, {"customer_id": "C"})


@pytest.mark.parametrize("params,ids", [({}, None), ({"reference": "R"}, {"email": "a@b.c"})])
def test_trigger_invalid(params, ids):
    with pytest.raises(ItemInvalid):
        prep(params, ids)


@pytest.mark.parametrize("status,expected", [
    (200, "delivered"), (201, "delivered"), (400, "failed"), (404, "failed"), (401, "failed"),
    (403, "retry"), (409, "retry"), (429, "retry"), (500, "retry"), (0, "retry")])
def test_trigger_statuses(status, expected):
    (result,) = TRIGGER.interpret(Reply(status, {}, {"errorCode": "x"}, "timeout" if not status
                                        else ""), [{}])
    assert result.status == expected
    if status == 0:
        assert result.reason == "timeout"
