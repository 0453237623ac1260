"""More emulator behaviour: Attentive state, SessionM, MAAC topics, limits, control plane, serve()."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

import httpx
import pytest

from app.sandbox import Sandbox, serve

UID = "U" + "c" * 32
NOW = datetime.now(UTC).isoformat()  # a fixed date turns stale 12 hours later


@pytest.fixture
async def sandbox():
    async with Sandbox(seed=1) as sb:
        yield sb


@pytest.fixture
async def client():
    async with httpx.AsyncClient(timeout=5) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_attentive_subscription_state(sandbox, client):
    creds = sandbox.credentials()
    base, auth = creds["ATTENTIVE_BASE_URL"], bearer(creds["ATTENTIVE_API_KEY"])
    phone = "+886912000111"

    async def eligible() -> bool:
        r = await client.get(f"{base}/subscriptions", headers=auth, params={"phone": phone})
        return r.json()["subscriptionEligibilities"][0]["eligibility"]["isEligible"]

    assert await eligible() is False
    sub = {"user": {"phone": phone}, "signUpSourceId": creds["ATTENTIVE_SIGNUP_SOURCE_ID"]}
    r = await client.post(f"{base}/subscriptions", headers=auth, json=sub)
    assert r.status_code == 202
    assert r.json()["subscriptionResponses"][0]["subscriptionCreationStatus"] == "NEWLY_CREATED"
    assert await eligible() is True
    r = await client.post(f"{base}/subscriptions", headers=auth, json=sub)
    assert r.json()["subscriptionResponses"][0]["subscriptionCreationStatus"] == "PREVIOUSLY_CREATED"
    assert sandbox.stats()["attentive"]["repeat_subscribe_texts"] == 1
    r = await client.post(f"{base}/subscriptions/unsubscribe", headers=auth,
                          json={"user": {"phone": phone}})
    status = r.json()["subscriptionResponses"][0]["subscriptionUnsubscribeStatus"]
    assert r.status_code == 202 and status == "NEWLY_UNSUBSCRIBED"
    assert await eligible() is False
    bad = await client.post(f"{base}/subscriptions", headers=auth,
                            json={"user": {"phone": "0912000111"}, "signUpSourceId": "1"})
    assert bad.status_code == 400 and bad.json()["error"]["message"]


async def test_attentive_events_and_attributes(sandbox, client):
    creds = sandbox.credentials()
    base, auth = creds["ATTENTIVE_BASE_URL"], bearer(creds["ATTENTIVE_API_KEY"])
    user = {"phone": "+886912000222"}
    ok = await client.post(f"{base}/events/custom", headers=auth, json={
        "type": "Points Earned", "user": user, "properties": {"points": 10},
        "externalEventId": "e1", "occurredAt": NOW})
    assert ok.status_code == 200
    for bad_type in ("points,earned", "reward (gold)", 'say "hi"'):
        r = await client.post(f"{base}/events/custom", headers=auth,
                              json={"type": bad_type, "user": user})
        assert r.status_code == 400
    old = await client.post(f"{base}/events/custom", headers=auth, json={
        "type": "late", "user": user, "occurredAt": "2020-01-01T00:00:00Z"})
    assert old.status_code == 200 and sandbox.stats()["attentive"]["stale_events"] == 1
    r = await client.post(f"{base}/attributes/custom", headers=auth,
                          json={"user": user, "properties": {"tier": "gold"}})
    assert r.status_code == 200
    r = await client.post(f"{base}/attributes/custom", headers=auth,
                          json={"user": user, "properties": {"nested": {"a": 1}}})
    assert r.status_code == 400


async def test_sessionm_tags_and_offers(sandbox, client):
    creds = sandbox.credentials()
    key, secret = creds["SESSIONM_API_KEY"], creds["SESSIONM_API_SECRET"]
    basic = {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}
    url = f"{creds['SESSIONM_CORE_URL']}/priv/v1/apps/{key}/users/user-1/tags"
    r = await client.post(url, headers=basic, json={"tags": ["vip"], "ttl": 3600})
    assert r.status_code == 200
    await client.post(url, headers=basic, json={"tags": ["visits"]})
    await client.post(url, headers=basic, json={"tags": ["visits"]})
    assert sandbox.emulator("sessionm").user_tags("user-1") == {"vip": 1, "visits": 2}
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{key}:nope".encode()).decode()}
    assert (await client.post(url, headers=wrong, json={"tags": ["x"]})).status_code == 401
    other_key = url.replace(f"/apps/{key}/", "/apps/other/")
    assert (await client.post(other_key, headers=basic, json={"tags": ["x"]})).status_code == 401
    assert (await client.post(url, headers=basic, json={"tags": []})).status_code == 400

    offers_url = f"{creds['SESSIONM_CONNECT_URL']}/offers/api/2.0/offers/get_user_offers"
    offers_auth = {"Authorization": f"Basic {creds['SESSIONM_OFFERS_AUTH']}"}
    body = {"retailer_id": creds["SESSIONM_RETAILER_ID"], "user_id": "user-1", "skip": 0,
            "take": 1000, "include_pending_extended_data": False, "culture": "en-US"}
    first = await client.post(offers_url, headers=offers_auth, json=body)
    second = await client.post(offers_url, headers=offers_auth, json=body)
    assert first.status_code == 200 and first.json() == second.json()
    payload = first.json()["payload"]
    assert first.json()["status"] == "ok" and payload["user_id"] == "user-1"
    assert 0 <= payload["available_points"] <= payload["total_points"]
    assert payload["total_records"] == len(payload["user_offers"])
    assert (await client.post(offers_url, headers=basic, json=body)).status_code == 401


async def test_maac_topics_and_templates(sandbox, client):
    creds = sandbox.credentials()
    base, auth = f"{creds['MAAC_BASE_URL']}/openapi/v1", bearer(creds["MAAC_TOKEN"])
    r = await client.post(f"{base}/event/", headers=auth, json={"name": "cart abandoned"})
    assert r.status_code == 201
    topic = r.json()
    listed = (await client.get(f"{base}/event/", headers=auth)).json()
    assert [t["id"] for t in listed["results"]] == [topic["id"]]
    assert (await client.post(f"{base}/event/", headers=auth, json={})).status_code == 400
    report = await client.get(f"{base}/event/{topic['id']}/report/", headers=auth,
                              params={"start_date": "2026-01-01", "end_date": "2099-01-01"})
    assert report.status_code == 200 and report.json()["opens"] == 0
    assert (await client.get(f"{base}/event/999/report/", headers=auth)).status_code == 404
    templates = (await client.get(f"{base}/template/", headers=auth)).json()
    assert templates["results"] and all(isinstance(t["id"], int) for t in templates["results"])


async def test_maac_topic_limit():
    async with Sandbox() as sb, httpx.AsyncClient() as client:
        maac = sb.emulator("maac")
        for i in range(1, 1000):
            maac._topic(i)
        creds = sb.credentials()
        url = f"{creds['MAAC_BASE_URL']}/openapi/v1/event/"
        auth = bearer(creds["MAAC_TOKEN"])
        assert (await client.post(url, headers=auth, json={"name": "last"})).status_code == 201
        assert (await client.post(url, headers=auth, json={"name": "over"})).status_code == 400


async def test_braze_broadcast_limit_and_insider_size():
    async with Sandbox(rate_scale=0.004) as sb, httpx.AsyncClient() as client:
        creds = sb.credentials()
        url = f"{creds['BRAZE_BASE_URL']}/campaigns/trigger/send"
        auth = bearer(creds["BRAZE_API_KEY"])
        codes = [(await client.post(url, headers=auth, json={"campaign_id": "c",
                                                              "broadcast": True})).status_code
                 for _ in range(2)]
        assert codes == [201, 429]  # 250/min scaled to 1
        headers = {"X-PARTNER-NAME": creds["INSIDER_PARTNER"],
                   "X-REQUEST-TOKEN": creds["INSIDER_TOKEN"]}
        big = {"users": [{"identifiers": {"uuid": "u"},
                          "attributes": {"custom": {"blob": "x" * (5 * 1024 * 1024)}}}]}
        r = await client.post(f"{creds['INSIDER_BASE_URL']}/api/user/v1/upsert",
                              headers=headers, json=big)
        assert r.status_code == 400 and "5 MB" in r.json()["error"]


async def test_insider_rate_limit_body():
    async with Sandbox(rate_scale=0.00012) as sb, httpx.AsyncClient() as client:
        creds = sb.credentials()
        headers = {"X-PARTNER-NAME": creds["INSIDER_PARTNER"],
                   "X-REQUEST-TOKEN": creds["INSIDER_TOKEN"]}
        body = {"users": [{"identifiers": {"uuid": "u"}, "attributes": {"name": "n"}}]}
        url = f"{creds['INSIDER_BASE_URL']}/api/user/v1/upsert"
        codes = []
        for _ in range(4):
            r = await client.post(url, headers=headers, json=body)
            codes.append(r.status_code)
        assert codes == [200, 200, 200, 429]
        assert r.json() == {"error": "rejected: too many requests"}


async def test_control_plane_helpers(sandbox, client):
    creds = (await client.get(f"{sandbox.url}/_sandbox/credentials")).json()
    assert creds == sandbox.credentials()
    health = (await client.get(f"{sandbox.url}/_sandbox/health")).json()
    assert set(health["destinations"]) == {"maac", "line", "braze", "attentive", "sessionm",
                                           "insider", "air"}
    await client.post(f"{creds['LINE_BASE_URL']}/v2/bot/message/push",
                      headers=bearer(creds["LINE_CHANNEL_TOKEN"]),
                      json={"to": UID, "messages": [{"type": "text", "text": "hi"}],
                            "_relay_ids": ["line:push:1"]})
    ids = (await client.get(f"{sandbox.url}/_sandbox/ids")).json()
    assert ids == {"line:push:1": 1} == sandbox.accepted_ids()
    r = await client.post(f"{sandbox.url}/_sandbox/faults", json={"destination": "nope"})
    assert r.status_code == 400
    with pytest.raises(ValueError):
        sandbox.set_faults("braze", error_rate=1.5)


async def test_serve_runs_until_cancelled(client):
    started: list[Sandbox] = []
    task = asyncio.create_task(serve("127.0.0.1", 0, on_start=started.append))
    for _ in range(100):
        if started:
            break
        await asyncio.sleep(0.01)
    assert started, "serve() never started"
    r = await client.get(f"{started[0].url}/_sandbox/health")
    assert r.status_code == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(httpx.ConnectError):
        await client.get(f"{started[0].url}/_sandbox/health")


async def test_webhook_gives_up_after_retries():
    async with Sandbox(webhook_url="http://127.0.0.1:9/closed", open_share=1.0,
                       webhook_delay_s=0, webhook_retry_delays=(0.01, 0.01)) as sb, \
            httpx.AsyncClient() as client:
        creds = sb.credentials()
        await client.post(f"{creds['MAAC_BASE_URL']}/openapi/v1/direct_message/push/",
                          headers=bearer(creds["MAAC_TOKEN"]),
                          json={"template_id": 1, "event_id": 2, "data": {"line_uid": UID}})
        await sb.drain(timeout=3)
        hooks = sb.stats()["maac"]["webhooks"]
        assert hooks == {"scheduled": 1, "delivered": 0, "failed": 1, "attempts": 3}
