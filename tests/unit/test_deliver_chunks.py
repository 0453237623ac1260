"""A sink records each request's outcomes as that request ends, not when the slowest of its batch
does: a worker killed meanwhile then leaves only the unanswered in flight. Real HTTP to the
in-process sandbox."""

from __future__ import annotations

import asyncio

from app.config import load_settings
from app.delivery.core import Deliverer
from app.destinations.registry import DESTINATIONS
from app.sandbox import Sandbox
from tests.unit.test_unanswered import FAST, braze_deliveries


async def test_outcomes_come_as_each_request_ends_and_those_never_sent_first():
    async with Sandbox(seed=5) as sandbox:
        settings = load_settings({**sandbox.credentials(), **FAST})
        deliverer = Deliverer(DESTINATIONS["braze"], settings, trace_ids=True)
        by_action = braze_deliveries(settings)
        event, attributes = by_action["track_event"], by_action["track_attributes"]
        events = [{**event, "delivery_id": f"{event['delivery_id']}-{n}"} for n in range(76)]
        unknown = {**event, "delivery_id": "braze:nope:x", "action": "nope"}
        sandbox.set_faults("braze", latency_ms=400)
        loop = asyncio.get_running_loop()
        started, arrivals = loop.time(), []
        try:
            async for chunk in deliverer.deliver_chunks([*events, unknown, attributes]):
                arrivals.append((loop.time() - started, {o.delivery_id: o.status for o in chunk}))
        finally:
            await deliverer.close()
        calls = [c for c in sandbox.calls() if c["endpoint"] == "users/track"]
    first_at, first = arrivals[0]
    assert first == {"braze:nope:x": "failed"} and first_at < 0.3  # before any answer
    # 75 events per request at most; the attributes ride along with the 76th
    assert sorted(len(outcomes) for _, outcomes in arrivals[1:]) == [2, 75]
    assert sorted((len(c["body"].get("events", [])), len(c["body"].get("attributes", [])))
                  for c in calls) == [(1, 1), (75, 0)]
    answered = {k: v for _, outcomes in arrivals[1:] for k, v in outcomes.items()}
    assert set(answered.values()) == {"delivered"}
    assert set(answered) == {d["delivery_id"] for d in [*events, attributes]}
    assert all(at >= 0.4 for at, _ in arrivals[1:])
