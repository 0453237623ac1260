"""Journey -> MAAC push -> signed first_open webhook -> feedback.insider -> Insider upsert, through
the sandbox over real HTTP, a real worker process and the embedded broker.

Also: unreachable customers (no LINE uid, a blocked uid) reach Insider as line_reachable=false
without a successful push; forged webhook signatures are refused and publish nothing; a repeated
idempotency key publishes once; a large group is sent as a multicast whose per-user failures
become unreachable; the topic-report poller publishes campaign-level counts to maac.results."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
import uuid

import httpx
import orjson
import pytest

from app.envelope import event_id_for
from app.localstack import produce, read_topic
from app.sandbox.core import fraction
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

SECRET = "sandbox-webhook-secret"
RNG = random.Random()


def uid_for(event_id: int, opens: bool, prefix: str = "U") -> str:
    """A 33-character LINE uid that the sandbox will (or will not) open for `event_id`."""
    while True:
        uid = (prefix + uuid.uuid4().hex + uuid.uuid4().hex)[:33]
        if (fraction(uid, event_id) < 0.5) == opens:
            return uid


def trigger(customer: str, event_id: int, uid: str | None = None, template: int = 2048,
            image: str = "https://cdn.example.com/p/1.jpg") -> dict:
    customer_block = {"customer_id": customer, "email": f"{customer.lower()}@example.com"}
    if uid:
        customer_block["line_uid"] = uid
    return {"trigger_id": str(uuid.uuid4()),
            "journey": {"id": "j-cart", "name": "Cart Abandoned"},
            "step": {"id": "s1", "name": "reminder 1h"},
            "customer": customer_block,
            "maac": {"template_id": template, "event_id": event_id},
            "variables": {"product_name": "Rain jacket", "product_image": image,
                          "price": "1,290", "url": "https://shop.example.com/cart"},
            "occurred_at": "2026-11-22T10:00:00Z"}


def send_triggers(broker, records: list[dict]) -> None:
    asyncio.run(produce(broker.bootstrap, [
        ("journey.triggers", r["customer"]["customer_id"].encode(), orjson.dumps(r))
        for r in records]))


def insider_users(sandbox, customer: str) -> list[dict]:
    return [u for call in sandbox.calls("insider") for u in (call.get("body") or {}).get("users", [])
            if ((u.get("identifiers") or {}).get("custom") or {}).get("customer_id") == customer]


def insider_events(sandbox, customer: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for user in insider_users(sandbox, customer):
        for event in user.get("events", []):
            out.setdefault(event["event_name"], []).append(event)
    return out


def custom_attrs(sandbox, customer: str) -> list[dict]:
    return [((u.get("attributes") or {}).get("custom") or {}) for u in insider_users(sandbox, customer)]


def maac_calls_for(sandbox, uid: str) -> list[dict]:
    out = []
    for call in sandbox.calls("maac"):
        data = (call.get("body") or {}).get("data")
        recipients = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
        if any(isinstance(r, dict) and r.get("line_uid") == uid for r in recipients):
            out.append(call)
    return out


def delivery_id(trigger_record: dict) -> str:
    return f"maac:push:{event_id_for('journey', trigger_record['trigger_id'])}:journey-line-push"


def topic_records(broker, topic: str, match, quiet_s: float = 3.0) -> list[dict]:
    async def collect():
        found = []
        async for _topic, value in read_topic(broker.bootstrap, [topic], idle_timeout_s=quiet_s):
            if value is not None and match(value):
                found.append(value)
        return found
    return asyncio.run(collect())


def post_webhook(worker, body: bytes, key: str, signature: str) -> httpx.Response:
    return httpx.post(f"{worker.url}/webhooks/maac", content=body, timeout=10, headers={
        "Content-Type": "application/json", "CrescLab-Idempotency-Key": key,
        "CrescLab-Signature": signature})


@pytest.fixture(scope="module")
def worker(start_worker):
    # A batch window long enough that a burst of triggers reaches the MAAC sink as one batch,
    # and a fast topic-report poller.
    return start_worker(SINK_BATCH_WINDOW_S="1.0", MAAC_REPORT_POLL_S="2")


def test_cart_abandonment_push_open_reaches_insider(broker, sandbox, worker):
    event_id = RNG.randint(10_000, 19_999)
    customer = f"C-{uuid.uuid4().hex[:8]}"
    uid = uid_for(event_id, opens=True)
    record = trigger(customer, event_id, uid)
    send_triggers(broker, [record])

    [push] = wait_until(lambda: maac_calls_for(sandbox, uid), 60, what="MAAC push")
    assert push["path"].endswith("/direct_message/push/")
    assert push["body"]["template_id"] == 2048 and push["body"]["event_id"] == event_id
    assert push["body"]["data"]["product_image"].endswith(".jpg")

    events = wait_until(lambda: (e := insider_events(sandbox, customer)).get(
        "line_message_opened") and e.get("line_message_sent") and e, 60,
        what="Insider line_message_opened and line_message_sent")
    [opened] = events["line_message_opened"]
    params = opened["event_params"]
    custom = params.get("custom") or {}
    assert custom.get("journey") == "Cart Abandoned" and custom.get("template_id") == 2048
    assert custom.get("maac_event_id") == event_id
    attrs = custom_attrs(sandbox, customer)
    assert any(a.get("line_reachable") is True and a.get("line_last_opened_at") for a in attrs)
    # The feedback upsert names the customer by the identifiers of the push, not the LINE uid.
    assert all(uid not in orjson.dumps(u).decode() for u in insider_users(sandbox, customer))

    # The topic-report poller publishes campaign-level counts for the event id it sent with.
    reports = wait_until(lambda: topic_records(
        broker, "maac.results",
        lambda v: v.get("topic") == "report.clicks" and v["data"].get("event_id") == event_id
        and v["data"].get("opens", 0) >= 1, quiet_s=1.5), 30, interval_s=1,
        what="report.clicks on maac.results")
    assert reports[-1]["data"]["opens"] >= 1


def test_unreachable_customers_get_line_reachable_false(broker, sandbox, worker):
    event_id = RNG.randint(20_000, 29_999)
    no_uid, blocked = f"C-{uuid.uuid4().hex[:8]}", f"C-{uuid.uuid4().hex[:8]}"
    blocked_uid = uid_for(event_id, opens=False, prefix="Ublocked")
    records = [trigger(no_uid, event_id), trigger(blocked, event_id, blocked_uid)]
    send_triggers(broker, records)

    for customer in (no_uid, blocked):
        events = wait_until(lambda c=customer: insider_events(sandbox, c).get(
            "line_message_unreachable"), 60, what=f"unreachable feedback for {customer}")
        assert len(events) == 1
        assert any(a.get("line_reachable") is False for a in custom_attrs(sandbox, customer))
        assert "line_message_sent" not in insider_events(sandbox, customer)
    reasons = {c: insider_events(sandbox, c)["line_message_unreachable"][0]["event_params"]
               ["custom"]["reason"] for c in (no_uid, blocked)}
    assert reasons[no_uid] == "no LINE uid"
    assert "blocked" in reasons[blocked] and blocked_uid not in reasons[blocked]

    # No successful push: the uid-less customer was never sent; the blocked one was tried once
    # (LINE's error in the 200 result is final: no retry) and not accepted.
    accepted = sandbox.ids()
    assert accepted.get(delivery_id(records[0]), 0) == 0
    assert accepted.get(delivery_id(records[1]), 0) == 0
    assert not any(delivery_id(records[0]) in (c.get("relay_ids") or [])
                   for c in sandbox.calls("maac"))
    time.sleep(1.0)
    assert len(maac_calls_for(sandbox, blocked_uid)) == 1


def test_bad_image_variable_fails_only_that_customer(broker, sandbox, worker):
    event_id = RNG.randint(30_000, 39_999)
    bad, good = f"C-{uuid.uuid4().hex[:8]}", f"C-{uuid.uuid4().hex[:8]}"
    bad_uid, good_uid = uid_for(event_id, False), uid_for(event_id, False)
    send_triggers(broker, [trigger(bad, event_id, bad_uid, image="https://cdn.example.com/a.gif"),
                           trigger(good, event_id, good_uid)])
    wait_until(lambda: insider_events(sandbox, good).get("line_message_sent"), 60,
               what="sent feedback for the good customer")
    dead = wait_until(lambda: topic_records(
        broker, "deliveries.dlq",
        lambda v: (v.get("delivery") or {}).get("customer_key") == f"customer_id:{bad}",
        quiet_s=1.0), 30, what="dead letter for the bad variable")
    assert dead[0]["reason"].startswith("invalid: variable 'product_image'")
    assert maac_calls_for(sandbox, bad_uid) == []
    assert insider_events(sandbox, bad) == {}  # a relay-side failure is not LINE feedback


def test_forged_signature_is_refused_and_publishes_nothing(broker, sandbox, worker):
    uid = uid_for(1, True)
    body = orjson.dumps({"timestamp": int(time.time() * 1000), "topic": "message.first_open",
                         "data": {"message_type": "openapi", "message_id": 1, "line_uid": uid}})
    forged = hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    assert post_webhook(worker, body, str(uuid.uuid4()), forged).status_code == 401
    assert post_webhook(worker, body, str(uuid.uuid4()), "").status_code == 401
    assert topic_records(broker, "maac.results",
                         lambda v: (v.get("data") or {}).get("line_uid") == uid) == []


def test_repeated_idempotency_key_publishes_one_result(broker, sandbox, worker):
    uid = uid_for(2, True)
    body = orjson.dumps({"timestamp": int(time.time() * 1000), "topic": "message.first_open",
                         "data": {"message_type": "openapi", "message_id": 2, "line_uid": uid,
                                  "customer_id": "C-dup"}})
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    key = str(uuid.uuid4())
    first = post_webhook(worker, body, key, signature)
    again = post_webhook(worker, body, key, signature)
    assert first.status_code == 200 and again.status_code == 200
    assert again.json() == {"status": "duplicate"}
    published = wait_until(lambda: topic_records(
        broker, "maac.results", lambda v: (v.get("data") or {}).get("line_uid") == uid,
        quiet_s=1.5), 20, what="the webhook on maac.results")
    assert len(published) == 1
    feedback = wait_until(lambda: topic_records(
        broker, "feedback.insider",
        lambda v: v.get("type") == "line.opened" and v["identities"].get("line_uid") == uid,
        quiet_s=1.5), 20, what="line.opened on feedback.insider")
    assert len(feedback) == 1 and feedback[0]["customer_key"] == "customer_id:C-dup"


def test_many_customers_one_template_go_as_multicast_with_per_user_failures(
        broker, sandbox, worker):
    event_id = RNG.randint(40_000, 49_999)
    customers = [f"C-{uuid.uuid4().hex[:8]}" for _ in range(30)]
    uids = {c: uid_for(event_id, False, "Ublocked" if i < 4 else "U")
            for i, c in enumerate(customers)}
    blocked = set(customers[:4])
    records = [trigger(c, event_id, uids[c], template=4096) for c in customers]
    send_triggers(broker, records)

    def all_fed_back():
        done = {c: insider_events(sandbox, c) for c in customers}
        return done if all(e.get("line_message_sent") or e.get("line_message_unreachable")
                           for e in done.values()) else None

    feedback = wait_until(all_fed_back, 75, what="feedback for every multicast recipient")
    for customer, events in feedback.items():
        expected = "line_message_unreachable" if customer in blocked else "line_message_sent"
        assert list(events) == [expected], (customer, events)
    calls = [c for c in sandbox.calls("maac") if (c.get("body") or {}).get("template_id") == 4096]
    multicasts = [c for c in calls if c["path"].endswith("/multicast/")]
    assert multicasts, "a burst of 30 same-template triggers should use multicast"
    assert any(len(c["body"]["data"]) >= 10 for c in multicasts)
    sent_to = [r["line_uid"] for c in calls for r in (
        c["body"]["data"] if isinstance(c["body"]["data"], list) else [c["body"]["data"]])]
    assert sorted(sent_to) == sorted(uids.values())  # every customer exactly once
    accepted = sandbox.ids()
    for record in records:
        expected = 0 if record["customer"]["customer_id"] in blocked else 1
        assert accepted.get(delivery_id(record), 0) == expected


def profile_identifiers(worker, customer: str) -> dict:
    reply = httpx.get(f"{worker.url}/profiles/customer_id/{customer}", timeout=5)
    return reply.json().get("identifiers", {}) if reply.status_code == 200 else {}


def test_line_bound_reaches_the_identity_graph_and_insider(broker, sandbox, worker):
    event_id = RNG.randint(50_000, 59_999)
    customer = f"C-{uuid.uuid4().hex[:8]}"
    uid = uid_for(event_id, opens=False)
    bound = {"timestamp": "2026-11-22T09:00:00Z", "topic": "line.bound",
             "data": {"line_uid": uid, "customer_id": customer}}
    asyncio.run(produce(broker.bootstrap, [("maac.results", customer.encode(),
                                            orjson.dumps(bound))]))
    wait_until(lambda: any(a.get("line_reachable") is True and a.get("line_bound") is True
                           for a in custom_attrs(sandbox, customer)), 60,
               what="Insider line_bound attribute")
    # the feedback path and the identity graph are separate streams: wait for the graph too
    wait_until(lambda: "line_uid" in profile_identifiers(worker, customer), 60,
               what="the binding in the customer's profile")
    send_triggers(broker, [trigger(customer, event_id)])  # the trigger carries no LINE uid
    [push] = wait_until(lambda: maac_calls_for(sandbox, uid), 60,
                        what="a push to the bound LINE uid")
    assert push["body"]["event_id"] == event_id
    wait_until(lambda: insider_events(sandbox, customer).get("line_message_sent"), 60,
               what="sent feedback for the bound customer")


def test_journey_naming_a_message_topic_gets_its_event_id(broker, sandbox, worker):
    name = f"cart_abandoned_{uuid.uuid4().hex[:6]}"
    customers = [f"C-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    uids = [uid_for(0, False) for _ in customers]
    records = []
    for template, customer, uid in zip((2048, 2049), customers, uids):
        record = trigger(customer, 0, uid)
        # two templates: two groups, sent concurrently, both naming the same new topic
        record["maac"] = {"template_id": template, "event_name": name}
        records.append(record)
    send_triggers(broker, records)
    [first] = wait_until(lambda: maac_calls_for(sandbox, uids[0]), 60, what="first push")
    [second] = wait_until(lambda: maac_calls_for(sandbox, uids[1]), 60, what="second push")
    topics = httpx.get(f"{sandbox.url}/maac/openapi/v1/event/", timeout=10, headers={
        "Authorization": f"Bearer {sandbox.credentials()['MAAC_TOKEN']}"}).json()["results"]
    [topic] = [t for t in topics if t["name"] == name]
    assert first["body"]["event_id"] == second["body"]["event_id"] == topic["id"]
    creates = [c for c in sandbox.calls("maac")
               if c["method"] == "POST" and c["path"].endswith("/event/")
               and (c.get("body") or {}).get("name") == name]
    assert len(creates) == 1  # looked up or created once, then cached
