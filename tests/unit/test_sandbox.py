"""The sandbox emulators, exercised over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid

import httpx
import orjson
import pytest
from aiohttp import web

from app.sandbox import Sandbox
from app.sandbox.air import air_signature
from app.sandbox.maac import sign_webhook

UID = "U" + "a" * 32
BLOCKED = "Ublocked" + "b" * 25
NOW = "2026-11-22T10:00:00Z"


@pytest.fixture
async def sandbox():
    sb = Sandbox(seed=7)
    await sb.start()
    yield sb
    await sb.stop()


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=5) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_credentials_point_at_prefixes(sandbox):
    creds = sandbox.credentials()
    assert creds["ATTENTIVE_BASE_URL"] == f"{sandbox.url}/attentive/v1"
    assert creds["AIR_WALLET_URL"] == f"{sandbox.url}/air"
    assert creds["INSIDER_PARTNER"] == creds["INSIDER_PARTNER"].lower()
    assert sandbox.port > 0


async def test_auth_rejected(sandbox, client):
    creds = sandbox.credentials()
    r = await client.post(f"{creds['BRAZE_BASE_URL']}/users/track", headers=bearer("wrong"),
                          json={"attributes": [{"external_id": "x", "tier": "gold"}]})
    assert r.status_code == 401
    r = await client.post(f"{creds['MAAC_BASE_URL']}/openapi/v1/direct_message/push/",
                          json={"template_id": 1, "data": {"line_uid": UID}})
    assert r.status_code == 401
    upper = {"X-PARTNER-NAME": creds["INSIDER_PARTNER"].upper(),
             "X-REQUEST-TOKEN": creds["INSIDER_TOKEN"]}
    r = await client.post(f"{creds['INSIDER_BASE_URL']}/api/user/v1/upsert", headers=upper,
                          json={"users": []})
    assert r.status_code == 403
    assert sandbox.calls() == []
    assert sandbox.stats()["braze"]["requests"] == {"401": 1}


async def test_braze_partial_errors(sandbox, client):
    creds = sandbox.credentials()
    body = {
        "attributes": [{"external_id": "a", "tier": "gold"}],
        "events": [{"external_id": "a", "name": "tier_up", "time": NOW},
                   {"external_id": "b", "time": NOW},
                   {"external_id": "c", "name": "no_time"}],
        "purchases": [{"external_id": "a", "product_id": "p", "currency": "TWD", "price": 1,
                       "time": NOW, "quantity": 101}],
    }
    r = await client.post(f"{creds['BRAZE_BASE_URL']}/users/track",
                          headers=bearer(creds["BRAZE_API_KEY"]), json=body)
    assert r.status_code == 200
    data = r.json()
    assert data["message"] == "success"
    assert data["events_processed"] == 1 and data["attributes_processed"] == 1
    assert [(e["input_array"], e["index"]) for e in data["errors"]] == [
        ("events", 1), ("events", 2), ("purchases", 0)]
    assert all(isinstance(e["type"], str) and e["type"] for e in data["errors"])
    assert r.headers["X-RateLimit-Limit"] == "3000"


async def test_braze_whole_request_errors(sandbox, client):
    creds = sandbox.credentials()
    url, auth = creds["BRAZE_BASE_URL"], bearer(creds["BRAZE_API_KEY"])
    many = [{"external_id": str(i), "k": i} for i in range(76)]
    r = await client.post(f"{url}/users/track", headers=auth, json={"attributes": many})
    assert r.status_code == 400 and r.json()["message"] == "Max Input Length Exceeded"
    both = {"campaign_id": "c1", "broadcast": True, "recipients": [{"external_user_id": "a"}]}
    r = await client.post(f"{url}/campaigns/trigger/send", headers=auth, json=both)
    assert r.status_code == 400
    r = await client.post(f"{url}/canvas/trigger/send", headers=auth, json={
        "canvas_id": "v1", "recipients": [{"external_user_id": str(i)} for i in range(51)]})
    assert r.status_code == 400
    r = await client.post(f"{url}/campaigns/trigger/send", headers=auth, json={
        "campaign_id": "c1", "recipients": [{"external_user_id": "a",
                                             "trigger_properties": {"offer": "x"}}]})
    assert r.status_code == 201 and r.json()["message"] == "success" and r.json()["dispatch_id"]


async def test_insider_fail_shape(sandbox, client):
    creds = sandbox.credentials()
    headers = {"X-PARTNER-NAME": creds["INSIDER_PARTNER"], "X-REQUEST-TOKEN": creds["INSIDER_TOKEN"]}
    users = [
        {"identifiers": {"uuid": "u1"}, "events": [{"event_name": "line_opened", "timestamp": NOW}]},
        {"identifiers": {"phone_number": "0912345678"}, "attributes": {"sms_optin": True}},
        {"identifiers": {"uuid": "u3"}, "events": [{"event_name": "Bad Name", "timestamp": NOW}]},
    ]
    r = await client.post(f"{creds['INSIDER_BASE_URL']}/api/user/v1/upsert", headers=headers,
                          json={"users": users})
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["successful"]["count"] == 1
    assert data["fail"]["count"] == 2
    assert set(data["fail"]["errors"]) == {"users.1.identifiers.phone_number",
                                           "users.2.events.0.event_name"}
    r = await client.post(f"{creds['INSIDER_BASE_URL']}/api/user/v1/upsert", headers=headers,
                          json={"users": [users[0]] * 1001})
    assert r.status_code == 400 and "error" in r.json()


async def test_maac_push_blocked_and_validation(sandbox, client):
    creds = sandbox.credentials()
    url = f"{creds['MAAC_BASE_URL']}/openapi/v1/direct_message/push/"
    auth = bearer(creds["MAAC_TOKEN"])
    r = await client.post(url, headers=auth, json={"template_id": 5, "data": {"line_uid": UID}})
    assert r.status_code == 200 and r.json()["result"] == "success"
    r = await client.post(url, headers=auth, json={"template_id": 5, "data": {"line_uid": BLOCKED}})
    result = r.json()["result"]
    assert r.status_code == 200 and result["message"] and result["details"]
    bad = [
        {"template_id": "5", "data": {"line_uid": UID}},
        {"template_id": 5, "data": {"line_uid": UID[:-1]}},
        {"template_id": 5, "data": {"line_uid": UID, "hero_image": "https://x.test/a.gif"}},
    ]
    for body in bad:
        r = await client.post(url, headers=auth, json=body)
        assert r.status_code == 400 and "detail" in r.json()
    ok = {"template_id": 5, "data": {"line_uid": UID, "hero_image": "https://x.test/a.png"}}
    assert (await client.post(url, headers=auth, json=ok)).status_code == 200
    stats = sandbox.stats()["maac"]
    assert stats["accepted_items"] == 2 and stats["rejected_items"] == 1


async def test_maac_multicast_pending_then_sent():
    async with Sandbox(multicast_delay_s=0.1) as sb, httpx.AsyncClient() as client:
        creds = sb.credentials()
        base, auth = f"{creds['MAAC_BASE_URL']}/openapi/v1", bearer(creds["MAAC_TOKEN"])
        users = [{"line_uid": UID, "name": "A"}, {"line_uid": BLOCKED, "customer_id": "c2"}]
        r = await client.post(f"{base}/direct_message/multicast/", headers=auth,
                              json={"template_id": 3, "data": users})
        assert r.json()["result"] == "pending"
        job = r.json()["id"]
        first = (await client.get(f"{base}/direct_message/{job}/", headers=auth)).json()
        assert first["status"] == "pending"
        await asyncio.sleep(0.15)
        done = (await client.get(f"{base}/direct_message/{job}/", headers=auth)).json()
        assert done["status"] == "sent"
        assert done["result"]["total_count"] == 2 and done["result"]["fail_count"] == 1
        assert done["result"]["fail_info"][0]["line_uid"] == BLOCKED
        r = await client.post(f"{base}/direct_message/multicast/", headers=auth,
                              json={"template_id": 3, "data": users * 76})
        assert r.status_code == 400


async def test_line_retry_key_conflict(sandbox, client):
    creds = sandbox.credentials()
    url = f"{creds['LINE_BASE_URL']}/v2/bot/message/push"
    headers = {**bearer(creds["LINE_CHANNEL_TOKEN"]), "X-Line-Retry-Key": str(uuid.uuid4())}
    body = {"to": UID, "messages": [{"type": "text", "text": "hi"}]}
    first = await client.post(url, headers=headers, json=body)
    assert first.status_code == 200 and len(first.json()["sentMessages"]) == 1
    again = await client.post(url, headers=headers, json=body)
    assert again.status_code == 409
    assert again.headers["x-line-accepted-request-id"] == first.headers["x-line-request-id"]
    r = await client.post(url, headers={**headers, "X-Line-Retry-Key": "not-a-uuid"}, json=body)
    assert r.status_code == 400
    assert sandbox.stats()["line"]["accepted_calls"] == 1


async def test_rate_limit_429_with_headers():
    async with Sandbox(rate_scale=0.001) as sb, httpx.AsyncClient() as client:
        creds = sb.credentials()
        url, auth = f"{creds['BRAZE_BASE_URL']}/users/track", bearer(creds["BRAZE_API_KEY"])
        body = {"attributes": [{"external_id": "a", "tier": "gold"}]}
        codes = [(await client.post(url, headers=auth, json=body)) for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        limited = codes[-1]
        assert limited.headers["X-RateLimit-Limit"] == "3"
        assert limited.headers["X-RateLimit-Remaining"] == "0"
        assert int(limited.headers["X-RateLimit-Reset"]) > 1e9
        att = f"{creds['ATTENTIVE_BASE_URL']}/subscriptions"
        sub = {"user": {"phone": "+886912345678"}, "signUpSourceId": "1"}
        a_auth = bearer(creds["ATTENTIVE_API_KEY"])
        first = await client.post(att, headers=a_auth, json=sub)
        second = await client.post(att, headers=a_auth, json=sub)
        assert first.status_code == 202 and second.status_code == 429
        assert second.headers["x-ratelimit-limit"] == "1"
        assert second.json()["error"]["message"]
        rates = sb.stats()["braze"]["rates"]["users/track"]
        assert rates["max_observed"] == 4 and rates["limit"] == 3 and rates["exceeded"]


async def test_fault_injection(sandbox, client):
    creds = sandbox.credentials()
    url, auth = f"{creds['BRAZE_BASE_URL']}/users/track", bearer(creds["BRAZE_API_KEY"])
    body = {"attributes": [{"external_id": "a", "tier": "gold"}], "_relay_ids": ["d1"]}
    r = await client.post(f"{sandbox.url}/_sandbox/faults", json={
        "destination": "braze", "error_rate": 1.0, "statuses": [503]})
    assert r.status_code == 200
    r = await client.post(url, headers=auth, json=body)
    assert r.status_code == 503
    assert sandbox.accepted_ids() == {} and sandbox.calls("braze") == []
    other = await client.post(f"{creds['INSIDER_BASE_URL']}/api/user/v1/upsert", headers={
        "X-PARTNER-NAME": creds["INSIDER_PARTNER"], "X-REQUEST-TOKEN": creds["INSIDER_TOKEN"]},
        json={"users": [{"identifiers": {"uuid": "u"}, "attributes": {"name": "n"}}]})
    assert other.status_code == 200  # faults are per destination
    assert (await client.delete(f"{sandbox.url}/_sandbox/faults")).status_code == 204
    assert (await client.post(url, headers=auth, json=body)).status_code == 200
    sandbox.set_faults("maac", outage_s=5)
    r = await client.post(f"{creds['MAAC_BASE_URL']}/openapi/v1/direct_message/push/",
                          headers=bearer(creds["MAAC_TOKEN"]),
                          json={"template_id": 1, "data": {"line_uid": UID}})
    assert r.status_code == 503
    sandbox.set_faults("*", timeout_rate=1.0, timeout_s=0.5)
    with pytest.raises(httpx.ReadTimeout):
        await client.post(url, headers=auth, json=body, timeout=0.1)
    stats = sandbox.stats()["braze"]["requests"]
    assert stats["503"] == 1 and stats["200"] == 1 and stats["timeout"] == 1
    bad = await client.post(f"{sandbox.url}/_sandbox/faults", json={"error_rate": 2})
    assert bad.status_code == 400
    sandbox.set_faults("attentive", error_rate=1.0, statuses=[429])
    r = await client.post(f"{creds['ATTENTIVE_BASE_URL']}/subscriptions",
                          headers=bearer(creds["ATTENTIVE_API_KEY"]), json={})
    assert r.status_code == 429 and r.headers["x-ratelimit-remaining"] == "0"


async def test_faults_are_reproducible_with_a_seed():
    async def run() -> list[int]:
        async with Sandbox(seed=42) as sb, httpx.AsyncClient() as client:
            sb.set_faults("braze", error_rate=0.5, statuses=[429, 500, 503])
            creds = sb.credentials()
            out = []
            for _ in range(12):
                r = await client.post(f"{creds['BRAZE_BASE_URL']}/users/track",
                                      headers=bearer(creds["BRAZE_API_KEY"]),
                                      json={"attributes": [{"external_id": "a", "x": 1}]})
                out.append(r.status_code)
            return out

    first, second = await run(), await run()
    assert first == second
    assert 200 in first and any(code >= 429 for code in first)


async def test_relay_ids_duplicate_counting(sandbox, client):
    creds = sandbox.credentials()
    url, auth = f"{creds['BRAZE_BASE_URL']}/users/track", bearer(creds["BRAZE_API_KEY"])
    body = {"events": [{"external_id": "a", "name": "e", "time": NOW},
                       {"external_id": "b", "time": NOW}],
            "_relay_ids": ["braze:track:1", "braze:track:2"]}
    for _ in range(2):
        r = await client.post(url, headers=auth, json=body)
        assert r.status_code == 200
    assert sandbox.accepted_ids() == {"braze:track:1": 2}
    assert sandbox.stats()["braze"]["duplicates"] == 1
    call = sandbox.calls("braze")[0]
    assert "_relay_ids" not in call["body"] and call["relay_ids"] == body["_relay_ids"]
    remote = (await client.get(f"{sandbox.url}/_sandbox/stats")).json()
    assert remote["braze"]["duplicates"] == 1
    listed = (await client.get(f"{sandbox.url}/_sandbox/calls",
                               params={"destination": "braze"})).json()
    assert len(listed) == 2 and listed[0]["endpoint"] == "users/track"
    assert (await client.delete(f"{sandbox.url}/_sandbox/calls")).status_code == 204
    assert sandbox.calls() == [] and sandbox.stats()["braze"]["duplicates"] == 0


async def test_maac_webhook_signed_retried_and_reported():
    received: list[tuple[bytes, dict]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), dict(request.headers)))
        return web.Response(status=500 if len(received) == 1 else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        sb = Sandbox(webhook_url=f"http://127.0.0.1:{port}/hook", webhook_secret="s3cret",
                     open_share=1.0, webhook_delay_s=0.05, webhook_retry_delays=(0.05, 0.1))
        async with sb, httpx.AsyncClient() as client:
            creds = sb.credentials()
            r = await client.post(
                f"{creds['MAAC_BASE_URL']}/openapi/v1/direct_message/push/",
                headers=bearer(creds["MAAC_TOKEN"]),
                json={"template_id": 9, "event_id": 77,
                      "data": {"line_uid": UID, "customer_id": "cust-1"}})
            assert r.json()["result"] == "success"
            await sb.drain(timeout=3)
            assert len(received) == 2
            (body1, h1), (body2, h2) = received
            assert body1 == body2
            assert h1["CrescLab-Idempotency-Key"] == h2["CrescLab-Idempotency-Key"]
            expected = hmac.new(b"s3cret", body2, hashlib.sha256).hexdigest()
            assert h2["CrescLab-Signature"] == expected == sign_webhook(body2, "s3cret")
            event = orjson.loads(body2)
            assert event["topic"] == "message.first_open"
            assert event["data"] == {"message_type": "openapi", "message_id": 77,
                                     "line_uid": UID, "customer_id": "cust-1"}
            assert event["timestamp"] > 1_700_000_000_000
            report = (await client.get(f"{creds['MAAC_BASE_URL']}/openapi/v1/event/77/report/",
                                       headers=bearer(creds["MAAC_TOKEN"]))).json()
            assert report["opens"] == 1 and report["sent"] == 1
            assert report["clicks"] >= report["unique_clicks"] and report["unique_clicks"] <= 1
            assert sb.stats()["maac"]["webhooks"]["delivered"] == 1
    finally:
        await runner.cleanup()


async def test_open_share_selects_stable_subset():
    async with Sandbox(open_share=0.5, webhook_delay_s=0) as sb, httpx.AsyncClient() as client:
        creds = sb.credentials()
        url = f"{creds['MAAC_BASE_URL']}/openapi/v1/direct_message/push/"
        uids = [f"U{i:032d}" for i in range(40)]
        for uid in uids:
            await client.post(url, headers=bearer(creds["MAAC_TOKEN"]),
                              json={"template_id": 1, "event_id": 5, "data": {"line_uid": uid}})
        report = (await client.get(f"{creds['MAAC_BASE_URL']}/openapi/v1/event/5/report/",
                                   headers=bearer(creds["MAAC_TOKEN"]))).json()
        assert report["sent"] == 40 and 8 <= report["opens"] <= 32


async def test_air_signature_and_outbound():
    events: list[dict] = []

    async def outbound(doc: dict) -> None:
        events.append(doc)

    async with Sandbox(air_outbound=outbound, seed=3) as sb, httpx.AsyncClient() as client:
        creds = sb.credentials()
        body = orjson.dumps({"identityValue": "cust-9", "triggers": [{"reference": "late"}],
                             "walletTransaction": {"reference": "evt-1"}, "_relay_ids": ["a1"]})

        def headers(sig: str) -> dict[str, str]:
            return {"X-EES-AUTH-CLIENT-ID": creds["AIR_CLIENT_ID"], "X-EES-AUTH-HASH": sig,
                    "Content-Type": "application/json"}

        url = f"{creds['AIR_WALLET_URL']}/services/trigger"
        good = air_signature("/services/trigger", body, creds["AIR_SECRET"])
        assert good == hashlib.sha256(b"/services/trigger" + body
                                      + creds["AIR_SECRET"].encode()).hexdigest()
        wrong = air_signature("/air/services/trigger", body, creds["AIR_SECRET"])
        assert (await client.post(url, headers=headers(wrong), content=body)).status_code == 401
        r = await client.post(url, headers=headers(good), content=body)
        assert r.status_code == 200
        tx = r.json()
        assert tx["reference"] == "evt-1" and tx["walletId"] and tx["walletTransactionId"]
        repeat = await client.post(url, headers=headers(good), content=body)
        assert repeat.json() == tx
        unknown = orjson.dumps({"identityValue": "unknown-1", "triggers": [{"reference": "x"}]})
        r = await client.post(url, content=unknown, headers=headers(
            air_signature("/services/trigger", unknown, creds["AIR_SECRET"])))
        assert r.status_code == 404
        await sb.drain(timeout=2)
        assert len(events) == 1
        doc = events[0]
        assert doc["headers"]["eventName"] == "SERVICE.TRIGGER"
        assert "+" not in doc["headers"]["eventDate"] and "Z" not in doc["headers"]["eventDate"]
        uuid.UUID(doc["headers"]["eesEventId"])
        ops = doc["atomicOperations"]
        assert any(o["objectType"] == "walletAccountEntity" and o["operationType"] == "CREATE"
                   and o["objectValue"]["type"] == "BEHAVIOURAL_ACTION" for o in ops)
        credit = [o["objectValue"] for o in ops if o["objectType"] == "walletAccountTransactionEntity"
                  and o["objectValue"]["event"] == "CREDIT"]
        assert credit and credit[0]["account"]["type"] == "POINTS" and credit[0]["value"] > 0
        identities = doc["enrichmentData"][f"walletEntity_{tx['walletId']}"]["identities"]
        assert identities[0]["value"] == "cust-9"
        stats = sb.stats()["air"]
        assert stats["repeat_references"] == 1 and stats["duplicates"] == 1
