"""The bench's latency breakdown: publish -> normalized -> routed -> delivered, per stage."""

from __future__ import annotations

from app.bench import Follower, epoch_ms, percentile, stage_latencies_ms


def at(ms: int) -> str:
    return f"2026-11-23T10:00:{ms // 1000:02d}.{ms % 1000:03d}Z"


BASE = epoch_ms(at(0), 0)


def test_each_stage_is_timed_from_the_end_of_the_one_before():
    follower = Follower("unused")
    # Outcomes arrive in batches, written later than they happened: each is dated by its `at`.
    follower._add(BASE + 5_000, {"batch": [
        {"stage": "ingress", "status": "normalized", "origin": "o1", "event_ids": ["e1"],
         "at": at(1_030)},
        {"stage": "route", "status": "routed", "event_id": "e1", "at": at(1_100),
         "deliveries": [["maac", "push", "d1"], ["braze", "track", "d2"]]}]})
    follower._add(BASE + 6_000, {"batch": [
        {"stage": "deliver", "status": "delivered", "delivery_id": "d1", "at": at(1_250)},
        {"stage": "deliver", "status": "dead_lettered", "delivery_id": "d2", "at": at(1_400)}]})
    # a single outcome without a readable time (an older worker's) is dated by the broker
    follower._add(BASE + 2_000, {"stage": "ingress", "status": "dead_lettered", "origin": "o2",
                                 "reason": "x", "at": "yesterday"})
    published = {"o1": (BASE + 1_000) / 1000, "o2": (BASE + 1_900) / 1000, "o3": BASE / 1000 + 2}
    stages = stage_latencies_ms(follower, published)
    assert stages == {"ingress": [30.0], "identity+route": [70], "sink": [150],
                      "sink.maac": [150], "end_to_end": [250.0]}  # d2 was not delivered
    assert follower.completed_at("o1") == BASE + 1_400
    assert follower.completed_at("o2") == BASE + 2_000
    assert follower.records == 3


def test_percentile_of_nothing_is_not_a_number_that_looks_real():
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([], 99) != percentile([], 99)  # NaN
