"""The AIR loop end to end, with real processes and real HTTP: a customer enters an audience ->
the relay calls the sandbox's AIR `POST /services/trigger` (signed; the emulator refuses a bad
signature with 401 and records only accepted calls) -> the emulator emits the outbound
`SERVICE.TRIGGER` document, which the sandbox fixture publishes to `air.outbound` -> the relay
normalizes it (`loyalty.action.fired`) -> Braze and Insider receive the reward event.
An identity AIR does not know (the emulator answers 404 for values starting with "unknown") is
dead-lettered once, never retried."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from app.config import Settings
from app.localstack import produce, read_topic
from app.normalize import normalize_bytes
from app.sandbox.air import POINTS_PER_TRIGGER
from tests.integration.conftest import wait_until

AUDIENCE = "aud-app-downloaded"  # topics/routes.yaml: audience-app-downloaded-air
REFERENCE = "BA_APP_DOWNLOAD"
ROUTE = "audience-app-downloaded-air"


def membership(customer: str) -> tuple[bytes, str]:
    """An audience.membership record and the event id the relay gives it."""
    record = orjson.dumps({
        "membership_id": f"am-{uuid.uuid4().hex[:12]}", "platform": "braze",
        "audience": {"id": AUDIENCE, "name": "Downloaded the app"}, "action": "entered",
        "customer": {"customer_id": customer},
        "occurred_at": datetime.now(UTC).isoformat(),
    })
    (envelope,) = normalize_bytes("audience", record, {}, Settings())
    return record, envelope["event_id"]


@pytest.fixture(scope="module")
def worker(start_worker):
    return start_worker()


def air_stats(sandbox) -> dict:
    return httpx.get(f"{sandbox.url}/_sandbox/stats", timeout=10).json()["air"]


def test_audience_entry_rewards_through_air_and_reports_to_braze_and_insider(
        broker, sandbox, worker):
    customer = f"C-{uuid.uuid4().hex[:10]}"
    record, event_id = membership(customer)
    asyncio.run(produce(broker.bootstrap, [("audience.membership", customer.encode(), record)]))

    def air_calls():
        return [c for c in sandbox.calls("air")
                if (c.get("body") or {}).get("identityValue") == customer] or None

    (call,) = wait_until(air_calls, 40, what="AIR trigger accepted by the sandbox")
    assert call["status"] == 200  # only a valid X-EES-AUTH signature gets past the emulator
    assert call["body"]["triggers"] == [{"reference": REFERENCE}]
    assert call["body"]["walletTransaction"] == {"reference": event_id}
    assert "401" not in air_stats(sandbox)["requests"]

    def braze_reward():
        events = [e for c in sandbox.calls("braze") for e in (c.get("body") or {}).get("events", [])
                  if e.get("external_id") == customer and e.get("name") == "loyalty_reward_issued"]
        return events or None

    (event,) = wait_until(braze_reward, 40, what="Braze reward event")
    props = event["properties"]
    assert props["action_reference"] == REFERENCE
    assert props["reward"] == "points" and props["points"] == POINTS_PER_TRIGGER
    assert props["reference"] == event_id  # the outbound event names our trigger
    assert air_stats(sandbox)["outbound_sent"] >= 1

    def insider_reward():
        users = [u for c in sandbox.calls("insider") for u in (c.get("body") or {}).get("users", [])
                 if (u.get("identifiers") or {}).get("custom", {}).get("customer_id") == customer]
        events = [e for u in users for e in u.get("events", [])
                  if e.get("event_name") == "loyalty_reward_issued"]
        return events or None

    (insider_event,) = wait_until(insider_reward, 40, what="Insider reward event")
    assert insider_event["event_params"]["custom"]["action_reference"] == REFERENCE
    assert len(air_calls()) == 1  # the reward itself triggers nothing in AIR


def test_unknown_identity_is_dead_lettered_without_retry(broker, sandbox, worker):
    customer = f"unknown-{uuid.uuid4().hex[:10]}"
    record, event_id = membership(customer)
    before = air_stats(sandbox)["requests"].get("404", 0)
    asyncio.run(produce(broker.bootstrap, [("audience.membership", customer.encode(), record)]))
    delivery_id = f"air:trigger:{event_id}:{ROUTE}"

    async def dead_letter():
        async for _topic, value in read_topic(broker.bootstrap, ["deliveries.dlq"],
                                             idle_timeout_s=40):
            if value and (value.get("delivery") or {}).get("delivery_id") == delivery_id:
                return value
        return None

    dead = asyncio.run(dead_letter())
    assert dead is not None, "no dead letter for the unknown identity"
    assert dead["reason"] == "identity_not_found"
    assert dead["attempts"] == 1
    time.sleep(2.0)  # a retry would show up as a second 404
    assert air_stats(sandbox)["requests"].get("404", 0) - before == 1
