"""A request the destination may have acted on without answering (a read time-out) is sent again
only for an idempotent action; one that counts an event goes to an operator instead
(`ambiguous_no_response`). A request that never left (no connection) is retried either way.
Real HTTP to the in-process sandbox."""

from __future__ import annotations

import asyncio

import orjson

from app.broker import free_port
from app.config import load_settings
from app.delivery.core import NO_ANSWER, Deliverer, HttpSender
from app.destinations.base import HttpRequest
from app.destinations.registry import DESTINATIONS
from app.normalize import normalize_bytes
from app.routing import load_rules, plan
from app.samples import realistic_air
from app.sandbox import Sandbox

FAST = {"RETRY_ATTEMPTS": "3", "RETRY_BASE_S": "0.01", "RETRY_MAX_S": "0.02",
        "BREAKER_THRESHOLD": "1000"}


def braze_deliveries(settings) -> dict[str, dict]:
    """The tier move's Braze deliveries by action: track_event (counts) and track_attributes."""
    raw = orjson.dumps(realistic_air("TIER.MEMBERSHIP.MOVE"))
    rules = load_rules(settings.routes_file)
    deliveries = [d for env in normalize_bytes("air", raw, {}, settings)
                  for d in plan(rules, env) if d["destination"] == "braze"]
    return {d["action"]: d for d in deliveries}


async def test_a_read_time_out_is_sent_again_only_for_an_idempotent_action():
    async with Sandbox(seed=3) as sandbox:
        settings = load_settings({**sandbox.credentials(), "REQUEST_TIMEOUT_S": "0.3", **FAST})
        deliverer = Deliverer(DESTINATIONS["braze"], settings, trace_ids=True)
        by_action = braze_deliveries(settings)
        event, attributes = by_action["track_event"], by_action["track_attributes"]
        sandbox.set_faults("braze", latency_ms=600)  # answers after the relay stopped waiting
        try:
            outcomes = await deliverer.deliver([event, attributes])
            await asyncio.sleep(0.8)  # the last calls are acted on after the relay gave up
        finally:
            await deliverer.close()
        accepted = sandbox.accepted_ids()
    by_id = {o.delivery_id: o for o in outcomes}
    unanswered = by_id[event["delivery_id"]]
    assert (unanswered.status, unanswered.reason, unanswered.detail) == ("failed", NO_ANSWER,
                                                                         "timeout")
    assert unanswered.attempts == 1
    assert accepted[event["delivery_id"]] == 1  # the destination did act on it: once
    retried = by_id[attributes["delivery_id"]]
    assert (retried.status, retried.reason) == ("retry", "timeout")
    assert accepted[attributes["delivery_id"]] == 3  # setting the same attributes again is safe


async def test_a_request_that_never_left_is_retried_even_when_it_counts_an_event():
    closed = f"http://127.0.0.1:{free_port()}"
    settings = load_settings({"BRAZE_BASE_URL": closed, "BRAZE_API_KEY": "k", **FAST})
    deliverer = Deliverer(DESTINATIONS["braze"], settings)
    event = braze_deliveries(settings)["track_event"]
    try:
        [outcome] = await deliverer.deliver([event])
    finally:
        await deliverer.close()
    assert (outcome.status, outcome.reason, outcome.attempts) == ("retry", "connecterror", 3)


async def test_only_a_delivering_call_left_unanswered_may_have_been_acted_on():
    async with Sandbox(seed=4) as sandbox:
        settings = load_settings({**sandbox.credentials(), "REQUEST_TIMEOUT_S": "0.3"})
        sender = HttpSender(DESTINATIONS["attentive"], settings.destination("attentive"), settings)
        sandbox.set_faults("attentive", latency_ms=600)
        event = {"type": "tier_moved", "user": {"email": "a@example.com"}}
        try:
            lookup = await sender.send(HttpRequest("GET", "/subscriptions",
                                                   params={"email": "a@example.com"}))
            delivery = await sender.send(HttpRequest("POST", "/events/custom", json=event))
            set_up = await sender.send(HttpRequest("POST", "/events/custom", json=event,
                                                   delivers=False))
        finally:
            await sender.close()
    assert [(r.status, r.error, r.unanswered) for r in (lookup, delivery, set_up)] == [
        (0, "timeout", False), (0, "timeout", True), (0, "timeout", False)]
