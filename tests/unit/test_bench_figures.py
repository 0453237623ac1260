"""The bench's latency breakdown: publish -> normalized -> routed -> delivered, per stage."""

from __future__ import annotations

from types import SimpleNamespace

from app.accounting import Tracker
from app.bench import percentile, stage_latencies_ms


def follower_with(records: list[tuple[int, dict]]) -> SimpleNamespace:
    tracker, ingress_ts, route_ts, final_ts = Tracker(), {}, {}, {}
    for ts, record in records:
        tracker.add(record)
        if record["stage"] == "ingress":
            ingress_ts.setdefault(record["origin"], ts)
        elif record["stage"] == "route":
            route_ts.setdefault(record["event_id"], ts)
        else:
            final_ts.setdefault(record["delivery_id"], ts)
    return SimpleNamespace(tracker=tracker, ingress_ts=ingress_ts, route_ts=route_ts,
                           final_ts=final_ts)


def test_each_stage_is_timed_from_the_end_of_the_one_before():
    follower = follower_with([
        (1_030, {"stage": "ingress", "status": "normalized", "origin": "o1", "event_ids": ["e1"]}),
        (1_100, {"stage": "route", "status": "routed", "event_id": "e1",
                 "deliveries": [["maac", "push", "d1"], ["braze", "track", "d2"]]}),
        (1_250, {"stage": "deliver", "status": "delivered", "delivery_id": "d1"}),
        (1_400, {"stage": "deliver", "status": "dead_lettered", "delivery_id": "d2"}),
        (2_000, {"stage": "ingress", "status": "dead_lettered", "origin": "o2", "reason": "x"}),
    ])
    stages = stage_latencies_ms(follower, {"o1": 1.0, "o2": 1.9, "o3": 2.0})
    assert stages == {"ingress": [30.0], "identity+route": [70], "sink": [150],
                      "end_to_end": [250.0]}


def test_percentile_of_nothing_is_not_a_number_that_looks_real():
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([], 99) != percentile([], 99)  # NaN
